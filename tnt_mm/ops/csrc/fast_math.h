// exp and erf for the kernels' inner loops, written so that GCC inlines and vectorises them.
//
// glibc's vectorised expf / erff (what -ffast-math turns std::exp / std::erf into inside an
// `omp simd` loop) are function calls, and every call clobbers all vector registers: the
// attention's 16 x 16 probabilities and the MLP's hidden rows are spilled to memory and
// reloaded around each one (figures in docs/benchmark.md). These are a handful of FMAs each,
// within 1e-7 relative (exp) and 4e-7 absolute (erf) of double precision
// (tests/test_ops/test_inner_backends.py).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

// Forced: left to itself GCC 12 kept exp_fast out of line in one of the backward loops, and a
// loop around a call runs scalar.
#if defined(__GNUC__) || defined(__clang__)
#define TNT_MM_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define TNT_MM_ALWAYS_INLINE inline
#endif

namespace tnt_mm {

// e^x, relative error below 1e-7 for x in [-87, 88] (inputs outside are clamped there; the
// softmax only evaluates x <= 0). x = n ln2 + r with |r| <= ln2 / 2, e^r by its Taylor series to
// r^7 (truncation error r^8 / 8! < 6e-9), 2^n put into the exponent bits.
TNT_MM_ALWAYS_INLINE float exp_fast(float x) {
  x = std::fmin(std::fmax(x, -87.f), 88.f);
  const float n = std::nearbyint(x * 1.44269504088896341f);  // x / ln2
  // ln2 in two parts: the first has few mantissa bits, so n * part is exact
  float r = std::fma(n, -0.693145751953125f, x);
  r = std::fma(n, -1.42860682030941723e-6f, r);
  float p = 1.f / 5040.f;
  p = std::fma(p, r, 1.f / 720.f);
  p = std::fma(p, r, 1.f / 120.f);
  p = std::fma(p, r, 1.f / 24.f);
  p = std::fma(p, r, 1.f / 6.f);
  p = std::fma(p, r, 0.5f);
  p = std::fma(p, r, 1.f);
  p = std::fma(p, r, 1.f);
  const int32_t exponent = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 127]
  return p * std::bit_cast<float>(exponent);
}

// erf(x), absolute error below 4e-7. erf(x) = x P(x^2) / Q(x^2) with P of degree 5 and Q of
// degree 5 (Q(0) = 1), fitted for this project by minimising the largest error on [0, 4] (in
// double precision, iteratively reweighted least squares); float32 evaluation adds the rest.
// Beyond |x| = 4, erf is 1 to within 2e-8: the input is clamped there.
TNT_MM_ALWAYS_INLINE float erf_fast(float x) {
  x = std::fmin(std::fmax(x, -4.f), 4.f);
  const float s = x * x;
  float p = 1.974629185e-06f;
  p = std::fma(p, s, 2.880152606e-04f);
  p = std::fma(p, s, 4.003345966e-03f);
  p = std::fma(p, s, 5.346658826e-02f);
  p = std::fma(p, s, 1.962446719e-01f);
  p = std::fma(p, s, 1.128378987e+00f);
  float q = 3.747735900e-05f;
  q = std::fma(q, s, 1.216248609e-03f);
  q = std::fma(q, s, 1.544387452e-02f);
  q = std::fma(q, s, 1.164743453e-01f);
  q = std::fma(q, s, 5.072484612e-01f);
  q = std::fma(q, s, 1.f);
  return x * p / q;
}

}  // namespace tnt_mm
