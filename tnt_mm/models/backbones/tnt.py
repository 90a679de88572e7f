"""Transformer in Transformer (TNT) backbone for the OpenMMLab 2.x stack.

Paper: "Transformer in Transformer", Han et al., NeurIPS 2021 (https://arxiv.org/abs/2103.00112).
Official code: https://github.com/huawei-noah/Efficient-AI-Backbones/tree/master/tnt_pytorch.
Key names follow timm's ``tnt.py`` so that its checkpoints map one-to-one; the converter in
``tnt_mm/models/backbones/tnt_convert.py`` handles the other formats.

An image is cut into 16x16 patches ("visual sentences"), each patch into 4x4 = 16 sub-patches
("visual words"). Every block runs an inner transformer over the words of each patch, adds the
flattened words to their sentence, then runs an outer transformer over the sentences.

Shapes used in the comments: B images, N = Hp * Wp patches, T = N + 1 sentence tokens (class
token first), m = 16 words per patch, c / d the inner / outer widths.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch.utils.checkpoint import checkpoint
from torchvision.ops import StochasticDepth

from tnt_mm.ops import inner_kernel_applies, inner_transformer, kernel_applies, word_attention
from tnt_mm.registry import MODELS
from .pyramid import PyramidRescaler

LAYOUTS = ('official', 'legacy')
OUT_TYPES = ('pyramid', 'featmap', 'cls_token')


def resample_pos_embed(pos_embed: torch.Tensor, old_grid: Tuple[int, int],
                       new_grid: Tuple[int, int], num_prefix_tokens: int = 0) -> torch.Tensor:
    """Resample a flattened 2D position embedding to another grid (bicubic).

    Args:
        pos_embed (Tensor): (1, num_prefix_tokens + old_h * old_w, C).
        old_grid (tuple[int, int]): (old_h, old_w) of the embedding.
        new_grid (tuple[int, int]): (new_h, new_w) wanted.
        num_prefix_tokens (int): leading tokens (class token) kept as they are. Defaults to 0.

    Returns:
        Tensor: (1, num_prefix_tokens + new_h * new_w, C).
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    if grid.shape[1] != old_grid[0] * old_grid[1]:
        raise ValueError(f'position embedding has {grid.shape[1]} grid tokens, which is not '
                         f'{old_grid[0]}x{old_grid[1]}')
    channels = grid.shape[-1]
    # (1, h*w, C) -> (1, C, h, w)
    grid = grid.reshape(1, old_grid[0], old_grid[1], channels).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=tuple(new_grid), mode='bicubic', align_corners=False)
    # (1, C, h', w') -> (1, h'*w', C)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, channels).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


def init_transformer_weights(module: nn.Module) -> None:
    """The ViT/TNT initialisation of every Linear and LayerNorm under ``module``: truncated
    normal (std 0.02) weights and zero biases for Linears, identity for LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Attention(nn.Module):
    """Multi-head self-attention with the TNT parameter layout: a ``qk`` Linear (dim -> 2 dim)
    and a separate ``v`` Linear, computed by ``F.scaled_dot_product_attention``."""

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 qkv_bias: bool = False,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'attention width {dim} is not divisible by num_heads={num_heads}')
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qk = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def query_key(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, L, C) -> q, k, each (B, heads, L, C/heads)."""
        batch, tokens, dim = x.shape
        # (B, L, 2C) -> (2, B, heads, L, C/heads)
        return self.qk(x).reshape(batch, tokens, 2, self.num_heads,
                                  dim // self.num_heads).permute(2, 0, 3, 1, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        dropout_p = self.attn_drop if self.training else 0.
        if kernel_applies(x, dim // self.num_heads, dropout_p):
            # CPU attention over the 16 words of each patch: the fused kernel (same outputs and
            # gradients)
            return self.proj_drop(self.proj(word_attention(self.qk(x), self.v(x), self.num_heads)))
        q, k = self.query_key(x)
        # (B, L, C) -> (B, heads, L, C/heads)
        v = self.v(x).reshape(batch, tokens, self.num_heads, dim // self.num_heads).transpose(1, 2)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        # (B, heads, L, C/heads) -> (B, L, C)
        x = x.transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj_drop(self.proj(x))

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The attention probabilities for input ``x`` (B, L, C): (B, heads, L, L).

        The fused kernel in :meth:`forward` never forms them; this recomputes them for
        inspection (``tools/visualize_attention.py``).
        """
        q, k = self.query_key(x)
        return (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)


class Mlp(nn.Module):
    """Linear -> activation -> dropout -> Linear -> dropout."""

    def __init__(self,
                 dim: int,
                 hidden_dim: int,
                 act_layer: Type[nn.Module] = nn.GELU,
                 drop: float = 0.) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class SqueezeExcite(nn.Module):
    """The SE module of the TNT supplement: the mean over all tokens goes through
    LN -> Linear -> ReLU -> Linear -> Tanh and scales every token dimension-wise."""

    def __init__(self, dim: int, hidden_ratio: float = 0.25) -> None:
        super().__init__()
        hidden_dim = int(dim * hidden_ratio)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean(dim=1, keepdim=True)  # (B, T, d) -> (B, 1, d)
        gate = torch.tanh(self.fc2(F.relu(self.fc1(self.norm(gate)))))
        return x * gate


class TNTBlock(nn.Module):
    """One TNT block: inner transformer on the words, words -> sentence, outer transformer.

    Args:
        inner_dim (int): word width c.
        outer_dim (int): sentence width d.
        num_words (int): words per patch m.
        inner_heads (int): heads of the inner attention.
        outer_heads (int): heads of the outer attention.
        mlp_ratio (float): hidden width of both MLPs over their input width. Defaults to 4.
        qkv_bias (bool): bias in the ``qk`` and ``v`` Linears. Defaults to False.
        drop (float): dropout after attention and MLP projections. Defaults to 0.
        attn_drop (float): dropout on the attention weights. Defaults to 0.
        drop_path (float): stochastic depth rate of this block. Defaults to 0.
        has_inner (bool): whether the block has the inner transformer and the words -> sentence
            projection (paper Table 5 keeps them in some blocks only). Defaults to True.
        legacy (bool): words -> sentence as in the legacy network (LN(c) per word, Linear with
            bias, no LN after) instead of the official LN(mc) -> Linear without bias -> LN(d).
            Defaults to False.
        with_se (bool): add the SE module on the outer MLP output. Defaults to False.
        act_layer (type): activation of the MLPs. Defaults to ``nn.GELU``.
        norm_layer (type): normalisation layer. Defaults to ``nn.LayerNorm``.
    """

    def __init__(self,
                 inner_dim: int,
                 outer_dim: int,
                 num_words: int,
                 inner_heads: int,
                 outer_heads: int,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = False,
                 drop: float = 0.,
                 attn_drop: float = 0.,
                 drop_path: float = 0.,
                 has_inner: bool = True,
                 legacy: bool = False,
                 with_se: bool = False,
                 act_layer: Type[nn.Module] = nn.GELU,
                 norm_layer: Type[nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.has_inner = has_inner
        self.legacy = legacy
        if has_inner:
            self.norm_in = norm_layer(inner_dim)
            self.attn_in = Attention(inner_dim, inner_heads, qkv_bias, attn_drop, drop)
            self.norm_mlp_in = norm_layer(inner_dim)
            self.mlp_in = Mlp(inner_dim, int(inner_dim * mlp_ratio), act_layer, drop)
            if legacy:
                self.norm1_proj = norm_layer(inner_dim)
                self.proj = nn.Linear(num_words * inner_dim, outer_dim, bias=True)
            else:
                self.norm1_proj = norm_layer(num_words * inner_dim)
                self.proj = nn.Linear(num_words * inner_dim, outer_dim, bias=False)
                self.norm2_proj = norm_layer(outer_dim)
        self.norm_out = norm_layer(outer_dim)
        self.attn_out = Attention(outer_dim, outer_heads, qkv_bias, attn_drop, drop)
        self.norm_mlp = norm_layer(outer_dim)
        self.mlp = Mlp(outer_dim, int(outer_dim * mlp_ratio), act_layer, drop)
        self.se = SqueezeExcite(outer_dim) if with_se else None
        self.drop_path = StochasticDepth(drop_path, mode='row') if drop_path > 0 else nn.Identity()
        # What the fused CPU inner transformer computes: LayerNorms of one eps, exact GELU,
        # no qkv bias, hidden width 4c; in training also no dropout and no stochastic depth.
        self.inner_fusable = has_inner and (
            norm_layer is nn.LayerNorm and act_layer is nn.GELU and not qkv_bias
            and self.mlp_in.fc1.out_features == 4 * inner_dim
            and self.norm_in.eps == self.norm_mlp_in.eps)
        self.inner_fusable_in_training = self.inner_fusable and drop == attn_drop == drop_path == 0

    def words_to_sentences(self, words: torch.Tensor, batch: int) -> torch.Tensor:
        """(B*N, m, c) words -> (B, N, d) contribution to the sentence tokens."""
        if self.legacy:
            return self.proj(self.norm1_proj(words).reshape(batch, -1, self.proj.in_features))
        return self.norm2_proj(self.proj(self.norm1_proj(
            words.reshape(batch, -1, self.proj.in_features))))

    def inner_kernel_applies(self, words: torch.Tensor) -> bool:
        """Whether the fused CPU inner transformer computes :meth:`forward_inner` here."""
        fusable = self.inner_fusable_in_training if self.training else self.inner_fusable
        return fusable and inner_kernel_applies(
            words, self.attn_in.qk.in_features // self.attn_in.num_heads)

    def forward_inner(self, words: torch.Tensor) -> torch.Tensor:
        """The inner transformer on the words of every patch: (B*N, m, c) -> (B*N, m, c)."""
        if self.inner_kernel_applies(words):
            attn, mlp = self.attn_in, self.mlp_in
            # [Wq; Wk; Wv]: one product for the three, read in place by the attention
            w_qkv = torch.cat([attn.qk.weight, attn.v.weight])
            return inner_transformer(
                words, (self.norm_in.weight, self.norm_in.bias, w_qkv, attn.proj.weight,
                        attn.proj.bias, self.norm_mlp_in.weight, self.norm_mlp_in.bias,
                        mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias),
                attn.num_heads, self.norm_in.eps)
        words = words + self.drop_path(self.attn_in(self.norm_in(words)))
        return words + self.drop_path(self.mlp_in(self.norm_mlp_in(words)))

    def forward(self, words: torch.Tensor, sentences: torch.Tensor,
                recompute_inner: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """Args:
            words (Tensor): (B*N, m, c).
            sentences (Tensor): (B, 1 + N, d), class token first.
            recompute_inner (bool): keep only the block's input words for the backward pass and
                recompute the inner transformer there. Its activations (m = 16 words per patch)
                are about as large as the outer transformer's while it costs a tenth of the
                FLOPs, so this trades a few percent of training time for much memory.
        """
        if self.has_inner:
            # The fused kernel keeps only the block's input words for its backward pass: it
            # recomputes the inner transformer there by itself.
            if recompute_inner and not self.inner_kernel_applies(words):
                words = checkpoint(self.forward_inner, words, use_reentrant=False)
            else:
                words = self.forward_inner(words)
            update = self.words_to_sentences(words, sentences.shape[0])
            # The class token gets no word update. Out of place (in-place updates break autograd
            # and checkpointing): the patch tokens plus the update, the class token put back in
            # front. Padding the update with a zero row and adding costs 1.7x as much (zero
            # fill and one more pass: 0.90 against 0.53 ms at 224, batch 8, 2 threads).
            sentences = torch.cat([sentences[:, :1], sentences[:, 1:] + update], dim=1)
        sentences = sentences + self.drop_path(self.attn_out(self.norm_out(sentences)))
        mlp_out = self.mlp(self.norm_mlp(sentences))
        if self.se is not None:
            mlp_out = mlp_out + self.se(mlp_out)
        sentences = sentences + self.drop_path(mlp_out)
        return words, sentences


class PixelEmbed(nn.Module):
    """Image -> visual words: (B, C, Hp*p, Wp*p) -> (B*N, m, c).

    ``official`` layout: cut the image into p x p patches, then run the 7x7 stride-``word_stride``
    conv on every patch separately (zero padding at each patch border). ``legacy`` layout: run the
    conv on the whole image, then cut its output into patches.
    """

    def __init__(self,
                 in_channels: int,
                 inner_dim: int,
                 patch_size: int = 16,
                 word_stride: int = 4,
                 legacy: bool = False) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.legacy = legacy
        self.word_grid = math.ceil(patch_size / word_stride)
        self.proj = nn.Conv2d(in_channels, inner_dim, kernel_size=7, stride=word_stride, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        p, s = self.patch_size, self.word_grid
        hp, wp = height // p, width // p
        if self.legacy:
            x = self.proj(x)  # (B, c, Hp*s, Wp*s)
            dim = x.shape[1]
            # (B, c, Hp, s, Wp, s) -> (B, Hp, Wp, s, s, c) -> (B*N, s*s, c)
            x = x.reshape(batch, dim, hp, s, wp, s).permute(0, 2, 4, 3, 5, 1)
            return x.reshape(batch * hp * wp, s * s, dim)
        # (B, C, Hp, p, Wp, p) -> (B, Hp, Wp, C, p, p) -> (B*N, C, p, p)
        x = x.reshape(batch, channels, hp, p, wp, p).permute(0, 2, 4, 1, 3, 5)
        x = self.proj(x.reshape(batch * hp * wp, channels, p, p))  # (B*N, c, s, s)
        return x.flatten(2).transpose(1, 2)  # (B*N, s*s, c)


@MODELS.register_module()
class TNT(BaseModule):
    """Transformer in Transformer backbone for classification, detection and segmentation.

    Any input size works: the image is zero-padded on the bottom and right to the next multiple
    of the patch size (16), so no pixel is dropped and the patch grid is
    ``(ceil(H / 16), ceil(W / 16))``. The sentence position embedding, learnt on the
    ``pretrain_img_size`` grid, is resampled (bicubic) to that grid; the word position embedding
    covers the 4x4 words of one patch, which do not change with the input size (a checkpoint
    with another word grid is resampled when it is loaded).

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'`` (or ``'ti'``, ``'s'``, ``'b'``),
            or a dict with the keys of :attr:`arch_zoo` entries. Defaults to ``'small'``.
        layout (str): ``'official'`` (the released Huawei/timm TNT) or ``'legacy'`` (the network
            of mmpretrain's and timm's ``tnt_s_legacy_patch16_224``). Defaults to ``'official'``.
        in_channels (int): input image channels. Defaults to 3.
        pretrain_img_size (int | tuple): the size the sentence position embedding is learnt at.
            Defaults to 224.
        patch_size (int): sentence patch size. Defaults to 16.
        word_stride (int): stride of the word-embedding conv, the word size. Defaults to 4.
        out_indices (Sequence[int], optional): blocks whose outputs are returned, negative
            indices allowed. Defaults to ``(2, 5, 8, 11)`` (blocks 3/6/9/12) for ``'pyramid'``
            and ``'featmap'``, and ``(-1,)`` for ``'cls_token'``.
        out_type (str): what ``forward`` returns, a tuple with one entry per ``out_indices``:

            - ``'pyramid'``: the block features rescaled to strides 4, 8, 16 and 32
              (:class:`PyramidRescaler`), NCHW, the input of an FPN.
            - ``'featmap'``: the raw block outputs without the class token, stride 16, NCHW.
            - ``'cls_token'``: the class token, (B, d); the final norm is applied to the last
              block's output as in the classifier.

            Defaults to ``'pyramid'``.
        pyramid_scales (Sequence[float]): rescaling factor of each returned block for
            ``'pyramid'``. Defaults to ``(4.0, 2.0, 1.0, 0.5)``.
        pyramid_channels (int, optional): channels of the pyramid levels. Defaults to the outer
            width d.
        pyramid_norm (str, optional): ``'LN'`` (ViTDet's channel LayerNorm in every level) or
            ``None``; see :class:`PyramidRescaler`. Defaults to ``'LN'``.
        mlp_ratio (float): hidden width of the MLPs over their input width. Defaults to 4.
        qkv_bias (bool): bias in the attention ``qk`` and ``v`` Linears. Defaults to False.
        drop_rate (float): dropout after projections and on the embeddings. Defaults to 0.
        attn_drop_rate (float): dropout on attention weights. Defaults to 0.
        drop_path_rate (float): stochastic depth rate, rising linearly to this value over the
            blocks. Defaults to 0.
        with_se (bool): the SE variant of the supplement (TNT-S+SE). Defaults to False.
        inner_block_indices (Sequence[int], optional): blocks that keep the inner transformer
            (paper Table 5); the others are plain ViT blocks. Defaults to all blocks.
        with_cp (bool): gradient checkpointing of every block, to save memory. Defaults to False.
        recompute_inner (bool): in training, recompute the inner transformer in the backward
            pass instead of storing its activations (see :meth:`TNTBlock.forward`); the outputs
            and gradients are unchanged. Defaults to True.
        init_cfg (dict | list[dict], optional): initialisation; ``dict(type='Pretrained',
            checkpoint=PATH)`` loads a converted checkpoint strictly (see
            :meth:`load_pretrained`). Defaults to None.
    """
    arch_zoo: Dict[str, Dict[str, int]] = {
        **dict.fromkeys(['ti', 'tiny'], dict(
            inner_dim=12, inner_heads=2, outer_dim=192, outer_heads=3, depth=12)),
        **dict.fromkeys(['s', 'small'], dict(
            inner_dim=24, inner_heads=4, outer_dim=384, outer_heads=6, depth=12)),
        **dict.fromkeys(['b', 'base'], dict(
            inner_dim=40, inner_heads=4, outer_dim=640, outer_heads=10, depth=12)),
    }
    arch_keys = frozenset(('inner_dim', 'inner_heads', 'outer_dim', 'outer_heads', 'depth'))
    num_prefix_tokens = 1

    def __init__(self,
                 arch: Union[str, dict] = 'small',
                 layout: str = 'official',
                 in_channels: int = 3,
                 pretrain_img_size: Union[int, Tuple[int, int]] = 224,
                 patch_size: int = 16,
                 word_stride: int = 4,
                 out_indices: Optional[Union[int, Sequence[int]]] = None,
                 out_type: str = 'pyramid',
                 pyramid_scales: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 pyramid_channels: Optional[int] = None,
                 pyramid_norm: Optional[str] = 'LN',
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = False,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 with_se: bool = False,
                 inner_block_indices: Optional[Sequence[int]] = None,
                 with_cp: bool = False,
                 recompute_inner: bool = True,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = self._parse_arch(arch)
        if layout not in LAYOUTS:
            raise ValueError(f'layout={layout!r} is not supported; choose one of {LAYOUTS}')
        if out_type not in OUT_TYPES:
            raise ValueError(f'out_type={out_type!r} is not supported; choose one of {OUT_TYPES}')
        self.layout = layout
        self.out_type = out_type
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.with_cp = with_cp
        self.recompute_inner = recompute_inner
        depth = self.arch_settings['depth']
        inner_dim = self.arch_settings['inner_dim']
        self.embed_dims = outer_dim = self.arch_settings['outer_dim']
        self.num_layers = depth

        if out_indices is None:
            out_indices = (-1,) if out_type == 'cls_token' else (2, 5, 8, 11)
        self.out_indices = self._normalize_indices(out_indices, depth, 'out_indices')
        if inner_block_indices is None:
            inner_blocks = set(range(depth))
        else:
            inner_blocks = set(self._normalize_indices(inner_block_indices, depth,
                                                       'inner_block_indices'))

        if isinstance(pretrain_img_size, int):
            pretrain_img_size = (pretrain_img_size, pretrain_img_size)
        self.pos_grid = (pretrain_img_size[0] // patch_size, pretrain_img_size[1] // patch_size)

        self.pixel_embed = PixelEmbed(in_channels, inner_dim, patch_size, word_stride,
                                      legacy=layout == 'legacy')
        num_words = self.pixel_embed.word_grid ** 2
        self.num_words = num_words
        self.norm1_proj = nn.LayerNorm(num_words * inner_dim)
        self.proj = nn.Linear(num_words * inner_dim, outer_dim)
        self.norm2_proj = nn.LayerNorm(outer_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, outer_dim))
        self.patch_pos = nn.Parameter(
            torch.zeros(1, self.num_prefix_tokens + self.pos_grid[0] * self.pos_grid[1], outer_dim))
        self.pixel_pos = nn.Parameter(torch.zeros(1, num_words, inner_dim))
        self.pos_drop = nn.Dropout(drop_rate)

        # Blocks after the last returned one would get no gradient (and break DDP): build only
        # those that are used. A classifier returns the last block, so it builds all of them.
        num_built = max(self.out_indices) + 1
        drop_path_rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList([
            TNTBlock(inner_dim, outer_dim, num_words,
                     inner_heads=self.arch_settings['inner_heads'],
                     outer_heads=self.arch_settings['outer_heads'],
                     mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate,
                     attn_drop=attn_drop_rate, drop_path=drop_path_rates[i],
                     has_inner=i in inner_blocks, legacy=layout == 'legacy', with_se=with_se)
            for i in range(num_built)
        ])

        self.norm = nn.LayerNorm(outer_dim) if out_type == 'cls_token' else None
        self.pyramid = None
        if out_type == 'pyramid':
            if len(pyramid_scales) != len(self.out_indices):
                raise ValueError(
                    f'out_type="pyramid" rescales each returned block by one factor, but '
                    f'pyramid_scales={tuple(pyramid_scales)} has {len(pyramid_scales)} entries '
                    f'for out_indices={self.out_indices}')
            self.pyramid = PyramidRescaler(outer_dim, pyramid_channels or outer_dim,
                                           pyramid_scales, pyramid_norm)
        self._init_trunk()

    # ------------------------------------------------------------------ construction helpers
    def _parse_arch(self, arch: Union[str, dict]) -> Dict[str, int]:
        if isinstance(arch, str):
            key = arch.lower()
            if key not in self.arch_zoo:
                raise ValueError(f'arch={arch!r} is unknown; choose one of '
                                 f'{sorted(self.arch_zoo)} or pass a dict with keys '
                                 f'{sorted(self.arch_keys)}')
            return dict(self.arch_zoo[key])
        if not isinstance(arch, dict):
            raise TypeError(f'arch must be a str or a dict, got {type(arch).__name__}')
        missing = self.arch_keys - set(arch)
        extra = set(arch) - self.arch_keys
        if missing or extra:
            raise ValueError(f'custom arch {arch} must have exactly the keys '
                             f'{sorted(self.arch_keys)}; missing {sorted(missing)}, '
                             f'unexpected {sorted(extra)}')
        for name, value in arch.items():
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f'arch[{name!r}]={value!r} must be a positive int')
        return dict(arch)

    @staticmethod
    def _normalize_indices(indices: Union[int, Sequence[int]], depth: int,
                           name: str) -> Tuple[int, ...]:
        if isinstance(indices, int):
            indices = (indices,)
        indices = tuple(indices)
        if not indices:
            raise ValueError(f'{name} is empty; give at least one block index')
        bad = [i for i in indices if not isinstance(i, int) or not -depth <= i < depth]
        if bad:
            raise ValueError(f'{name}={indices} has {bad} out of range: this TNT has {depth} '
                             f'blocks, so valid indices are {-depth}..{depth - 1}')
        normalized = tuple(i % depth for i in indices)
        if len(set(normalized)) != len(normalized):
            raise ValueError(f'{name}={indices} names the same block twice')
        return normalized

    def _init_trunk(self) -> None:
        """The official initialisation: truncated normal (std 0.02) for Linears and embeddings,
        LayerNorms to identity."""
        init_transformer_weights(self)
        for param in (self.cls_token, self.patch_pos, self.pixel_pos):
            nn.init.trunc_normal_(param, std=.02)

    # ------------------------------------------------------------------ weights
    def init_weights(self) -> None:
        """Initialise, or load ``init_cfg=dict(type='Pretrained', checkpoint=...)`` strictly.

        mmengine's own ``Pretrained`` initialiser loads with ``strict=False`` and only warns; a
        backbone that silently keeps random weights is worse than an error, so it is done here.
        """
        if isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained':
            from .tnt_convert import load_pretrained
            load_pretrained(self, self.init_cfg['checkpoint'],
                            prefix=self.init_cfg.get('prefix'),
                            map_location=self.init_cfg.get('map_location', 'cpu'))
            self._is_init = True
            return
        super().init_weights()

    # ------------------------------------------------------------------ forward
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f'TNT expects a batch of images (B, C, H, W), got a tensor of '
                             f'shape {tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(f'TNT was built for {self.in_channels}-channel images '
                             f'(in_channels={self.in_channels}) but got {x.shape[1]} channels '
                             f'(input shape {tuple(x.shape)})')
        # NaN and Inf survive a sum: one reduction (0.5 ms at 800x1216 on 2 CPU cores, against
        # a 3.5 s forward; isfinite(x).all() takes 40 ms). Values are counted only when it is
        # not finite. Checked in training only, where bad inputs would be trained on: on a GPU
        # the test is a host sync that inference need not pay. Skipped while tracing or
        # compiling, where it would break the graph.
        if not self.training or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return
        if not torch.isfinite(x.sum()):
            num_nan, num_inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
            if num_nan or num_inf:  # else only the sum of huge finite values overflowed
                raise ValueError(
                    f'TNT got {num_nan} NaN and {num_inf} infinite values in its input of '
                    f'shape {tuple(x.shape)}; the network would turn them into NaN features and '
                    f'losses. Check the images and the data preprocessor (a zero std divides by '
                    f'zero)')

    def embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Tuple[int, int]]:
        """Image -> (words (B*N, m, c), sentences (B, T, d), patch grid (Hp, Wp))."""
        self._check_input(x)
        batch, _, height, width = x.shape
        p = self.patch_size
        pad_h, pad_w = -height % p, -width % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))  # zeros on the bottom and right
        grid = ((height + pad_h) // p, (width + pad_w) // p)

        words = self.pixel_embed(x) + self.pixel_pos
        sentences = self.norm2_proj(self.proj(self.norm1_proj(
            words.reshape(batch, grid[0] * grid[1], -1))))  # (B*N, m, c) -> (B, N, d)
        sentences = torch.cat([self.cls_token.expand(batch, -1, -1), sentences], dim=1)
        pos = resample_pos_embed(self.patch_pos, self.pos_grid, grid, self.num_prefix_tokens)
        sentences = self.pos_drop(sentences + pos)
        return words, sentences, grid

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        words, sentences, grid = self.embed(x)
        batch = sentences.shape[0]
        taken = {}
        saving = self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            if saving and self.with_cp:
                words, sentences = checkpoint(block, words, sentences, use_reentrant=False)
            else:
                words, sentences = block(words, sentences,
                                         recompute_inner=saving and self.recompute_inner)
            if i not in self.out_indices:
                continue
            if self.out_type == 'cls_token':
                # The classifier's final norm belongs to the last block's output only.
                out = self.norm(sentences) if i == len(self.blocks) - 1 else sentences
                taken[i] = out[:, 0]
            else:
                # (B, 1 + Hp*Wp, d) -> (B, d, Hp, Wp)
                feat = sentences[:, self.num_prefix_tokens:].reshape(batch, grid[0], grid[1], -1)
                taken[i] = feat.permute(0, 3, 1, 2).contiguous()
        outs = [taken[i] for i in self.out_indices]  # in the order the user asked for
        if self.pyramid is not None:
            outs = self.pyramid(outs)
        return tuple(outs)
