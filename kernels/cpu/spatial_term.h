// The per-layer `spatial` / `lpips` term of DESIGN.md section 3, for one tile of positions:
//
//   sum over positions p in the tile of  sum_c w_c (y0[c,p] / n0[p] - y1[c,p] / n1[p])^2,
//   n[p] = sqrt(sum_c y[c,p]^2) + 1e-10   (LPIPS: eps outside the sqrt)
//
// Two passes over the tile: the first accumulates the channel norms, the second the weighted
// squared difference of the normalised vectors. The tile is sized to stay in L1/L2, so the
// second pass reads from cache and each feature element comes from memory once. Computing the
// difference of normalised values (rather than expanding the square into a0/n0^2 + a1/n1^2 -
// 2 s01/(n0 n1)) keeps full relative accuracy when x0 and x1 are nearly equal.
//
// Pure math on raw float pointers: no Python, no torch. The launchers live in csrc/.
#pragma once

#include <cmath>
#include <cstdint>

namespace perceptual_fast {
namespace cpu {

constexpr float kNormEps = 1e-10f;

// Positions per tile in the planar (NCHW) layout: 3 float arrays of this size live on the stack.
constexpr int64_t kPlanarTile = 256;

// Planar layout: for a fixed channel, the positions of the tile are contiguous (stride 1), so
// the inner loops run over positions and vectorise. `weight` is null for the unweighted term.
template <bool kWeighted>
inline double spatial_tile_planar(const float* __restrict y0, const float* __restrict y1,
                                  int64_t stride_c, int64_t channels, int64_t tile,
                                  const float* __restrict weight) {
  float inv0[kPlanarTile];
  float inv1[kPlanarTile];
  float acc[kPlanarTile];
  for (int64_t t = 0; t < tile; ++t) {
    inv0[t] = 0.f;
    inv1[t] = 0.f;
    acc[t] = 0.f;
  }
  for (int64_t c = 0; c < channels; ++c) {
    const float* a = y0 + c * stride_c;
    const float* b = y1 + c * stride_c;
#pragma omp simd
    for (int64_t t = 0; t < tile; ++t) {
      inv0[t] += a[t] * a[t];
      inv1[t] += b[t] * b[t];
    }
  }
#pragma omp simd
  for (int64_t t = 0; t < tile; ++t) {
    inv0[t] = 1.f / (std::sqrt(inv0[t]) + kNormEps);
    inv1[t] = 1.f / (std::sqrt(inv1[t]) + kNormEps);
  }
  for (int64_t c = 0; c < channels; ++c) {
    const float* a = y0 + c * stride_c;
    const float* b = y1 + c * stride_c;
    const float wc = kWeighted ? weight[c] : 1.f;
#pragma omp simd
    for (int64_t t = 0; t < tile; ++t) {
      const float d = a[t] * inv0[t] - b[t] * inv1[t];
      acc[t] += wc * d * d;
    }
  }
  double total = 0.0;
  for (int64_t t = 0; t < tile; ++t) total += acc[t];
  return total;
}

// Interleaved layout (channels_last): the channels of one position are contiguous, so the inner
// loops run over channels and vectorise; each position's vector is in L1 for its second pass.
template <bool kWeighted>
inline double spatial_tile_interleaved(const float* __restrict y0, const float* __restrict y1,
                                       int64_t stride_p, int64_t channels, int64_t tile,
                                       const float* __restrict weight) {
  double total = 0.0;
  for (int64_t t = 0; t < tile; ++t) {
    const float* a = y0 + t * stride_p;
    const float* b = y1 + t * stride_p;
    float s0 = 0.f, s1 = 0.f;
#pragma omp simd reduction(+ : s0, s1)
    for (int64_t c = 0; c < channels; ++c) {
      s0 += a[c] * a[c];
      s1 += b[c] * b[c];
    }
    const float i0 = 1.f / (std::sqrt(s0) + kNormEps);
    const float i1 = 1.f / (std::sqrt(s1) + kNormEps);
    float acc = 0.f;
#pragma omp simd reduction(+ : acc)
    for (int64_t c = 0; c < channels; ++c) {
      const float d = a[c] * i0 - b[c] * i1;
      acc += (kWeighted ? weight[c] : 1.f) * d * d;
    }
    total += acc;
  }
  return total;
}

}  // namespace cpu
}  // namespace perceptual_fast
