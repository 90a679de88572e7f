"""Triton kernels of TNT's inner transformer, forward and backward, and of the official
layout's sentence update (the launchers, contracts and autograd ops are in
:mod:`tnt_mm.ops.triton_kernels`).

One program takes ``P`` patches, ``R = 16 P`` word rows, and runs the whole inner transformer
on them with every activation in registers: LN1 -> per head q, k, v -> attention of each patch's
16 words (a batched (P, 16, 16) product) -> projection + residual -> LN2 -> fc1 + GELU -> fc2 +
residual, the MLP in chunks of ``BH`` hidden units. The backward kernel recomputes all of that
from the input words and writes the weight gradients of the tiles it processed into its own
slot (no atomics, so the result does not depend on scheduling); the launcher sums the slots.

Padding, for the GPU compiler: block sizes are powers of two and ``tl.dot`` wants every
dimension >= 16, so the word width C is padded to ``CP`` (12 -> 16, 24 -> 32, 40 -> 64), the head
width to ``D = 16`` (6 and 10 both) and the hidden width to whole ``BH`` chunks. Padded rows and
columns load as zeros, which every step keeps at zero (LN writes 0 there, the padded weights
are 0), so they add nothing to any output or gradient.

Precision: LayerNorms, softmax, GELU, residual sums and all accumulation are float32; the
matrix products take ``DT`` inputs (float32, or the autocast/half dtype), as autocast's
reference does.
"""
import triton
import triton.language as tl

SQRT1_2 = tl.constexpr(0.7071067811865476)  # 1 / sqrt(2)
INV_SQRT_2PI = tl.constexpr(0.3989422804014327)  # 1 / sqrt(2 pi)


@triton.jit
def _load_2d(ptr, rows, cols, row_mask, col_mask, stride):
    mask = row_mask[:, None] & col_mask[None, :]
    return tl.load(ptr + rows[:, None] * stride + cols[None, :], mask=mask,
                   other=0.).to(tl.float32)


@triton.jit
def _accumulate_2d(ptr, rows, cols, row_mask, col_mask, stride, value, first):
    # the slot belongs to this program alone: a plain read-modify-write is race-free; the
    # program's first tile writes it (the slots are not zero-filled)
    mask = row_mask[:, None] & col_mask[None, :]
    ptrs = ptr + rows[:, None] * stride + cols[None, :]
    if not first:
        value += tl.load(ptrs, mask=mask, other=0.)
    tl.store(ptrs, value, mask=mask)


@triton.jit
def _accumulate_1d(ptr, cols, col_mask, value, first):
    if not first:
        value += tl.load(ptr + cols, mask=col_mask, other=0.)
    tl.store(ptr + cols, value, mask=col_mask)


@triton.jit
def _layer_norm(x, col_mask, C: tl.constexpr, eps):
    """(x - mean) / std over the C real columns; 0 in the padded ones."""
    mean = tl.sum(x, axis=1) / C
    centred = tl.where(col_mask[None, :], x - mean[:, None], 0.)
    rstd = 1. / tl.sqrt(tl.sum(centred * centred, axis=1) / C + eps)
    return centred * rstd[:, None], rstd


@triton.jit
def _layer_norm_backward(grad_xhat, xhat, rstd, col_mask, C: tl.constexpr):
    mean_grad = tl.sum(grad_xhat, axis=1) / C
    mean_grad_xhat = tl.sum(grad_xhat * xhat, axis=1) / C
    grad = rstd[:, None] * (grad_xhat - mean_grad[:, None] - xhat * mean_grad_xhat[:, None])
    return tl.where(col_mask[None, :], grad, 0.)


@triton.jit
def _patch_layer_norm(x, col_mask, C: tl.constexpr, CP: tl.constexpr, P: tl.constexpr, eps):
    """LayerNorm over all 16 x C values of each patch (the words -> sentence norm of the
    official layout): x (P*16, CP) -> (x - mean) / std (0 in the padded columns), and the
    std's inverse per patch (P,)."""
    x3 = tl.reshape(x, (P, 16, CP))
    mean = tl.sum(tl.sum(x3, axis=2), axis=1) / (16 * C)
    centred = tl.where(col_mask[None, None, :], x3 - mean[:, None, None], 0.)
    var = tl.sum(tl.sum(centred * centred, axis=2), axis=1) / (16 * C)
    rstd = 1. / tl.sqrt(var + eps)
    return tl.reshape(centred * rstd[:, None, None], (P * 16, CP)), rstd


@triton.jit
def _patch_layer_norm_backward(grad_xhat, xhat, rstd, col_mask, C: tl.constexpr,
                               CP: tl.constexpr, P: tl.constexpr):
    g3 = tl.reshape(grad_xhat, (P, 16, CP))
    x3 = tl.reshape(xhat, (P, 16, CP))
    mean_grad = tl.sum(tl.sum(g3, axis=2), axis=1) / (16 * C)
    mean_grad_xhat = tl.sum(tl.sum(g3 * x3, axis=2), axis=1) / (16 * C)
    grad = rstd[:, None, None] * (g3 - mean_grad[:, None, None]
                                  - x3 * mean_grad_xhat[:, None, None])
    return tl.reshape(tl.where(col_mask[None, None, :], grad, 0.), (P * 16, CP))


@triton.jit
def _gelu(z):
    return 0.5 * z * (1. + tl.erf(z * SQRT1_2))


@triton.jit
def _gelu_grad(z):
    return 0.5 * (1. + tl.erf(z * SQRT1_2)) + z * tl.exp(-0.5 * z * z) * INV_SQRT_2PI


@triton.jit
def _head(xn, qk_w, v_w, h, cols, col_mask, scale, C: tl.constexpr, HD: tl.constexpr,
          D: tl.constexpr, P: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr):
    """Head ``h``'s attention over the words of each of the P patches: its weights Wq, Wk, Wv
    (D, CP), q, k, v as (P, 16, D), the probabilities (P, 16, 16) and the output (R, D)."""
    d = tl.arange(0, D)
    d_mask = d < HD
    w_q = _load_2d(qk_w, h * HD + d, cols, d_mask, col_mask, C).to(DT)
    w_k = _load_2d(qk_w, C + h * HD + d, cols, d_mask, col_mask, C).to(DT)  # Wk follows Wq
    w_v = _load_2d(v_w, h * HD + d, cols, d_mask, col_mask, C).to(DT)
    q = tl.reshape(tl.dot(xn, tl.trans(w_q), input_precision=PREC).to(DT), (P, 16, D))
    k = tl.reshape(tl.dot(xn, tl.trans(w_k), input_precision=PREC).to(DT), (P, 16, D))
    v = tl.reshape(tl.dot(xn, tl.trans(w_v), input_precision=PREC).to(DT), (P, 16, D))
    scores = tl.dot(q, tl.trans(k, (0, 2, 1)), input_precision=PREC) * scale
    probs = tl.exp(scores - tl.max(scores, axis=2)[:, :, None])
    probs = probs / tl.sum(probs, axis=2)[:, :, None]
    out = tl.dot(probs.to(DT), v, input_precision=PREC)
    return w_q, w_k, w_v, q, k, v, probs, tl.reshape(out, (P * 16, D))


@triton.jit
def _proj_weight(proj_w, h, cols, col_mask, C: tl.constexpr, HD: tl.constexpr,
                 D: tl.constexpr):
    """The columns of the projection that read head ``h``: (CP, D)."""
    d = tl.arange(0, D)
    return _load_2d(proj_w, cols, h * HD + d, col_mask, d < HD, C)


@triton.jit
def _forward_tile(words, norm1_w, norm1_b, qk_w, v_w, proj_w, proj_b, norm2_w, norm2_b,
                  keep_attn, rows, row_mask, cols, col_mask, eps, scale,
                  C: tl.constexpr, HEADS: tl.constexpr, HD: tl.constexpr, D: tl.constexpr,
                  P: tl.constexpr, DT: tl.constexpr, PREC: tl.constexpr,
                  HAS_DROP_PATH: tl.constexpr):
    """Everything before the MLP: the input words, LN1, the words after the attention branch
    and LN2, with the LN statistics the backward pass needs."""
    x = _load_2d(words, rows, cols, row_mask, col_mask, C)
    xhat1, rstd1 = _layer_norm(x, col_mask, C, eps)
    w1 = tl.load(norm1_w + cols, mask=col_mask, other=0.).to(tl.float32)
    b1 = tl.load(norm1_b + cols, mask=col_mask, other=0.).to(tl.float32)
    xn1 = (xhat1 * w1[None, :] + b1[None, :]).to(DT)
    attn = tl.zeros_like(x)
    for h in range(HEADS):
        _, _, _, _, _, _, _, out = _head(xn1, qk_w, v_w, h, cols, col_mask, scale, C, HD, D, P,
                                         DT, PREC)
        w_p = _proj_weight(proj_w, h, cols, col_mask, C, HD, D).to(DT)
        attn += tl.dot(out.to(DT), tl.trans(w_p), input_precision=PREC)
    attn += tl.load(proj_b + cols, mask=col_mask, other=0.).to(tl.float32)[None, :]
    if HAS_DROP_PATH:
        attn *= tl.load(keep_attn + rows // 16, mask=row_mask, other=0.)[:, None]
    x1 = x + attn
    xhat2, rstd2 = _layer_norm(x1, col_mask, C, eps)
    w2 = tl.load(norm2_w + cols, mask=col_mask, other=0.).to(tl.float32)
    b2 = tl.load(norm2_b + cols, mask=col_mask, other=0.).to(tl.float32)
    xn2 = (xhat2 * w2[None, :] + b2[None, :]).to(DT)
    return x, xhat1, rstd1, xn1, x1, xhat2, rstd2, xn2


@triton.jit
def inner_transformer_fwd(
        words, out, norm1_w, norm1_b, qk_w, v_w, proj_w, proj_b, norm2_w, norm2_b,
        fc1_w, fc1_b, fc2_w, fc2_b, keep_attn, keep_mlp, normed, pn_w, pn_b, n_rows, eps,
        scale, pn_eps,
        C: tl.constexpr, CP: tl.constexpr, HEADS: tl.constexpr, HD: tl.constexpr,
        D: tl.constexpr, HID: tl.constexpr, BH: tl.constexpr, P: tl.constexpr,
        DT: tl.constexpr, PREC: tl.constexpr, HAS_DROP_PATH: tl.constexpr,
        FUSE_NORM: tl.constexpr):
    """``out = inner_transformer(words)`` for the P patches of program ``pid``; with
    ``FUSE_NORM`` also ``normed`` = the LayerNorm (``pn_w``, ``pn_b``) of each patch's 16 x C
    output values, the input of the words -> sentence projection."""
    rows = tl.program_id(0) * (P * 16) + tl.arange(0, P * 16)
    cols = tl.arange(0, CP)
    row_mask = rows < n_rows
    col_mask = cols < C
    _, _, _, _, x1, _, _, xn2 = _forward_tile(
        words, norm1_w, norm1_b, qk_w, v_w, proj_w, proj_b, norm2_w, norm2_b, keep_attn, rows,
        row_mask, cols, col_mask, eps, scale, C, HEADS, HD, D, P, DT, PREC, HAS_DROP_PATH)
    mlp = tl.zeros((P * 16, CP), dtype=tl.float32)
    hidden = tl.arange(0, BH)
    for j in range(0, HID, BH):
        h_mask = j + hidden < HID
        w_fc1 = _load_2d(fc1_w, j + hidden, cols, h_mask, col_mask, C).to(DT)  # (BH, CP)
        b_fc1 = tl.load(fc1_b + j + hidden, mask=h_mask, other=0.).to(tl.float32)
        act = _gelu(tl.dot(xn2, tl.trans(w_fc1), input_precision=PREC) + b_fc1[None, :])
        w_fc2 = _load_2d(fc2_w, cols, j + hidden, col_mask, h_mask, HID).to(DT)  # (CP, BH)
        mlp += tl.dot(act.to(DT), tl.trans(w_fc2), input_precision=PREC)
    mlp += tl.load(fc2_b + cols, mask=col_mask, other=0.).to(tl.float32)[None, :]
    if HAS_DROP_PATH:
        mlp *= tl.load(keep_mlp + rows // 16, mask=row_mask, other=0.)[:, None]
    result = (x1 + mlp).to(out.dtype.element_ty)
    mask = row_mask[:, None] & col_mask[None, :]
    tl.store(out + rows[:, None] * C + cols[None, :], result, mask=mask)
    if FUSE_NORM:
        # of the words as stored, as the reference normalises them; (N, 16 C) row-major has
        # the words' addresses
        yhat, _ = _patch_layer_norm(result.to(tl.float32), col_mask, C, CP, P, pn_eps)
        w = _load_2d(pn_w, rows % 16, cols, row_mask, col_mask, C)
        b = _load_2d(pn_b, rows % 16, cols, row_mask, col_mask, C)
        tl.store(normed + rows[:, None] * C + cols[None, :],
                 (yhat * w + b).to(normed.dtype.element_ty), mask=mask)


@triton.jit
def inner_transformer_bwd(
        words, grad_out, grad_words, norm1_w, norm1_b, qk_w, v_w, proj_w, proj_b, norm2_w,
        norm2_b, fc1_w, fc1_b, fc2_w, fc2_b, keep_attn, keep_mlp, out_words, grad_normed, pn_w,
        g_norm1_w, g_norm1_b, g_qk_w, g_v_w, g_proj_w, g_proj_b, g_norm2_w, g_norm2_b,
        g_fc1_w, g_fc1_b, g_fc2_w, g_fc2_b, g_pn_w, g_pn_b, slot_stride, n_rows, n_tiles, eps,
        scale, pn_eps,
        C: tl.constexpr, CP: tl.constexpr, HEADS: tl.constexpr, HD: tl.constexpr,
        D: tl.constexpr, HID: tl.constexpr, BH: tl.constexpr, P: tl.constexpr,
        DT: tl.constexpr, PREC: tl.constexpr, HAS_DROP_PATH: tl.constexpr,
        FUSE_NORM: tl.constexpr):
    """Gradients of the words, and this program's share of the weight gradients in its slot,
    row ``pid`` of the (programs, slot_stride) buffer the ``g_*`` pointers are columns of (one
    sum over the rows gives every weight's gradient); the program takes tiles pid, pid + grid,
    ...

    With ``FUSE_NORM`` the gradient of the output words also gets the patch LayerNorm's
    share: its backward from ``grad_normed`` and the stored output ``out_words``, and the norm's
    weight gradients in the slot."""
    pid = tl.program_id(0)
    grid = tl.num_programs(0)
    cols = tl.arange(0, CP)
    col_mask = cols < C
    d = tl.arange(0, D)
    d_mask = d < HD
    hidden = tl.arange(0, BH)
    # this program's slot: its row of the weight-gradient buffer
    slot = pid * slot_stride
    g_norm1_w += slot
    g_norm1_b += slot
    g_qk_w += slot
    g_v_w += slot
    g_proj_w += slot
    g_proj_b += slot
    g_norm2_w += slot
    g_norm2_b += slot
    g_fc1_w += slot
    g_fc1_b += slot
    g_fc2_w += slot
    g_fc2_b += slot
    g_pn_w += slot
    g_pn_b += slot
    w_n1 = tl.load(norm1_w + cols, mask=col_mask, other=0.).to(tl.float32)
    w_n2 = tl.load(norm2_w + cols, mask=col_mask, other=0.).to(tl.float32)
    for tile in range(pid, n_tiles, grid):
        first = tile == pid
        rows = tile * (P * 16) + tl.arange(0, P * 16)
        row_mask = rows < n_rows
        _, xhat1, rstd1, xn1, _, xhat2, rstd2, xn2 = _forward_tile(
            words, norm1_w, norm1_b, qk_w, v_w, proj_w, proj_b, norm2_w, norm2_b, keep_attn,
            rows, row_mask, cols, col_mask, eps, scale, C, HEADS, HD, D, P, DT, PREC,
            HAS_DROP_PATH)
        grad = _load_2d(grad_out, rows, cols, row_mask, col_mask, C)  # of the output words
        if FUSE_NORM:  # normed = LN_patch(out) * pn_w + pn_b
            yhat, rstd_patch = _patch_layer_norm(
                _load_2d(out_words, rows, cols, row_mask, col_mask, C), col_mask, C, CP, P,
                pn_eps)
            grad_normed_tile = _load_2d(grad_normed, rows, cols, row_mask, col_mask, C)
            words16 = tl.arange(0, 16)
            _accumulate_2d(g_pn_w, words16, cols, words16 < 16, col_mask, C,
                           tl.sum(tl.reshape(grad_normed_tile * yhat, (P, 16, CP)), axis=0),
                           first)
            _accumulate_2d(g_pn_b, words16, cols, words16 < 16, col_mask, C,
                           tl.sum(tl.reshape(grad_normed_tile, (P, 16, CP)), axis=0), first)
            w_pn = _load_2d(pn_w, rows % 16, cols, row_mask, col_mask, C)
            grad += _patch_layer_norm_backward(grad_normed_tile * w_pn, yhat, rstd_patch,
                                               col_mask, C, CP, P)

        # MLP branch: out = x1 + keep_mlp * (fc2(gelu(fc1(xn2))) + b_fc2)
        grad_mlp = grad
        if HAS_DROP_PATH:
            grad_mlp = grad * tl.load(keep_mlp + rows // 16, mask=row_mask, other=0.)[:, None]
        _accumulate_1d(g_fc2_b, cols, col_mask, tl.sum(grad_mlp, axis=0), first)
        grad_mlp_dt = grad_mlp.to(DT)
        grad_xn2 = tl.zeros((P * 16, CP), dtype=tl.float32)
        for j in range(0, HID, BH):
            h_mask = j + hidden < HID
            w_fc1 = _load_2d(fc1_w, j + hidden, cols, h_mask, col_mask, C).to(DT)
            b_fc1 = tl.load(fc1_b + j + hidden, mask=h_mask, other=0.).to(tl.float32)
            pre = tl.dot(xn2, tl.trans(w_fc1), input_precision=PREC) + b_fc1[None, :]
            w_fc2 = _load_2d(fc2_w, cols, j + hidden, col_mask, h_mask, HID).to(DT)
            _accumulate_2d(g_fc2_w, cols, j + hidden, col_mask, h_mask, HID,
                           tl.dot(tl.trans(grad_mlp_dt), _gelu(pre).to(DT),
                                  input_precision=PREC), first)
            grad_pre = tl.dot(grad_mlp_dt, w_fc2, input_precision=PREC) * _gelu_grad(pre)
            _accumulate_1d(g_fc1_b + j, hidden, h_mask, tl.sum(grad_pre, axis=0), first)
            grad_pre = grad_pre.to(DT)
            _accumulate_2d(g_fc1_w, j + hidden, cols, h_mask, col_mask, C,
                           tl.dot(tl.trans(grad_pre), xn2, input_precision=PREC), first)
            grad_xn2 += tl.dot(grad_pre, w_fc1, input_precision=PREC)
        _accumulate_1d(g_norm2_w, cols, col_mask, tl.sum(grad_xn2 * xhat2, axis=0), first)
        _accumulate_1d(g_norm2_b, cols, col_mask, tl.sum(grad_xn2, axis=0), first)
        grad_x1 = grad + _layer_norm_backward(grad_xn2 * w_n2[None, :], xhat2, rstd2, col_mask,
                                              C)

        # attention branch: x1 = x + keep_attn * (proj(attention(xn1)) + b_proj)
        grad_attn = grad_x1
        if HAS_DROP_PATH:
            grad_attn = grad_x1 * tl.load(keep_attn + rows // 16, mask=row_mask,
                                          other=0.)[:, None]
        _accumulate_1d(g_proj_b, cols, col_mask, tl.sum(grad_attn, axis=0), first)
        grad_attn = grad_attn.to(DT)
        grad_xn1 = tl.zeros((P * 16, CP), dtype=tl.float32)
        for h in range(HEADS):
            w_q, w_k, w_v, q, k, v, probs, out = _head(xn1, qk_w, v_w, h, cols, col_mask, scale,
                                                       C, HD, D, P, DT, PREC)
            w_p = _proj_weight(proj_w, h, cols, col_mask, C, HD, D).to(DT)
            _accumulate_2d(g_proj_w, cols, h * HD + d, col_mask, d_mask, C,
                           tl.dot(tl.trans(grad_attn), out.to(DT), input_precision=PREC), first)
            grad_out_h = tl.reshape(tl.dot(grad_attn, w_p, input_precision=PREC).to(DT),
                                    (P, 16, D))
            grad_probs = tl.dot(grad_out_h, tl.trans(v, (0, 2, 1)), input_precision=PREC)
            grad_v = tl.dot(tl.trans(probs.to(DT), (0, 2, 1)), grad_out_h,
                            input_precision=PREC)
            # softmax backward, then the scale
            grad_scores = probs * (grad_probs - tl.sum(grad_probs * probs, axis=2)[:, :, None])
            grad_scores = (grad_scores * scale).to(DT)
            grad_q = tl.dot(grad_scores, k, input_precision=PREC)
            grad_k = tl.dot(tl.trans(grad_scores, (0, 2, 1)), q, input_precision=PREC)
            grad_q = tl.reshape(grad_q, (P * 16, D)).to(DT)
            grad_k = tl.reshape(grad_k, (P * 16, D)).to(DT)
            grad_v = tl.reshape(grad_v, (P * 16, D)).to(DT)
            _accumulate_2d(g_qk_w, h * HD + d, cols, d_mask, col_mask, C,
                           tl.dot(tl.trans(grad_q), xn1, input_precision=PREC), first)
            _accumulate_2d(g_qk_w, C + h * HD + d, cols, d_mask, col_mask, C,
                           tl.dot(tl.trans(grad_k), xn1, input_precision=PREC), first)
            _accumulate_2d(g_v_w, h * HD + d, cols, d_mask, col_mask, C,
                           tl.dot(tl.trans(grad_v), xn1, input_precision=PREC), first)
            grad_xn1 += tl.dot(grad_q, w_q, input_precision=PREC)
            grad_xn1 += tl.dot(grad_k, w_k, input_precision=PREC)
            grad_xn1 += tl.dot(grad_v, w_v, input_precision=PREC)
        _accumulate_1d(g_norm1_w, cols, col_mask, tl.sum(grad_xn1 * xhat1, axis=0), first)
        _accumulate_1d(g_norm1_b, cols, col_mask, tl.sum(grad_xn1, axis=0), first)
        grad_x = grad_x1 + _layer_norm_backward(grad_xn1 * w_n1[None, :], xhat1, rstd1,
                                                col_mask, C)
        mask = row_mask[:, None] & col_mask[None, :]
        tl.store(grad_words + rows[:, None] * C + cols[None, :],
                 grad_x.to(grad_words.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------ the sentence update
# The official layout adds LayerNorm(projected words) to each patch's sentence token and
# nothing to the class token: in PyTorch a cast, the norm, a zero-row pad and the sum (and
# their backward), here one pass over the sentences each way.
@triton.jit
def sentence_update_fwd(sentences, projected, out, norm_w, norm_b, n_rows, tokens, eps,
                        D: tl.constexpr, DP: tl.constexpr, R: tl.constexpr):
    """``out = sentences + pad(LayerNorm(projected))`` for R of the (B T, D) sentence rows:
    row ``b T + t`` takes row ``b (T - 1) + t - 1`` of the (B (T - 1), D) projected words,
    the class token (t = 0) nothing."""
    rows = tl.program_id(0) * R + tl.arange(0, R)
    cols = tl.arange(0, DP)
    row_mask = rows < n_rows
    col_mask = cols < D
    is_patch = row_mask & (rows % tokens > 0)
    x = _load_2d(projected, rows - rows // tokens - 1, cols, is_patch, col_mask, D)
    xhat, _ = _layer_norm(x, col_mask, D, eps)
    w = tl.load(norm_w + cols, mask=col_mask, other=0.).to(tl.float32)
    b = tl.load(norm_b + cols, mask=col_mask, other=0.).to(tl.float32)
    update = tl.where(is_patch[:, None], xhat * w[None, :] + b[None, :], 0.)
    mask = row_mask[:, None] & col_mask[None, :]
    offsets = rows[:, None] * D + cols[None, :]
    base = tl.load(sentences + offsets, mask=mask, other=0.).to(tl.float32)
    tl.store(out + offsets, (base + update).to(out.dtype.element_ty), mask=mask)


@triton.jit
def sentence_update_bwd(grad_out, projected, grad_projected, norm_w, g_norm_w, g_norm_b,
                        n_patches, patches, n_tiles, eps,
                        D: tl.constexpr, DP: tl.constexpr, R: tl.constexpr):
    """The projected words' gradient (the sentences' is ``grad_out`` itself), and this
    program's share of the LayerNorm's weight and bias gradients, row ``pid`` of the
    (programs, D) ``g_norm_*`` slots. Programs loop over tiles of R patch rows."""
    pid = tl.program_id(0)
    cols = tl.arange(0, DP)
    col_mask = cols < D
    w = tl.load(norm_w + cols, mask=col_mask, other=0.).to(tl.float32)
    grad_w = tl.zeros((DP,), dtype=tl.float32)
    grad_b = tl.zeros((DP,), dtype=tl.float32)
    for tile in range(pid, n_tiles, tl.num_programs(0)):
        rows = tile * R + tl.arange(0, R)
        row_mask = rows < n_patches
        # patch b N + n is sentence row b (N + 1) + n + 1
        g = _load_2d(grad_out, rows + rows // patches + 1, cols, row_mask, col_mask, D)
        xhat, rstd = _layer_norm(_load_2d(projected, rows, cols, row_mask, col_mask, D),
                                 col_mask, D, eps)
        grad_w += tl.sum(g * xhat, axis=0)
        grad_b += tl.sum(g, axis=0)
        grad_x = _layer_norm_backward(g * w[None, :], xhat, rstd, col_mask, D)
        tl.store(grad_projected + rows[:, None] * D + cols[None, :],
                 grad_x.to(grad_projected.dtype.element_ty),
                 mask=row_mask[:, None] & col_mask[None, :])
    tl.store(g_norm_w + pid * D + cols, grad_w, mask=col_mask)
    tl.store(g_norm_b + pid * D + cols, grad_b, mask=col_mask)
