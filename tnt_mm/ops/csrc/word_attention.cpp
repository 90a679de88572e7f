// Fused CPU attention over the 16 words of each patch (the TNT inner transformer).
//
// The inner attention runs B x N x heads independent problems of 16 tokens with head width 6
// (TNT-Ti/S) or 10 (TNT-B): 19 MFLOPs per TNT-S block at 224, yet as a batched
// `scaled_dot_product_attention` it costs more than the block's 384-wide outer MLP, because
// every tiny problem goes through generic kernels plus permute copies. Here one (patch, head)
// problem is solved in registers/L1: q, k, v are read in place from the `qk` and `v`
// projections (no permute), the 16 x 16 scores never leave the stack, and the result is written
// straight into the (N, 16, C) layout the output projection reads.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>

namespace {

constexpr int kWords = 16;  // a 16 x 16 patch cut by the stride-4 word conv

// One (patch, head): q and k rows have stride `qk_stride` (they live in the qk projection's
// output), v and out rows stride `c`.
template <int kDim>
inline void head_attention(const float* __restrict q, const float* __restrict k,
                           int64_t qk_stride, const float* __restrict v,
                           float* __restrict out, int64_t c, float scale) {
  alignas(64) float kt[kDim][kWords];  // k transposed and pre-scaled: scores vectorise over j
  alignas(64) float vt[kDim][kWords];
  alignas(64) float score[kWords];
  for (int j = 0; j < kWords; ++j) {
    for (int d = 0; d < kDim; ++d) {
      kt[d][j] = k[j * qk_stride + d] * scale;
      vt[d][j] = v[j * c + d];
    }
  }
  for (int i = 0; i < kWords; ++i) {
#pragma omp simd
    for (int j = 0; j < kWords; ++j) score[j] = 0.f;
    for (int d = 0; d < kDim; ++d) {
      const float qd = q[i * qk_stride + d];
#pragma omp simd
      for (int j = 0; j < kWords; ++j) score[j] += qd * kt[d][j];
    }
    float top = score[0];
#pragma omp simd reduction(max : top)
    for (int j = 0; j < kWords; ++j) top = score[j] > top ? score[j] : top;
    float total = 0.f;
#pragma omp simd reduction(+ : total)
    for (int j = 0; j < kWords; ++j) {
      score[j] = std::exp(score[j] - top);
      total += score[j];
    }
    const float inv = 1.f / total;
    for (int d = 0; d < kDim; ++d) {
      float acc = 0.f;
#pragma omp simd reduction(+ : acc)
      for (int j = 0; j < kWords; ++j) acc += score[j] * vt[d][j];
      out[i * c + d] = acc * inv;
    }
  }
}

template <int kDim>
void run(const float* qk, const float* v, float* out, int64_t patches, int64_t heads, int64_t c,
         float scale) {
  at::parallel_for(0, patches * heads, 64, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) {
      const int64_t n = index / heads, h = index % heads;
      const float* q = qk + n * kWords * 2 * c + h * kDim;
      head_attention<kDim>(q, q + c, 2 * c, v + n * kWords * c + h * kDim,
                           out + n * kWords * c + h * kDim, c, scale);
    }
  });
}

}  // namespace

// qk: (N, 16, 2C) = [q | k] as the TNT `qk` Linear writes it; v: (N, 16, C). Returns (N, 16, C).
torch::Tensor word_attention(torch::Tensor qk, torch::Tensor v, int64_t heads, double scale) {
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
  qk = qk.contiguous();
  v = v.contiguous();
  auto out = torch::empty({v.size(0), kWords, c}, v.options());
  const float s = static_cast<float>(scale);
  switch (dim) {
    case 6: run<6>(qk.data_ptr<float>(), v.data_ptr<float>(), out.data_ptr<float>(), v.size(0), heads, c, s); break;
    case 10: run<10>(qk.data_ptr<float>(), v.data_ptr<float>(), out.data_ptr<float>(), v.size(0), heads, c, s); break;
    case 8: run<8>(qk.data_ptr<float>(), v.data_ptr<float>(), out.data_ptr<float>(), v.size(0), heads, c, s); break;
    default: TORCH_CHECK(false, "word_attention supports head widths 6, 8 and 10, got ", dim);
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("word_attention", &word_attention, "fused attention over the 16 words of each patch");
}
