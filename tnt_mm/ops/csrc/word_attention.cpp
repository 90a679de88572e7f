// Fused CPU attention over the 16 words of each patch (the TNT inner transformer), forward and
// backward.
//
// The inner attention runs B x N x heads independent problems of 16 tokens with head width 6
// (TNT-Ti/S) or 10 (TNT-B): 19 MFLOPs per TNT-S block at 224, yet as a batched
// `scaled_dot_product_attention` it costs more than the block's 384-wide outer MLP, because
// every tiny problem goes through generic kernels plus permute copies. Here one (patch, head)
// problem is solved in registers/L1: q, k, v are read in place from the `qk` and `v`
// projections (no permute), the 16 x 16 scores never leave the stack, and the result is written
// straight into the (N, 16, C) layout the output projection reads. The backward pass recomputes
// the 16 x 16 probabilities from q and k (cheaper than storing them) and writes the gradients
// straight into the layouts of the `qk` and `v` projections.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <type_traits>
#include <vector>

#include "word_attention.h"

namespace {

using tnt_mm::head_attention;
using tnt_mm::head_attention_backward;
using tnt_mm::kWords;

template <int kDim>
void run(const float* qk, const float* v, float* out, int64_t patches, int64_t heads, int64_t c,
         float scale) {
  at::parallel_for(0, patches * heads, 64, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) {
      const int64_t n = index / heads, h = index % heads;
      const float* q = qk + n * kWords * 2 * c + h * kDim;
      head_attention<kDim>(q, q + c, 2 * c, v + n * kWords * c + h * kDim, c,
                           out + n * kWords * c + h * kDim, c, scale);
    }
  });
}

template <int kDim>
void run_backward(const float* qk, const float* v, const float* dout, float* dqk, float* dv,
                  int64_t patches, int64_t heads, int64_t c, float scale) {
  at::parallel_for(0, patches * heads, 64, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) {
      const int64_t n = index / heads, h = index % heads;
      const int64_t qk_offset = n * kWords * 2 * c + h * kDim, offset = n * kWords * c + h * kDim;
      head_attention_backward<kDim>(qk + qk_offset, qk + qk_offset + c, 2 * c, v + offset, c,
                                    dout + offset, c, scale, dqk + qk_offset,
                                    dqk + qk_offset + c, 2 * c, dv + offset, c);
    }
  });
}

// Checks shared by forward and backward; returns the head width.
int64_t check_inputs(const torch::Tensor& qk, const torch::Tensor& v, int64_t heads) {
  TORCH_CHECK(qk.device().is_cpu() && v.device().is_cpu(), "word_attention runs on the CPU");
  TORCH_CHECK(qk.scalar_type() == torch::kFloat && v.scalar_type() == torch::kFloat,
              "word_attention takes float32, got ", qk.scalar_type(), " and ", v.scalar_type());
  TORCH_CHECK(qk.dim() == 3 && v.dim() == 3 && qk.size(1) == kWords && v.size(1) == kWords &&
                  qk.size(0) == v.size(0) && qk.size(2) == 2 * v.size(2),
              "word_attention expects qk (N, 16, 2C) and v (N, 16, C), got ", qk.sizes(),
              " and ", v.sizes());
  const int64_t c = v.size(2);
  TORCH_CHECK(heads > 0 && c % heads == 0, "width ", c, " is not divisible by ", heads, " heads");
  const int64_t dim = c / heads;
  TORCH_CHECK(dim == 6 || dim == 8 || dim == 10,
              "word_attention supports head widths 6, 8 and 10, got ", dim);
  return dim;
}

// Calls `body(std::integral_constant<int, D>)` for the head width D known at run time.
template <typename Body>
void dispatch_head_dim(int64_t dim, Body body) {
  switch (dim) {
    case 6: body(std::integral_constant<int, 6>()); break;
    case 8: body(std::integral_constant<int, 8>()); break;
    default: body(std::integral_constant<int, 10>()); break;
  }
}

}  // namespace

// qk: (N, 16, 2C) = [q | k] as the TNT `qk` Linear writes it; v: (N, 16, C). Returns (N, 16, C).
torch::Tensor word_attention(torch::Tensor qk, torch::Tensor v, int64_t heads, double scale) {
  const int64_t dim = check_inputs(qk, v, heads), c = v.size(2);
  qk = qk.contiguous();
  v = v.contiguous();
  auto out = torch::empty({v.size(0), kWords, c}, v.options());
  const float s = static_cast<float>(scale);
  dispatch_head_dim(dim, [&](auto head_dim) {
    run<decltype(head_dim)::value>(qk.data_ptr<float>(), v.data_ptr<float>(),
                                   out.data_ptr<float>(), v.size(0), heads, c, s);
  });
  return out;
}

// The gradients of word_attention(qk, v) for the output gradient `grad_out` (N, 16, C):
// (grad_qk (N, 16, 2C), grad_v (N, 16, C)).
std::vector<torch::Tensor> word_attention_backward(torch::Tensor qk, torch::Tensor v,
                                                   torch::Tensor grad_out, int64_t heads,
                                                   double scale) {
  const int64_t dim = check_inputs(qk, v, heads), c = v.size(2);
  TORCH_CHECK(grad_out.sizes() == v.sizes() && grad_out.scalar_type() == torch::kFloat,
              "word_attention_backward expects a float32 grad_out shaped like v ", v.sizes(),
              ", got ", grad_out.scalar_type(), " ", grad_out.sizes());
  qk = qk.contiguous();
  v = v.contiguous();
  grad_out = grad_out.contiguous();
  auto grad_qk = torch::empty_like(qk);
  auto grad_v = torch::empty_like(v);
  const float s = static_cast<float>(scale);
  dispatch_head_dim(dim, [&](auto head_dim) {
    run_backward<decltype(head_dim)::value>(
        qk.data_ptr<float>(), v.data_ptr<float>(), grad_out.data_ptr<float>(),
        grad_qk.data_ptr<float>(), grad_v.data_ptr<float>(), v.size(0), heads, c, s);
  });
  return {grad_qk, grad_v};
}

// inner_transformer.cpp
torch::Tensor inner_transformer_forward(torch::Tensor words, std::vector<torch::Tensor> weights,
                                        int64_t heads, double eps);
std::vector<torch::Tensor> inner_transformer_backward(torch::Tensor words, torch::Tensor grad_out,
                                                      std::vector<torch::Tensor> weights,
                                                      int64_t heads, double eps);

// exp_fast and erf_fast of every element of a float32 tensor, in the same vectorised loop the
// kernels use: how the tests check their accuracy.
std::vector<torch::Tensor> fast_math(torch::Tensor x) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat,
              "fast_math expects a float32 CPU tensor, got ", x.scalar_type());
  x = x.contiguous();
  auto e = torch::empty_like(x), f = torch::empty_like(x);
  const float* in = x.data_ptr<float>();
  float *pe = e.data_ptr<float>(), *pf = f.data_ptr<float>();
  const int64_t n = x.numel();
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    pe[i] = tnt_mm::exp_fast(in[i]);
    pf[i] = tnt_mm::erf_fast(in[i]);
  }
  return {e, f};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fast_math", &fast_math, "exp_fast and erf_fast elementwise (for the tests)");
  m.def("word_attention", &word_attention, "fused attention over the 16 words of each patch");
  m.def("word_attention_backward", &word_attention_backward,
        "gradients of word_attention with respect to qk and v");
  m.def("inner_transformer_forward", &inner_transformer_forward,
        "the TNT inner transformer of 16-word patches in one pass");
  m.def("inner_transformer_backward", &inner_transformer_backward,
        "gradients of inner_transformer_forward with respect to the words and every weight");
}
