// The fused distance op (docs/design.md, section 8) for one (sample, layer) work item on the CPU:
// every requested distance (spatial, lpips, meanpool, style, dists) between a reference map `a` and one
// or two other maps (`b`, and `c` for a triplet), each either [C, HW] planar (NCHW, positions
// contiguous) or [HW, C] (channels_last), float32 or bfloat16, accumulated in float32/float64.
//
// Phase 1 walks the positions in tiles small enough to stay in L1/L2 and reads each feature
// element from memory once: per-position channel norms, the spatial / lpips terms (difference of
// normalised vectors, so identical inputs give exactly 0), per-channel sums for meanpool, and --
// only when style is requested -- the normalised maps into a per-thread scratch buffer; for dists,
// each channel's sums of y and y^2 per map and of (a - x)^2 per comparison, in double.
// Phase 2 (style, kernels/cpu/gram_difference.h) works from that scratch.
//
// This file is compiled without FMA contraction: a * inv_a - b * inv_b must be exactly 0 when
// the two maps are equal, as in the reference, so identical images tie exactly in 2AFC.
//
// Pure math on raw pointers: no Python, no torch. The launcher is csrc/fused_distance_cpu.cpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/cpu/isa.h"
#include "kernels/distance_slots.h"

namespace perceptual_fast {
namespace PF_CPU_ISA {
namespace cpu {

constexpr float kNormEps = 1e-10f;
constexpr double kDistsC1 = 1e-6, kDistsC2 = 1e-6;  // DISTS's stabilising constants

// float lanes of the variant's vectors: AVX-512, AVX2, else SSE / NEON-sized
#if defined(__AVX512F__)
constexpr int kLanes = 16;
#elif defined(__AVX__)
constexpr int kLanes = 8;
#else
constexpr int kLanes = 4;
#endif

// The normalised scratch is position-major ([HW][C_pad], channels contiguous) with channels
// zero-padded to whole vector pairs, so the Gram stage (gram_difference.h) runs whole register
// blocks; padded channels contribute 0 to every Gram entry.
constexpr int64_t kChannelPad = 2 * kLanes;

inline float to_float(float v) { return v; }
inline float to_float(uint16_t bf16) {  // bfloat16 is the upper half of a float32
  const uint32_t bits = static_cast<uint32_t>(bf16) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// One work item: maps[0] is the reference, maps[1..count-1] the images compared with it.
template <typename T>
struct WorkItem {
  const T* maps[3];
  int count;          // 2 (pair) or 3 (triplet)
  int64_t channels;   // C
  int64_t positions;  // HW
  const float* lin;   // [C] lpips channel weights, or null
  const float* dists;  // [2, C] DISTS weights (alpha; beta), or null
  bool channels_last;  // maps are [HW, C] (channels contiguous) instead of [C, HW]
};

// Per-thread buffers, grown to the largest layer and reused across work items.
struct Scratch {
  std::vector<float> normalised;  // [count][HW][C_pad] when style is requested
  std::vector<double> channel_sums;  // [count][C]
  std::vector<double> moments;  // dists: [count][C] sums, [count][C] sums of squares, [count - 1][C] of (a - x)^2
  std::vector<float> inv_norm;  // [count][tile]
  std::vector<float> acc;  // [2 * tile]
  std::vector<float> channel_acc;  // [count - 1][C] channels_last: squared differences summed over a tile's positions
};

// Positions per phase-1 tile: about 64 KiB of one map, at least one vector, at most 256.
inline int64_t phase1_tile(int64_t channels) {
  return std::max<int64_t>(kLanes, std::min<int64_t>(256, round_up(16384 / std::max<int64_t>(channels, 1), kLanes)));
}

// Running sums of phase 1 over the tiles of one work item.
struct Phase1Sums {
  double spatial[2] = {0.0, 0.0};
  double lpips[2] = {0.0, 0.0};
};

// One tile of positions [first, first + n) of planar (NCHW) maps: the inner loops run over the
// tile's contiguous positions.
template <typename T>
void tile_planar(const WorkItem<T>& w, int64_t first, int64_t n, int64_t tile, bool want_terms, bool want_meanpool,
                 bool want_style, Scratch& s, Phase1Sums& sums) {
  const int64_t C = w.channels, HW = w.positions, c_pad = round_up(C, kChannelPad);
  for (int k = 0; k < w.count; ++k) {
    float* inv = s.inv_norm.data() + k * tile;
    std::fill(inv, inv + n, 0.f);
    for (int64_t c = 0; c < C; ++c) {
      const T* row = w.maps[k] + c * HW + first;
#pragma omp simd
      for (int64_t p = 0; p < n; ++p) {
        const float v = to_float(row[p]);
        inv[p] += v * v;
      }
    }
#pragma omp simd
    for (int64_t p = 0; p < n; ++p) inv[p] = 1.f / (std::sqrt(inv[p]) + kNormEps);
    if (want_meanpool) {
      double* channel_sums = s.channel_sums.data() + k * C;
      for (int64_t c = 0; c < C; ++c) {
        const T* row = w.maps[k] + c * HW + first;
        float t = 0.f;
#pragma omp simd reduction(+ : t)
        for (int64_t p = 0; p < n; ++p) t += to_float(row[p]);
        channel_sums[c] += t;
      }
    }
    if (want_style) {  // transposed into the position-major scratch (it stays in cache)
      float* out = s.normalised.data() + (k * HW + first) * c_pad;
      for (int64_t c = 0; c < C; ++c) {
        const T* row = w.maps[k] + c * HW + first;
        for (int64_t p = 0; p < n; ++p) out[p * c_pad + c] = to_float(row[p]) * inv[p];
      }
    }
  }
  if (!want_terms) return;
  const float* inv_a = s.inv_norm.data();
  for (int q = 0; q + 1 < w.count; ++q) {
    const float* inv_x = s.inv_norm.data() + (q + 1) * tile;
    float* acc = s.acc.data();
    float* acc_w = s.acc.data() + tile;
    std::fill(acc, acc + 2 * tile, 0.f);
    for (int64_t c = 0; c < C; ++c) {
      const T* ra = w.maps[0] + c * HW + first;
      const T* rx = w.maps[q + 1] + c * HW + first;
      const float wc = w.lin != nullptr ? w.lin[c] : 0.f;
#pragma omp simd
      for (int64_t p = 0; p < n; ++p) {
        const float d = to_float(ra[p]) * inv_a[p] - to_float(rx[p]) * inv_x[p];
        acc[p] += d * d;
        acc_w[p] += wc * d * d;
      }
    }
    for (int64_t p = 0; p < n; ++p) {
      sums.spatial[q] += acc[p];
      sums.lpips[q] += acc_w[p];
    }
  }
}

// The sum of a vector's lanes as a pairwise tree: log2(kLanes) vector steps. A reduction loop
// would leave the final sum to the compiler, which (FP order kept: no -ffast-math) adds the lanes
// one by one, a chain of kLanes dependent additions per position.
inline float lane_sum(float (&part)[kLanes]) {
  for (int width = kLanes / 2; width > 0; width /= 2) {
#pragma omp simd
    for (int l = 0; l < width; ++l) part[l] += part[l + width];
  }
  return part[0];
}

// sum_c row[c]^2 of one position's C contiguous channels: lane-wise partial sums, then lane_sum.
// The order of the additions depends on C only, so equal rows give equal norms wherever they lie.
template <typename T>
inline float squared_norm(const T* row, int64_t C) {
  float part[kLanes] = {};
  const int64_t whole = C / kLanes * kLanes;
  for (int64_t c = 0; c < whole; c += kLanes) {
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) part[l] += to_float(row[c + l]) * to_float(row[c + l]);
  }
  for (int64_t c = whole; c < C; ++c) part[c - whole] += to_float(row[c]) * to_float(row[c]);
  return lane_sum(part);
}

// Channels per register block of the channels_last difference loop: 4 vectors per comparison.
constexpr int64_t kDiffBlock = 4 * kLanes;

// acc[q][c - c0] = sum over the tile's positions of (a ia - x_q ix)^2 for channels [c0, c0 + kDiffBlock)
// of comparison q < kPairs: the block's accumulators stay in registers across the positions (a
// per-channel array in memory would put a store-to-load round trip in every addition), and a triplet
// reads each `a` row once for both comparisons.
template <int kPairs, typename T>
inline void squared_differences_block(const WorkItem<T>& w, int64_t first, int64_t n, int64_t c0, const float* inv,
                                      int64_t tile, float* acc) {
  const int64_t C = w.channels;
  float sums[kPairs][kDiffBlock] = {};
  for (int64_t p = 0; p < n; ++p) {
    const T* ra = w.maps[0] + (first + p) * C + c0;
    const float ia = inv[p];
    for (int q = 0; q < kPairs; ++q) {
      const T* rx = w.maps[q + 1] + (first + p) * C + c0;
      const float ix = inv[(q + 1) * tile + p];
#pragma omp simd
      for (int64_t l = 0; l < kDiffBlock; ++l) {
        const float d = to_float(ra[l]) * ia - to_float(rx[l]) * ix;
        sums[q][l] += d * d;
      }
    }
  }
  for (int q = 0; q < kPairs; ++q) std::copy(sums[q], sums[q] + kDiffBlock, acc + q * C + c0);
}

// One tile of channels_last maps (each position's C channels contiguous): the inner loops run
// over channels, and the style scratch is written in its own (position-major) order.
//
// Each map's norm at each position is a sum over channels: lane-wise partials and one pairwise
// lane tree per position (squared_norm). Their inverses are then computed in one loop across the
// tile's positions, keeping the square root and the division out of each position's dependency
// chain. The spatial / lpips terms need no per-position sum at all: the squared normalised
// differences are accumulated per channel over the tile's positions, in registers a block of
// channels at a time, and the channel sums (weighted by lin for lpips) are taken once per tile.
template <typename T>
void tile_interleaved(const WorkItem<T>& w, int64_t first, int64_t n, int64_t tile, bool want_spatial, bool want_lpips,
                      bool want_meanpool, bool want_style, Scratch& s, Phase1Sums& sums) {
  const int64_t C = w.channels, HW = w.positions, c_pad = round_up(C, kChannelPad);
  for (int k = 0; k < w.count; ++k) {
    float* inv = s.inv_norm.data() + k * tile;
    for (int64_t p = 0; p < n; ++p) inv[p] = squared_norm(w.maps[k] + (first + p) * C, C);
#pragma omp simd
    for (int64_t p = 0; p < n; ++p) inv[p] = 1.f / (std::sqrt(inv[p]) + kNormEps);
  }
  if (want_meanpool || want_style) {
    float* tile_sums = s.acc.data();  // [count][C] float partial channel sums of this tile
    if (want_meanpool) std::fill(tile_sums, tile_sums + w.count * C, 0.f);
    for (int64_t p = 0; p < n; ++p) {
      for (int k = 0; k < w.count; ++k) {
        const T* row = w.maps[k] + (first + p) * C;
        if (want_meanpool) {
          float* t = tile_sums + k * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) t[c] += to_float(row[c]);
        }
        if (want_style) {
          const float inv = s.inv_norm[k * tile + p];
          float* out = s.normalised.data() + (k * HW + first + p) * c_pad;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) out[c] = to_float(row[c]) * inv;
        }
      }
    }
    if (want_meanpool) {
      for (int k = 0; k < w.count; ++k)
        for (int64_t c = 0; c < C; ++c) s.channel_sums[k * C + c] += tile_sums[k * C + c];
    }
  }
  if (!want_spatial && !want_lpips) return;
  const float* inv = s.inv_norm.data();
  float* acc = s.channel_acc.data();  // [count - 1][C] sum over the tile's positions of the squared difference
  const int64_t blocked = C / kDiffBlock * kDiffBlock;
  for (int64_t c0 = 0; c0 < blocked; c0 += kDiffBlock) {
    if (w.count == 3) {
      squared_differences_block<2>(w, first, n, c0, inv, tile, acc);
    } else {
      squared_differences_block<1>(w, first, n, c0, inv, tile, acc);
    }
  }
  for (int q = 0; q + 1 < w.count; ++q) {
    // channels past the last whole block (C not a multiple of kDiffBlock), accumulated in memory
    float* acc_q = acc + q * C;
    const float* inv_x = inv + (q + 1) * tile;
    if (blocked < C) {
      std::fill(acc_q + blocked, acc_q + C, 0.f);
      for (int64_t p = 0; p < n; ++p) {
        const T* ra = w.maps[0] + (first + p) * C;
        const T* rx = w.maps[q + 1] + (first + p) * C;
        const float ia = inv[p], ix = inv_x[p];
#pragma omp simd
        for (int64_t c = blocked; c < C; ++c) {
          const float d = to_float(ra[c]) * ia - to_float(rx[c]) * ix;
          acc_q[c] += d * d;
        }
      }
    }
    float spatial = 0.f, lpips = 0.f;
    if (want_spatial) {
#pragma omp simd reduction(+ : spatial)
      for (int64_t c = 0; c < C; ++c) spatial += acc_q[c];
    }
    if (want_lpips) {
#pragma omp simd reduction(+ : lpips)
      for (int64_t c = 0; c < C; ++c) lpips += w.lin[c] * acc_q[c];
    }
    sums.spatial[q] += spatial;
    sums.lpips[q] += lpips;
  }
}

// DISTS's moments of the tile [first, first + n): every channel's sum of y and of y^2 per map, and
// of (a - x)^2 per comparison, accumulated in double straight from the elements. Double, not float
// partials: a channel's variance is E[y^2] - E[y]^2, whose cancellation float sums would expose
// on flat image channels (the input tap, which carries an eighth of DISTS's weight). The squared
// difference, summed directly, makes equal maps give exactly 0.
template <typename T>
void dists_moments_tile(const WorkItem<T>& w, int64_t first, int64_t n, Scratch& s) {
  const int64_t C = w.channels, HW = w.positions;
  double* sum = s.moments.data();
  double* sq = sum + w.count * C;
  double* diff_sq = sq + w.count * C;
  if (w.channels_last) {
    for (int64_t p = first; p < first + n; ++p) {
      for (int k = 0; k < w.count; ++k) {
        const T* row = w.maps[k] + p * C;
        double* sk = sum + k * C;
        double* qk = sq + k * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const double v = to_float(row[c]);
          sk[c] += v;
          qk[c] += v * v;
        }
      }
      const T* ra = w.maps[0] + p * C;
      for (int q = 0; q + 1 < w.count; ++q) {
        const T* rx = w.maps[q + 1] + p * C;
        double* dq = diff_sq + q * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const double d = static_cast<double>(to_float(ra[c])) - static_cast<double>(to_float(rx[c]));
          dq[c] += d * d;
        }
      }
    }
    return;
  }
  for (int64_t c = 0; c < C; ++c) {
    for (int k = 0; k < w.count; ++k) {
      const T* row = w.maps[k] + c * HW + first;
      double t = 0.0, t2 = 0.0;
#pragma omp simd reduction(+ : t, t2)
      for (int64_t p = 0; p < n; ++p) {
        const double v = to_float(row[p]);
        t += v;
        t2 += v * v;
      }
      sum[k * C + c] += t;
      sq[k * C + c] += t2;
    }
    const T* ra = w.maps[0] + c * HW + first;
    for (int q = 0; q + 1 < w.count; ++q) {
      const T* rx = w.maps[q + 1] + c * HW + first;
      double t = 0.0;
#pragma omp simd reduction(+ : t)
      for (int64_t p = 0; p < n; ++p) {
        const double d = static_cast<double>(to_float(ra[p])) - static_cast<double>(to_float(rx[p]));
        t += d * d;
      }
      diff_sq[q * C + c] += t;
    }
  }
}

// DISTS's layer term of comparison q from the moments: sum_c alpha (1 - S1) + beta (1 - S2), with
// 1 - S1 = (ma - mx)^2 / (ma^2 + mx^2 + c1) and 1 - S2 = var(a - x) / (va + vx + c2) (the
// difference form of docs/design.md: no cancellation near 1, exactly 0 for equal maps).
template <typename T>
double dists_term(const WorkItem<T>& w, const Scratch& s, int q) {
  const int64_t C = w.channels;
  const double hw = static_cast<double>(w.positions);
  const double* sum = s.moments.data();
  const double* sq = sum + w.count * C;
  const double* diff_sq = sq + w.count * C + q * C;
  const double* sum_x = sum + (q + 1) * C;
  const double* sq_x = sq + (q + 1) * C;
  double total = 0.0;
  for (int64_t c = 0; c < C; ++c) {
    const double ma = sum[c] / hw, mx = sum_x[c] / hw, dm = ma - mx;
    const double va = std::max(0.0, sq[c] / hw - ma * ma), vx = std::max(0.0, sq_x[c] / hw - mx * mx);
    const double vd = std::max(0.0, diff_sq[c] / hw - dm * dm);
    total += static_cast<double>(w.dists[c]) * (dm * dm / (ma * ma + mx * mx + kDistsC1)) +
             static_cast<double>(w.dists[C + c]) * (vd / (va + vx + kDistsC2));
  }
  return total;
}

// results[d * 2 + q]: distance d of comparison q (a vs b: q = 0, a vs c: q = 1).
template <typename T>
void phase1(const WorkItem<T>& w, bool want_spatial, bool want_lpips, bool want_meanpool, bool want_style,
            bool want_dists, Scratch& s, double* results) {
  const int64_t C = w.channels, HW = w.positions;
  const int64_t tile = phase1_tile(C);
  const int64_t c_pad = round_up(C, kChannelPad);
  const bool want_terms = want_spatial || want_lpips;
  s.inv_norm.assign(static_cast<size_t>(w.count * tile), 0.f);
  s.acc.assign(static_cast<size_t>(std::max<int64_t>(2 * tile, w.count * C)), 0.f);
  if (want_meanpool) s.channel_sums.assign(static_cast<size_t>(w.count * C), 0.0);
  if (want_style) s.normalised.assign(static_cast<size_t>(w.count * HW * c_pad), 0.f);  // zero padding
  if (want_dists) s.moments.assign(static_cast<size_t>((3 * w.count - 1) * C), 0.0);
  if (w.channels_last && want_terms) s.channel_acc.resize(static_cast<size_t>((w.count - 1) * C));
  const bool want_pointwise = want_terms || want_meanpool || want_style;
  Phase1Sums sums;
  for (int64_t first = 0; first < HW; first += tile) {
    const int64_t n = std::min(tile, HW - first);
    if (want_dists) dists_moments_tile(w, first, n, s);  // the tile is read again below while in cache
    if (!want_pointwise) continue;
    if (w.channels_last) {
      tile_interleaved(w, first, n, tile, want_spatial, want_lpips, want_meanpool, want_style, s, sums);
    } else {
      tile_planar(w, first, n, tile, want_terms, want_meanpool, want_style, s, sums);
    }
  }
  const double* spatial = sums.spatial;
  const double* lpips = sums.lpips;
  for (int q = 0; q + 1 < w.count; ++q) {
    results[kSpatial * 2 + q] = spatial[q] / static_cast<double>(HW);
    results[kLpips * 2 + q] = lpips[q] / static_cast<double>(HW);
    if (want_dists) results[kDists * 2 + q] = dists_term(w, s, q);
  }
  if (want_meanpool) {
    // n(m) = m / (|m| + eps) with m the channel means of the raw features.
    double scale[3];
    for (int k = 0; k < w.count; ++k) {
      const double* sums = s.channel_sums.data() + k * C;
      double sq = 0.0;
      for (int64_t c = 0; c < C; ++c) sq += (sums[c] / HW) * (sums[c] / HW);
      scale[k] = 1.0 / (static_cast<double>(HW) * (std::sqrt(sq) + kNormEps));
    }
    for (int q = 0; q + 1 < w.count; ++q) {
      const double* sa = s.channel_sums.data();
      const double* sx = s.channel_sums.data() + (q + 1) * C;
      double total = 0.0;
      for (int64_t c = 0; c < C; ++c) {
        const double d = sa[c] * scale[0] - sx[c] * scale[q + 1];
        total += d * d;
      }
      results[kMeanpool * 2 + q] = total / static_cast<double>(C);
    }
  }
}

}  // namespace cpu
}  // namespace PF_CPU_ISA
}  // namespace perceptual_fast
