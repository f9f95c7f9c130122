// Style terms (1/C^2) |Ga - Gx|_F^2, G = N N^T / HW, from the channel-normalised maps that
// phase 1 (fused_distance.h) leaves in a position-major scratch ([count][HW][C_pad], channels
// zero-padded). Two forms, chosen per layer:
//
// * channel form: the outer-product (GEMM micro-kernel) formulation. For a block of 4 rows x
//   2 vectors of columns of G, each position p adds a[p, i] * a[p, j..j+2V) into register
//   accumulators that hold Gram entries directly. Positions are walked in cache-sized chunks;
//   between chunks the block accumulators rest in a per-thread buffer (never returned). Only
//   blocks touching the upper triangle are computed (G is symmetric). Ga and Gx are accumulated
//   separately with FMAs and subtracted at the end, as the reference does, so equal maps give
//   exactly 0. A triplet reads each `a` row once for both comparisons.
// * position form (HW <= 16 and HW < C: 3x3 or 2x2 maps of wide layers): with P = N N^T over
//   positions ([HW, HW]) and Q = Na Nx^T, |Ga - Gx|_F^2 HW^2 = |Pa|^2 + |Px|^2 - 2 |Q|^2,
//   accumulated in float64 (float products are exact in double): C*HW^2 work instead of C^2*HW.
//
// This file is compiled with FMA contraction (csrc/gram_difference_cpu.cpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/cpu/fused_distance.h"

namespace perceptual_fast {
namespace PF_CPU_ISA {
namespace cpu {

typedef float gram_vector __attribute__((vector_size(kLanes * sizeof(float))));

constexpr int64_t kPositionFormMaxHW = 16;
constexpr int kBlockRows = 4;  // rows of G per register block; columns: 2 vectors (kChannelPad)
constexpr int64_t kChunkBytes = 256 * 1024;  // positions per chunk: this many bytes of scratch rows

inline gram_vector load_gram_vector(const float* p) {
  gram_vector v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store_gram_vector(float* p, gram_vector v) { std::memcpy(p, &v, sizeof v); }

// acc[k][i][j] += sum over positions [p0, p1) of x_k[p, i] x_k[p, j] for the block of rows
// [i0, i0 + 4) and columns [j0, j0 + kChannelPad).
template <int kCount>
inline void gram_block(const float* const* maps, int64_t c_pad, int64_t p0, int64_t p1, int64_t i0, int64_t j0,
                       float* acc) {
  gram_vector g[kCount][kBlockRows][2];
  for (int k = 0; k < kCount; ++k)
    for (int r = 0; r < kBlockRows; ++r)
      for (int v = 0; v < 2; ++v) g[k][r][v] = load_gram_vector(acc + (k * c_pad + i0 + r) * c_pad + j0 + v * kLanes);
  for (int64_t p = p0; p < p1; ++p) {
    for (int k = 0; k < kCount; ++k) {
      const float* row = maps[k] + p * c_pad;
      const gram_vector col0 = load_gram_vector(row + j0);
      const gram_vector col1 = load_gram_vector(row + j0 + kLanes);
      for (int r = 0; r < kBlockRows; ++r) {
        const float x = row[i0 + r];
        g[k][r][0] += x * col0;
        g[k][r][1] += x * col1;
      }
    }
  }
  for (int k = 0; k < kCount; ++k)
    for (int r = 0; r < kBlockRows; ++r)
      for (int v = 0; v < 2; ++v) store_gram_vector(acc + (k * c_pad + i0 + r) * c_pad + j0 + v * kLanes, g[k][r][v]);
}

// sums[q] = |Ga - Gx_q|_F^2 * HW^2; `acc` is per-thread scratch for [count][C_pad][C_pad].
template <int kCount>
void channel_form(const float* const* maps, int64_t channels, int64_t hw, int64_t c_pad, std::vector<float>& acc,
                  double* sums) {
  acc.assign(static_cast<size_t>(kCount * c_pad * c_pad), 0.f);
  const int64_t chunk = std::max<int64_t>(1, kChunkBytes / (kCount * c_pad * static_cast<int64_t>(sizeof(float))));
  for (int64_t p0 = 0; p0 < hw; p0 += chunk) {
    const int64_t p1 = std::min(hw, p0 + chunk);
    for (int64_t i0 = 0; i0 < channels; i0 += kBlockRows) {
      // Column blocks that reach the diagonal or beyond (j + kChannelPad > i0).
      for (int64_t j0 = i0 / kChannelPad * kChannelPad; j0 < c_pad; j0 += kChannelPad)
        gram_block<kCount>(maps, c_pad, p0, p1, i0, j0, acc.data());
    }
  }
  // Upper triangle twice, diagonal once; entries below the diagonal were computed but not used.
  for (int64_t i = 0; i < channels; ++i) {
    for (int64_t j = i; j < channels; ++j) {
      const double weight = j == i ? 1.0 : 2.0;
      const double ga = acc[i * c_pad + j];
      for (int k = 1; k < kCount; ++k) {
        const double d = ga - static_cast<double>(acc[(k * c_pad + i) * c_pad + j]);
        sums[k - 1] += weight * d * d;
      }
    }
  }
}

// sums[q] = |Ga - Gx_q|_F^2 * HW^2 by the position form; P/Q accumulators live in `work`.
inline void position_form(const float* const* maps, int count, int64_t channels, int64_t hw, int64_t c_pad,
                          std::vector<double>& work, double* sums) {
  auto dot = [&](const float* x, const float* y) {
    double s = 0.0;
    for (int64_t c = 0; c < channels; ++c) s += static_cast<double>(x[c]) * y[c];
    return s;
  };
  double pa = 0.0;
  work.assign(static_cast<size_t>(hw * hw), 0.0);
  for (int64_t p = 0; p < hw; ++p)
    for (int64_t q = 0; q < hw; ++q) {
      const double v = dot(maps[0] + p * c_pad, maps[0] + q * c_pad);
      pa += v * v;
    }
  for (int k = 1; k < count; ++k) {
    double px = 0.0, qx = 0.0;
    for (int64_t p = 0; p < hw; ++p)
      for (int64_t q = 0; q < hw; ++q) {
        const double v = dot(maps[k] + p * c_pad, maps[k] + q * c_pad);
        const double u = dot(maps[0] + p * c_pad, maps[k] + q * c_pad);
        px += v * v;
        qx += u * u;
      }
    sums[k - 1] = pa + px - 2.0 * qx;
  }
}

}  // namespace cpu
}  // namespace PF_CPU_ISA
}  // namespace perceptual_fast
