// Attention over the 16 words of one patch and one head, forward and backward, in registers/L1.
// Shared by the word-attention op (word_attention.cpp) and the fused inner transformer
// (inner_transformer.cpp). Every matrix is addressed by a row pointer and a row stride, so that
// q, k and v are read in place from the projection that wrote them.
#pragma once

#include <cmath>
#include <cstdint>

#include "fast_math.h"

namespace tnt_mm {

constexpr int kWords = 16;  // a 16 x 16 patch cut by the stride-4 word conv

// Layout: every 16-wide vector holds one value per word, so that the softmax over the keys is
// an elementwise max / exp / sum over 16 vectors instead of a horizontal reduction per row.
// "Column" arrays col[j][i] hold the entry (query i, key j) with the queries as lanes, "row"
// arrays row[i][j] hold it with the keys as lanes.

// Softmax over the keys, unnormalised, in column layout: scores[j][i] becomes
// exp(scores[j][i] - top[i]) with top[i] = max_j scores[j][i], and inv_total[i] 1 / sum_j of
// those.
inline void exp_columns(float (&scores)[kWords][kWords], float (&top)[kWords],
                        float (&inv_total)[kWords]) {
#pragma omp simd
  for (int i = 0; i < kWords; ++i) top[i] = scores[0][i], inv_total[i] = 0.f;
  for (int j = 1; j < kWords; ++j) {
#pragma omp simd
    for (int i = 0; i < kWords; ++i) top[i] = scores[j][i] > top[i] ? scores[j][i] : top[i];
  }
  for (int j = 0; j < kWords; ++j) {
#pragma omp simd
    for (int i = 0; i < kWords; ++i) {
      scores[j][i] = exp_fast(scores[j][i] - top[i]);
      inv_total[i] += scores[j][i];
    }
  }
#pragma omp simd
  for (int i = 0; i < kWords; ++i) inv_total[i] = 1.f / inv_total[i];
}

// out = softmax(scale q k^T) v for one (patch, head); q, k rows stride `qk_stride`, v rows
// `v_stride`, out rows `out_stride`.
template <int kDim>
inline void head_attention(const float* __restrict q, const float* __restrict k,
                           int64_t qk_stride, const float* __restrict v, int64_t v_stride,
                           float* __restrict out, int64_t out_stride, float scale) {
  alignas(64) float qt[kDim][kWords];  // q transposed and pre-scaled: queries as lanes
  for (int i = 0; i < kWords; ++i) {
    for (int d = 0; d < kDim; ++d) qt[d][i] = q[i * qk_stride + d] * scale;
  }
  alignas(64) float prob[kWords][kWords];  // column layout
  for (int j = 0; j < kWords; ++j) {
    const float* kj = k + j * qk_stride;
#pragma omp simd
    for (int i = 0; i < kWords; ++i) {
      float s = 0.f;
      for (int d = 0; d < kDim; ++d) s += qt[d][i] * kj[d];
      prob[j][i] = s;
    }
  }
  alignas(64) float top[kWords], inv_total[kWords];
  exp_columns(prob, top, inv_total);
  for (int d = 0; d < kDim; ++d) {
    alignas(64) float acc[kWords];
#pragma omp simd
    for (int i = 0; i < kWords; ++i) acc[i] = 0.f;
    for (int j = 0; j < kWords; ++j) {
      const float vjd = v[j * v_stride + d];
#pragma omp simd
      for (int i = 0; i < kWords; ++i) acc[i] += prob[j][i] * vjd;
    }
    for (int i = 0; i < kWords; ++i) out[i * out_stride + d] = acc[i] * inv_total[i];
  }
}

// Backward of one (patch, head). With P = softmax(scale q k^T), O = P v and dO given:
//   dV = P^T dO,  dP = dO v^T,  dS = P * (dP - rowsum(P * dP)),  dQ = scale dS k,  dK = scale dS^T q.
// P is recomputed from q and k, in column layout for dQ and in row layout for dK and dV (a
// second product is cheaper than transposing). dq and dk rows have stride `dqk_stride`, dv
// rows `dv_stride`; all three are overwritten.
template <int kDim>
inline void head_attention_backward(const float* __restrict q, const float* __restrict k,
                                    int64_t qk_stride, const float* __restrict v,
                                    int64_t v_stride, const float* __restrict dout,
                                    int64_t dout_stride, float scale, float* __restrict dq,
                                    float* __restrict dk, int64_t dqk_stride,
                                    float* __restrict dv, int64_t dv_stride) {
  // transposed copies: queries (q, dO) or keys (k, v) as lanes; q pre-scaled
  alignas(64) float qt[kDim][kWords], gt[kDim][kWords], kt[kDim][kWords], vt[kDim][kWords];
  for (int i = 0; i < kWords; ++i) {
    for (int d = 0; d < kDim; ++d) {
      qt[d][i] = q[i * qk_stride + d] * scale;
      gt[d][i] = dout[i * dout_stride + d];
      kt[d][i] = k[i * qk_stride + d];
      vt[d][i] = v[i * v_stride + d];
    }
  }
  // column layout: P and dP, then dS
  alignas(64) float prob[kWords][kWords], dscore[kWords][kWords];
  for (int j = 0; j < kWords; ++j) {
    const float* kj = k + j * qk_stride;
    const float* vj = v + j * v_stride;
#pragma omp simd
    for (int i = 0; i < kWords; ++i) {
      float s = 0.f, g = 0.f;
      for (int d = 0; d < kDim; ++d) {
        s += qt[d][i] * kj[d];
        g += gt[d][i] * vj[d];
      }
      prob[j][i] = s;
      dscore[j][i] = g;
    }
  }
  alignas(64) float top[kWords], inv_total[kWords], delta[kWords];
  exp_columns(prob, top, inv_total);
#pragma omp simd
  for (int i = 0; i < kWords; ++i) delta[i] = 0.f;
  for (int j = 0; j < kWords; ++j) {
#pragma omp simd
    for (int i = 0; i < kWords; ++i) {
      prob[j][i] *= inv_total[i];
      delta[i] += prob[j][i] * dscore[j][i];
    }
  }
  for (int j = 0; j < kWords; ++j) {
#pragma omp simd
    for (int i = 0; i < kWords; ++i) dscore[j][i] = prob[j][i] * (dscore[j][i] - delta[i]);
  }
  // dQ_i = scale sum_j dS_ij k_j
  for (int d = 0; d < kDim; ++d) {
    alignas(64) float acc[kWords];
#pragma omp simd
    for (int i = 0; i < kWords; ++i) acc[i] = 0.f;
    for (int j = 0; j < kWords; ++j) {
      const float kjd = kt[d][j] * scale;
#pragma omp simd
      for (int i = 0; i < kWords; ++i) acc[i] += dscore[j][i] * kjd;
    }
    for (int i = 0; i < kWords; ++i) dq[i * dqk_stride + d] = acc[i];
  }
  // row layout (keys as lanes), recomputed: P_i. = exp(s_i. - top_i) / total_i and
  // dS_i. = P_i. * (dP_i. - delta_i); they reuse the column arrays
  for (int i = 0; i < kWords; ++i) {
    const float* qi = q + i * qk_stride;
    const float* gi = dout + i * dout_stride;
    const float shift = top[i], norm = inv_total[i], di = delta[i];
#pragma omp simd
    for (int j = 0; j < kWords; ++j) {
      float s = 0.f, g = 0.f;
      for (int d = 0; d < kDim; ++d) {
        s += qi[d] * kt[d][j];
        g += gi[d] * vt[d][j];
      }
      const float p = exp_fast(s * scale - shift) * norm;
      prob[i][j] = p;
      dscore[i][j] = p * (g - di);
    }
  }
  // dK_j = scale sum_i dS_ij q_i and dV_j = sum_i P_ij dO_i
  for (int d = 0; d < kDim; ++d) {
    alignas(64) float gk[kWords], gv[kWords];
#pragma omp simd
    for (int j = 0; j < kWords; ++j) gk[j] = 0.f, gv[j] = 0.f;
    for (int i = 0; i < kWords; ++i) {
      const float qid = qt[d][i], gid = gt[d][i];  // qt holds q * scale
#pragma omp simd
      for (int j = 0; j < kWords; ++j) {
        gk[j] += dscore[i][j] * qid;
        gv[j] += prob[i][j] * gid;
      }
    }
    for (int j = 0; j < kWords; ++j) {
      dk[j * dqk_stride + d] = gk[j];
      dv[j * dv_stride + d] = gv[j];
    }
  }
}

}  // namespace tnt_mm
