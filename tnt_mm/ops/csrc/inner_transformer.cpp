// The whole TNT inner transformer in one CPU pass, forward and backward.
//
// Per patch, the inner transformer is tiny: 16 words of width c = 12 / 24 / 40 (TNT-Ti/S/B),
//   h = LN1(x); qkv = h Wqkv^T; a = attention(qkv); x1 = x + a Wp^T + bp;
//   out = x1 + GELU(LN2(x1) W1^T + b1) W2^T + b2,
// i.e. about 2k multiply-adds per word, but as separate PyTorch ops each of its seven matrices
// streams through memory (the MLP's hidden layer alone is 4c floats per word), and the
// products have too few columns for BLAS to run well. Here a tile of a few patches goes through
// every step while its activations stay in L2: the products go to oneDNN's small-matrix
// kernels (BLAS where torch has none), the rest is written for the widths known at compile
// time. The backward pass gets only the input words: it recomputes the tile's activations (a
// tenth of the block's FLOPs) instead of storing them, then runs the chain rule through the
// same steps; weight gradients are accumulated per thread and summed at the end.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "fast_math.h"
#include "word_attention.h"

namespace {

using tnt_mm::head_attention;
using tnt_mm::head_attention_backward;
using tnt_mm::kWords;

constexpr int kTilePatches = 8;  // 128 words per tile: 93 / 186 / 310 KB of activations (Ti/S/B)
constexpr int kTileRows = kTilePatches * kWords;

// C (M x N) = A (M x K) B (K x N) [+ C if accumulate], row-major with leading dimensions. A
// small-matrix kernel of oneDNN where torch has it, BLAS otherwise (torch's own choice).
inline void matmul(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                   int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  at::native::cpublas::brgemm(M, N, K, lda, ldb, ldc, accumulate, A, B, C, false);
}

// dst (cols x rows) = src (rows x cols)^T; src rows stride `ld`.
inline void transpose(int rows, int cols, const float* __restrict src, int64_t ld,
                      float* __restrict dst) {
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) dst[c * rows + r] = src[r * ld + c];
  }
}

// Every row of out (rows x N) = base row (or 0) + bias; the starting value of a product that
// matmul then accumulates into.
template <int N>
inline void fill_rows(const float* __restrict base, const float* __restrict bias,
                      float* __restrict out, int rows) {
  for (int r = 0; r < rows; ++r) {
    float* o = out + r * N;
    if (base) {
      const float* b = base + r * N;
#pragma omp simd
      for (int n = 0; n < N; ++n) o[n] = b[n] + bias[n];
    } else {
#pragma omp simd
      for (int n = 0; n < N; ++n) o[n] = bias[n];
    }
  }
}

// db (N) += column sums of g (rows x N)
template <int N>
inline void accumulate_column_sums(const float* __restrict g, float* __restrict db, int rows) {
  for (int r = 0; r < rows; ++r) {
#pragma omp simd
    for (int n = 0; n < N; ++n) db[n] += g[r * N + n];
  }
}

// The sum of C floats through four lanes (C is a multiple of 4): one short vector add per four
// elements and a three-add reduction, instead of a full-width horizontal reduction per row.
template <int C>
inline float row_sum(const float* __restrict x) {
  static_assert(C % 4 == 0, "widths are multiples of 4");
  float lanes[4] = {0.f, 0.f, 0.f, 0.f};
  for (int i = 0; i < C; i += 4) {
    for (int l = 0; l < 4; ++l) lanes[l] += x[i + l];
  }
  return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}

template <int C>
inline float row_dot(const float* __restrict x, const float* __restrict y) {
  float lanes[4] = {0.f, 0.f, 0.f, 0.f};
  for (int i = 0; i < C; i += 4) {
    for (int l = 0; l < 4; ++l) lanes[l] += x[i + l] * y[i + l];
  }
  return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}

// LayerNorm of rows of width C (biased variance, as torch); keeps mean and 1/std per row.
template <int C>
inline void layer_norm_rows(const float* __restrict x, const float* __restrict w,
                            const float* __restrict b, float eps, float* __restrict out,
                            float* __restrict mean, float* __restrict rstd, int rows) {
  for (int r = 0; r < rows; ++r) {
    const float* xr = x + r * C;
    const float mu = row_sum<C>(xr) * (1.f / C);
    alignas(64) float centred[C];
#pragma omp simd
    for (int i = 0; i < C; ++i) centred[i] = xr[i] - mu;
    const float inv = 1.f / std::sqrt(row_dot<C>(centred, centred) * (1.f / C) + eps);
    float* o = out + r * C;
#pragma omp simd
    for (int i = 0; i < C; ++i) o[i] = centred[i] * inv * w[i] + b[i];
    mean[r] = mu;
    rstd[r] = inv;
  }
}

// dx[r] += LayerNorm backward of dy[r]; dw += dy * xhat, db += dy.
template <int C>
inline void layer_norm_backward_rows(const float* __restrict dy, const float* __restrict x,
                                     const float* __restrict mean, const float* __restrict rstd,
                                     const float* __restrict w, float* __restrict dx,
                                     float* __restrict dw, float* __restrict db, int rows) {
  for (int r = 0; r < rows; ++r) {
    const float* dyr = dy + r * C;
    const float* xr = x + r * C;
    const float mu = mean[r], inv = rstd[r];
    alignas(64) float xhat[C], g[C];
#pragma omp simd
    for (int i = 0; i < C; ++i) {
      xhat[i] = (xr[i] - mu) * inv;
      g[i] = dyr[i] * w[i];
      dw[i] += dyr[i] * xhat[i];
      db[i] += dyr[i];
    }
    const float g_mean = row_sum<C>(g) * (1.f / C);
    const float gx_mean = row_dot<C>(g, xhat) * (1.f / C);
    float* dxr = dx + r * C;
#pragma omp simd
    for (int i = 0; i < C; ++i) dxr[i] += inv * (g[i] - g_mean - xhat[i] * gx_mean);
  }
}

inline float gelu(float u) {
  return 0.5f * u * (1.f + tnt_mm::erf_fast(u * static_cast<float>(M_SQRT1_2)));
}

// d GELU(u) / du, the formula torch's gelu_backward uses. std::exp, not exp_fast: with
// exp_fast GCC 12 does not vectorise the loop over the hidden rows at all ("no vectype"); glibc's
// vector expf keeps it vectorised.
inline float gelu_grad(float u) {
  const float cdf = 0.5f * (1.f + tnt_mm::erf_fast(u * static_cast<float>(M_SQRT1_2)));
  const float pdf =
      std::exp(-0.5f * u * u) * static_cast<float>(M_2_SQRTPI * M_SQRT1_2 * 0.5);
  return cdf + u * pdf;
}

// The parameters, as raw pointers. Transposed copies (in x out) are the right-hand sides of
// the forward products; the backward pass multiplies by the weights as they are (out x in).
struct Params {
  const float *ln1_w, *ln1_b, *w_qkv, *w_proj, *b_proj, *ln2_w, *ln2_b, *w_fc1, *b_fc1, *w_fc2,
      *b_fc2;
  const float *t_qkv, *t_proj, *t_fc1, *t_fc2;
  float eps, scale;
  int64_t heads;
};

// One tile's activations. Floats per row: h1, a, x1, h2: C each; qkv: 3C; u, g: 4C each.
template <int C>
struct Tile {
  static constexpr int H = 4 * C;
  std::vector<float> buffer;
  float *h1, *qkv, *a, *x1, *h2, *u, *g, *mean1, *rstd1, *mean2, *rstd2;
  Tile() : buffer(kTileRows * (4 * C + 3 * C + 2 * H + 4)) {
    float* p = buffer.data();
    for (float** slot : {&h1, &a, &x1, &h2}) { *slot = p; p += kTileRows * C; }
    qkv = p; p += kTileRows * 3 * C;
    u = p; p += kTileRows * H;
    g = p; p += kTileRows * H;
    for (float** slot : {&mean1, &rstd1, &mean2, &rstd2}) { *slot = p; p += kTileRows; }
  }
};

// The forward pass of `patches` patches starting at x (rows of width C), into the tile
// buffers; writes the output rows to `out` when it is not null.
template <int C, int D>
inline void tile_forward(const float* x, int patches, const Params& p, Tile<C>& t, float* out) {
  constexpr int H = 4 * C;
  const int rows = patches * kWords;
  layer_norm_rows<C>(x, p.ln1_w, p.ln1_b, p.eps, t.h1, t.mean1, t.rstd1, rows);
  matmul(rows, 3 * C, C, t.h1, C, p.t_qkv, 3 * C, t.qkv, 3 * C, false);
  for (int n = 0; n < patches; ++n) {
    for (int64_t h = 0; h < p.heads; ++h) {
      const float* q = t.qkv + n * kWords * 3 * C + h * D;
      head_attention<D>(q, q + C, 3 * C, q + 2 * C, 3 * C, t.a + n * kWords * C + h * D, C,
                        p.scale);
    }
  }
  fill_rows<C>(x, p.b_proj, t.x1, rows);  // x1 = x + a Wp^T + bp
  matmul(rows, C, C, t.a, C, p.t_proj, C, t.x1, C, true);
  layer_norm_rows<C>(t.x1, p.ln2_w, p.ln2_b, p.eps, t.h2, t.mean2, t.rstd2, rows);
  fill_rows<H>(nullptr, p.b_fc1, t.u, rows);  // u = h2 W1^T + b1
  matmul(rows, H, C, t.h2, C, p.t_fc1, H, t.u, H, true);
#pragma omp simd
  for (int i = 0; i < rows * H; ++i) t.g[i] = gelu(t.u[i]);
  if (out) {
    fill_rows<C>(t.x1, p.b_fc2, out, rows);  // out = x1 + g W2^T + b2
    matmul(rows, C, H, t.g, H, p.t_fc2, C, out, C, true);
  }
}

// Offsets of each parameter's gradient in one flat per-thread accumulator.
template <int C>
struct GradLayout {
  static constexpr int H = 4 * C;
  static constexpr int ln1_w = 0, ln1_b = C, w_qkv = 2 * C, w_proj = w_qkv + 3 * C * C,
                       b_proj = w_proj + C * C, ln2_w = b_proj + C, ln2_b = ln2_w + C,
                       w_fc1 = ln2_b + C, b_fc1 = w_fc1 + H * C, w_fc2 = b_fc1 + H,
                       b_fc2 = w_fc2 + C * H, size = b_fc2 + C;
};

// Floats of backward scratch per row: dx1, dh, da: C each; dqkv: 3C; dg: 4C; a transposed
// copy of the widest of them: 4C.
template <int C>
constexpr int scratch_per_row() { return 3 * C + 3 * C + 4 * C + 4 * C; }

template <int C, int D>
inline void tile_backward(const float* x, const float* dout, int patches, const Params& p,
                          Tile<C>& t, float* dx, float* grads, float* scratch) {
  constexpr int H = 4 * C;
  using L = GradLayout<C>;
  const int rows = patches * kWords;
  tile_forward<C, D>(x, patches, p, t, nullptr);  // the activations again
  float* dx1 = scratch;
  float* dh = dx1 + kTileRows * C;
  float* da = dh + kTileRows * C;
  float* dqkv = da + kTileRows * C;
  float* dg = dqkv + kTileRows * 3 * C;
  float* transposed = dg + kTileRows * H;

  // out = x1 + g W2^T + b2:  dW2 += dout^T g, db2 += sum dout, dg = dout W2
  std::copy(dout, dout + rows * C, dx1);
  transpose(rows, C, dout, C, transposed);
  matmul(C, H, rows, transposed, rows, t.g, H, grads + L::w_fc2, H, true);
  accumulate_column_sums<C>(dout, grads + L::b_fc2, rows);
  matmul(rows, H, C, dout, C, p.w_fc2, H, dg, H, false);
  // g = GELU(u), u = h2 W1^T + b1
#pragma omp simd
  for (int i = 0; i < rows * H; ++i) dg[i] *= gelu_grad(t.u[i]);
  transpose(rows, H, dg, H, transposed);
  matmul(H, C, rows, transposed, rows, t.h2, C, grads + L::w_fc1, C, true);
  accumulate_column_sums<H>(dg, grads + L::b_fc1, rows);
  matmul(rows, C, H, dg, H, p.w_fc1, C, dh, C, false);
  // h2 = LN2(x1)
  layer_norm_backward_rows<C>(dh, t.x1, t.mean2, t.rstd2, p.ln2_w, dx1, grads + L::ln2_w,
                              grads + L::ln2_b, rows);
  // x1 = x + a Wp^T + bp
  transpose(rows, C, dx1, C, transposed);
  matmul(C, C, rows, transposed, rows, t.a, C, grads + L::w_proj, C, true);
  accumulate_column_sums<C>(dx1, grads + L::b_proj, rows);
  matmul(rows, C, C, dx1, C, p.w_proj, C, da, C, false);
  // a = attention(qkv)
  for (int n = 0; n < patches; ++n) {
    for (int64_t h = 0; h < p.heads; ++h) {
      const int64_t offset = n * kWords * 3 * C + h * D;
      const float* q = t.qkv + offset;
      head_attention_backward<D>(q, q + C, 3 * C, q + 2 * C, 3 * C,
                                 da + n * kWords * C + h * D, C, p.scale, dqkv + offset,
                                 dqkv + offset + C, 3 * C, dqkv + offset + 2 * C, 3 * C);
    }
  }
  // qkv = h1 Wqkv^T (no bias)
  transpose(rows, 3 * C, dqkv, 3 * C, transposed);
  matmul(3 * C, C, rows, transposed, rows, t.h1, C, grads + L::w_qkv, C, true);
  matmul(rows, C, 3 * C, dqkv, 3 * C, p.w_qkv, C, dh, C, false);
  // h1 = LN1(x); dx = dx1 + LN1 backward
  std::copy(dx1, dx1 + rows * C, dx);
  layer_norm_backward_rows<C>(dh, x, t.mean1, t.rstd1, p.ln1_w, dx, grads + L::ln1_w,
                              grads + L::ln1_b, rows);
}

struct Weights {
  torch::Tensor ln1_w, ln1_b, w_qkv, w_proj, b_proj, ln2_w, ln2_b, w_fc1, b_fc1, w_fc2, b_fc2;
  torch::Tensor t_qkv, t_proj, t_fc1, t_fc2;  // transposed, contiguous
  Params params(double eps, int64_t heads, int64_t head_dim) const {
    return Params{ln1_w.data_ptr<float>(), ln1_b.data_ptr<float>(), w_qkv.data_ptr<float>(),
                  w_proj.data_ptr<float>(), b_proj.data_ptr<float>(), ln2_w.data_ptr<float>(),
                  ln2_b.data_ptr<float>(),  w_fc1.data_ptr<float>(),  b_fc1.data_ptr<float>(),
                  w_fc2.data_ptr<float>(),  b_fc2.data_ptr<float>(),  t_qkv.data_ptr<float>(),
                  t_proj.data_ptr<float>(), t_fc1.data_ptr<float>(),  t_fc2.data_ptr<float>(),
                  static_cast<float>(eps),  static_cast<float>(1.0 / std::sqrt(double(head_dim))),
                  heads};
  }
};

Weights check_and_prepare(const torch::Tensor& x, const std::vector<torch::Tensor>& w,
                          int64_t heads) {
  TORCH_CHECK(w.size() == 11, "inner_transformer takes 11 parameter tensors, got ", w.size());
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat && x.dim() == 3 &&
                  x.size(1) == kWords,
              "inner_transformer expects float32 CPU words (N, 16, C), got ", x.scalar_type(),
              " ", x.sizes());
  const int64_t c = x.size(2), hidden = 4 * c;
  const std::vector<std::vector<int64_t>> shapes = {
      {c}, {c}, {3 * c, c}, {c, c}, {c}, {c}, {c}, {hidden, c}, {hidden}, {c, hidden}, {c}};
  const char* names[] = {"norm_in.weight", "norm_in.bias", "qkv weight", "proj.weight",
                         "proj.bias", "norm_mlp_in.weight", "norm_mlp_in.bias", "fc1.weight",
                         "fc1.bias", "fc2.weight", "fc2.bias"};
  for (size_t i = 0; i < w.size(); ++i) {
    TORCH_CHECK(w[i].device().is_cpu() && w[i].scalar_type() == torch::kFloat &&
                    w[i].sizes() == c10::IntArrayRef(shapes[i]),
                "inner_transformer: ", names[i], " must be float32 of shape ", shapes[i],
                " for width ", c, ", got ", w[i].scalar_type(), " ", w[i].sizes());
  }
  TORCH_CHECK(heads > 0 && c % heads == 0, "width ", c, " is not divisible by ", heads, " heads");
  Weights out{w[0].contiguous(), w[1].contiguous(), w[2].contiguous(), w[3].contiguous(),
              w[4].contiguous(), w[5].contiguous(), w[6].contiguous(), w[7].contiguous(),
              w[8].contiguous(), w[9].contiguous(), w[10].contiguous()};
  out.t_qkv = out.w_qkv.t().contiguous();
  out.t_proj = out.w_proj.t().contiguous();
  out.t_fc1 = out.w_fc1.t().contiguous();
  out.t_fc2 = out.w_fc2.t().contiguous();
  return out;
}

template <int C, int D>
void forward_impl(const float* x, float* out, int64_t patches, const Params& p) {
  const int64_t tiles = (patches + kTilePatches - 1) / kTilePatches;
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    Tile<C> tile;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t first = t * kTilePatches;
      const int n = static_cast<int>(std::min<int64_t>(kTilePatches, patches - first));
      tile_forward<C, D>(x + first * kWords * C, n, p, tile, out + first * kWords * C);
    }
    at::native::cpublas::brgemm_release(false);
  });
}

template <int C, int D>
torch::Tensor backward_impl(const float* x, const float* dout, float* dx, int64_t patches,
                            const Params& p) {
  using L = GradLayout<C>;
  const int64_t tiles = (patches + kTilePatches - 1) / kTilePatches;
  const int threads = at::get_num_threads();
  torch::Tensor grads = torch::zeros({threads, static_cast<int64_t>(L::size)}, torch::kFloat);
  float* grads_base = grads.data_ptr<float>();
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    Tile<C> tile;
    std::vector<float> scratch(kTileRows * scratch_per_row<C>());
    float* own = grads_base + at::get_thread_num() * L::size;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t first = t * kTilePatches;
      const int n = static_cast<int>(std::min<int64_t>(kTilePatches, patches - first));
      const int64_t offset = first * kWords * C;
      tile_backward<C, D>(x + offset, dout + offset, n, p, tile, dx + offset, own,
                          scratch.data());
    }
    at::native::cpublas::brgemm_release(false);
  });
  return grads.sum(0);
}

// Calls body(integral_constant<C>, integral_constant<D>) for the supported (width, head width)
// pairs: TNT-Ti (12, 6), TNT-S (24, 6), TNT-B (40, 10).
template <typename Body>
void dispatch(int64_t c, int64_t head_dim, Body body) {
  if (c == 12 && head_dim == 6) return body(std::integral_constant<int, 12>(), std::integral_constant<int, 6>());
  if (c == 24 && head_dim == 6) return body(std::integral_constant<int, 24>(), std::integral_constant<int, 6>());
  if (c == 40 && head_dim == 10) return body(std::integral_constant<int, 40>(), std::integral_constant<int, 10>());
  TORCH_CHECK(false, "inner_transformer supports widths/head widths 12/6, 24/6 and 40/10, got ",
              c, "/", head_dim);
}

}  // namespace

// words (N, 16, C) -> the inner transformer's output (N, 16, C). `weights`: norm_in weight and
// bias, Wqkv (3C, C) = [Wq; Wk; Wv], proj weight and bias, norm_mlp_in weight and bias, fc1
// weight (4C, C) and bias, fc2 weight (C, 4C) and bias.
torch::Tensor inner_transformer_forward(torch::Tensor words, std::vector<torch::Tensor> weights,
                                        int64_t heads, double eps) {
  Weights w = check_and_prepare(words, weights, heads);
  words = words.contiguous();
  const int64_t c = words.size(2), head_dim = c / heads;
  auto out = torch::empty_like(words);
  dispatch(c, head_dim, [&](auto width, auto dim) {
    forward_impl<decltype(width)::value, decltype(dim)::value>(
        words.data_ptr<float>(), out.data_ptr<float>(), words.size(0), w.params(eps, heads, dim));
  });
  return out;
}

// The gradients for grad_out (N, 16, C): [grad_words, then one per weight, in their order].
std::vector<torch::Tensor> inner_transformer_backward(torch::Tensor words, torch::Tensor grad_out,
                                                      std::vector<torch::Tensor> weights,
                                                      int64_t heads, double eps) {
  Weights w = check_and_prepare(words, weights, heads);
  TORCH_CHECK(grad_out.sizes() == words.sizes() && grad_out.scalar_type() == torch::kFloat,
              "inner_transformer_backward expects a float32 grad_out shaped like the words ",
              words.sizes(), ", got ", grad_out.scalar_type(), " ", grad_out.sizes());
  words = words.contiguous();
  grad_out = grad_out.contiguous();
  const int64_t c = words.size(2), head_dim = c / heads;
  auto grad_words = torch::empty_like(words);
  std::vector<torch::Tensor> result{grad_words};
  dispatch(c, head_dim, [&](auto width, auto dim) {
    constexpr int C = decltype(width)::value;
    using L = GradLayout<C>;
    torch::Tensor flat = backward_impl<C, decltype(dim)::value>(
        words.data_ptr<float>(), grad_out.data_ptr<float>(), grad_words.data_ptr<float>(),
        words.size(0), w.params(eps, heads, dim));
    const int64_t bounds[] = {L::ln1_w, L::ln1_b, L::w_qkv, L::w_proj, L::b_proj, L::ln2_w,
                              L::ln2_b, L::w_fc1, L::b_fc1, L::w_fc2, L::b_fc2, L::size};
    for (size_t i = 0; i < weights.size(); ++i) {
      result.push_back(flat.slice(0, bounds[i], bounds[i + 1]).view(weights[i].sizes()));
    }
  });
  return result;
}
