// The backward of the fused distance op on the CPU, for one (sample, layer) work item: the gradient
// of the spatial, lpips and meanpool terms with respect to every map that needs it, from the maps
// alone (norms recomputed per position tile; no normalised map and no Gram matrix is stored).
//
// With y a map's channel vector at one position, n = |y|, s = n + eps and ŷ = y / s, a gradient a
// with respect to ŷ becomes, with respect to y,
//     dy = a / s - y (a . ŷ) / (n s)              (the second term 0 where n = 0, as the reference's
//                                                  safe norm has a zero gradient there)
// For spatial / lpips, term_q = (1/HW) sum_p sum_c w_qc (ŷ0_c - ŷq_c)^2 with w_qc = 1 or the lpips
// weight, so a = (2/HW) w_eff (ŷ0 - ŷq) for the reference map and minus that for map q, w_eff
// combining both terms' upstream gradients (g_spatial + g_lpips * lin_c). For meanpool the same
// normalisation rule applies to the channel means m (|m| + eps), and d/dy spreads d/dm / HW over
// every position. Style is differentiated outside this kernel.
//
// Pure math on raw pointers: no Python, no torch. The launcher is csrc/fused_distance_backward_cpu.cpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cpu/fused_distance.h"

namespace perceptual_fast {
namespace PF_CPU_ISA {
namespace cpu {

// One backward work item: the forward item, the gradient outputs (float32, the maps' layout, null
// where a map needs no gradient) and the upstream gradients of comparison q = 0, 1.
template <typename T>
struct GradItem {
  WorkItem<T> w;
  float* grads[3];
  float g_spatial[2];
  float g_lpips[2];
  float g_meanpool[2];
  bool terms;     // spatial or lpips requested
  bool meanpool;  // meanpool requested
};

// Per-thread buffers of the backward, grown to the largest layer and reused.
struct GradScratch {
  std::vector<double> channel_sums;  // [count][C]
  std::vector<float> spread;         // [count][C] meanpool gradient per position: d/dm / HW
  std::vector<float> weights;        // [2][C] (2/HW) w_eff per comparison
  std::vector<float> norm;           // [count][tile] |y|
  std::vector<float> inv;            // [count][tile] 1 / (|y| + eps)
  std::vector<float> dot;            // [count][tile] a . ŷ, then the coefficient of y (planar maps)
  std::vector<float> sink;           // where the gradient of a map that needs none goes (no branch in the
                                     // loops); also meanpool's partial channel sums
};

// s.spread[k * C + c] = d(meanpool terms)/d(channel mean c of map k) / HW.
template <typename T>
void meanpool_spread(const GradItem<T>& g, GradScratch& s) {
  const WorkItem<T>& w = g.w;
  const int64_t C = w.channels, HW = w.positions;
  s.channel_sums.assign(static_cast<size_t>(w.count * C), 0.0);
  for (int k = 0; k < w.count; ++k) {
    double* sums = s.channel_sums.data() + k * C;
    // float partial sums over chunks of positions (vectorised), added up in double, as the forward
    constexpr int64_t kChunk = 256;
    if (w.channels_last) {
      std::vector<float>& part = s.sink;  // [C]
      for (int64_t first = 0; first < HW; first += kChunk) {
        std::fill(part.begin(), part.begin() + C, 0.f);
        for (int64_t p = first; p < std::min(HW, first + kChunk); ++p) {
          const T* row = w.maps[k] + p * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) part[c] += to_float(row[c]);
        }
        for (int64_t c = 0; c < C; ++c) sums[c] += part[c];
      }
    } else {
      for (int64_t c = 0; c < C; ++c) {
        const T* row = w.maps[k] + c * HW;
        for (int64_t first = 0; first < HW; first += kChunk) {
          float t = 0.f;
#pragma omp simd reduction(+ : t)
          for (int64_t p = first; p < std::min(HW, first + kChunk); ++p) t += to_float(row[p]);
          sums[c] += t;
        }
      }
    }
  }
  std::vector<double> mean(static_cast<size_t>(w.count * C)), unit(static_cast<size_t>(w.count * C));
  std::vector<double> grad(static_cast<size_t>(w.count * C), 0.0);
  double norm[3], scale[3];
  for (int k = 0; k < w.count; ++k) {
    double sq = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      mean[k * C + c] = s.channel_sums[k * C + c] / static_cast<double>(HW);
      sq += mean[k * C + c] * mean[k * C + c];
    }
    norm[k] = std::sqrt(sq);
    scale[k] = 1.0 / (norm[k] + kNormEps);
    for (int64_t c = 0; c < C; ++c) unit[k * C + c] = mean[k * C + c] * scale[k];
  }
  for (int q = 0; q + 1 < w.count; ++q) {
    const double coef = 2.0 * g.g_meanpool[q] / static_cast<double>(C);
    for (int64_t c = 0; c < C; ++c) {
      const double d = coef * (unit[c] - unit[(q + 1) * C + c]);
      grad[c] += d;
      grad[(q + 1) * C + c] -= d;
    }
  }
  s.spread.assign(static_cast<size_t>(w.count * C), 0.f);
  for (int k = 0; k < w.count; ++k) {
    double along = 0.0;  // a . n̂
    for (int64_t c = 0; c < C; ++c) along += grad[k * C + c] * unit[k * C + c];
    const double radial = norm[k] > 0.0 ? scale[k] * along / norm[k] : 0.0;
    for (int64_t c = 0; c < C; ++c) {
      const double dm = scale[k] * grad[k * C + c] - mean[k * C + c] * radial;
      s.spread[k * C + c] = static_cast<float>(dm / static_cast<double>(HW));
    }
  }
}

// One tile of planar (NCHW) maps, positions [first, first + n): inner loops over the tile's
// contiguous positions. Count: 2 (pair) or 3 (triplet) maps.
template <int Count, typename T>
void grad_tile_planar(const GradItem<T>& g, int64_t first, int64_t n, int64_t tile, GradScratch& s) {
  const WorkItem<T>& w = g.w;
  const int64_t C = w.channels, HW = w.positions;
  float* norm = s.norm.data();
  float* inv = s.inv.data();
  float* coef = s.dot.data();
  if (g.terms) {
    std::fill(norm, norm + Count * tile, 0.f);
    std::fill(coef, coef + Count * tile, 0.f);
    for (int k = 0; k < Count; ++k)
      for (int64_t c = 0; c < C; ++c) {
        const T* row = w.maps[k] + c * HW + first;
        float* nk = norm + k * tile;
#pragma omp simd
        for (int64_t p = 0; p < n; ++p) nk[p] += to_float(row[p]) * to_float(row[p]);
      }
    for (int64_t i = 0; i < Count * tile; ++i) {
      norm[i] = std::sqrt(norm[i]);
      inv[i] = 1.f / (norm[i] + kNormEps);
    }
    // a . ŷ per map and position, a = w (ŷ0 - ŷq) for the reference and -w (ŷ0 - ŷq) for map q
    for (int64_t c = 0; c < C; ++c) {
      const T* r0 = w.maps[0] + c * HW + first;
      const T* r1 = w.maps[1] + c * HW + first;
      const T* r2 = w.maps[Count - 1] + c * HW + first;
      const float w1 = s.weights[c], w2 = Count == 3 ? s.weights[C + c] : 0.f;
#pragma omp simd
      for (int64_t p = 0; p < n; ++p) {
        const float y0 = to_float(r0[p]) * inv[p], y1 = to_float(r1[p]) * inv[tile + p];
        const float d1 = w1 * (y0 - y1);
        float a0 = d1;
        coef[tile + p] -= d1 * y1;
        if (Count == 3) {
          const float y2 = to_float(r2[p]) * inv[2 * tile + p];
          const float d2 = w2 * (y0 - y2);
          a0 += d2;
          coef[2 * tile + p] -= d2 * y2;
        }
        coef[p] += a0 * y0;
      }
    }
    // dy = a / s - y (a . ŷ) / (n s): the coefficient of y
    for (int64_t i = 0; i < Count * tile; ++i) coef[i] = norm[i] > 0.f ? inv[i] * coef[i] / norm[i] : 0.f;
  }
  for (int64_t c = 0; c < C; ++c) {
    const T* r0 = w.maps[0] + c * HW + first;
    const T* r1 = w.maps[1] + c * HW + first;
    const T* r2 = w.maps[Count - 1] + c * HW + first;
    const float w1 = g.terms ? s.weights[c] : 0.f, w2 = g.terms && Count == 3 ? s.weights[C + c] : 0.f;
    const float add0 = g.meanpool ? s.spread[c] : 0.f, add1 = g.meanpool ? s.spread[C + c] : 0.f;
    const float add2 = g.meanpool && Count == 3 ? s.spread[2 * C + c] : 0.f;
    float* o0 = g.grads[0] == nullptr ? s.sink.data() : g.grads[0] + c * HW + first;
    float* o1 = g.grads[1] == nullptr ? s.sink.data() : g.grads[1] + c * HW + first;
    float* o2 = Count == 3 && g.grads[2] != nullptr ? g.grads[2] + c * HW + first : s.sink.data();
    if (!g.terms) {  // meanpool alone: its gradient is the same at every position
      std::fill(o0, o0 + n, add0);
      std::fill(o1, o1 + n, add1);
      if (Count == 3) std::fill(o2, o2 + n, add2);
      continue;
    }
#pragma omp simd
    for (int64_t p = 0; p < n; ++p) {
      const float x0 = to_float(r0[p]), x1 = to_float(r1[p]);
      const float y0 = x0 * inv[p], y1 = x1 * inv[tile + p];
      const float d1 = w1 * (y0 - y1);
      float a0 = d1;
      o1[p] = add1 + inv[tile + p] * -d1 - x1 * coef[tile + p];
      if (Count == 3) {
        const float x2 = to_float(r2[p]);
        const float d2 = w2 * (y0 - x2 * inv[2 * tile + p]);
        a0 += d2;
        o2[p] = add2 + inv[2 * tile + p] * -d2 - x2 * coef[2 * tile + p];
      }
      o0[p] = add0 + inv[p] * a0 - x0 * coef[p];
    }
  }
}

// One position of channels_last maps (each position's C channels contiguous): inner loops over channels.
template <int Count, typename T>
void grad_position_interleaved(const GradItem<T>& g, int64_t p, GradScratch& s) {
  const WorkItem<T>& w = g.w;
  const int64_t C = w.channels;
  const T* r0 = w.maps[0] + p * C;
  const T* r1 = w.maps[1] + p * C;
  const T* r2 = w.maps[Count - 1] + p * C;
  const float* w1 = s.weights.data();
  const float* w2 = s.weights.data() + C;
  float inv[3] = {0.f, 0.f, 0.f}, coef[3] = {0.f, 0.f, 0.f};
  if (g.terms) {
    // Each per-position sum over channels keeps lane-wise partials and ends in a lane tree
    // (squared_norm, lane_sum in fused_distance.h): the compiler's strict-order reduction would add
    // the lanes one by one, Count + Count dependent chains of kLanes additions per position.
    float norm[3];
    for (int k = 0; k < Count; ++k) {
      norm[k] = std::sqrt(squared_norm(w.maps[k] + p * C, C));
      inv[k] = 1.f / (norm[k] + kNormEps);
    }
    float part0[kLanes] = {}, part1[kLanes] = {}, part2[kLanes] = {};
    // channel c's contribution to the dots, into lane l of the partials
    const auto accumulate = [&](int64_t c, int l) {
      const float y0 = to_float(r0[c]) * inv[0], y1 = to_float(r1[c]) * inv[1];
      const float d1 = w1[c] * (y0 - y1);
      float a0 = d1;
      part1[l] -= d1 * y1;
      if (Count == 3) {
        const float y2 = to_float(r2[c]) * inv[2];
        const float d2 = w2[c] * (y0 - y2);
        a0 += d2;
        part2[l] -= d2 * y2;
      }
      part0[l] += a0 * y0;
    };
    const int64_t whole = C / kLanes * kLanes;
    for (int64_t c0 = 0; c0 < whole; c0 += kLanes) {
#pragma omp simd
      for (int l = 0; l < kLanes; ++l) accumulate(c0 + l, l);
    }
    for (int64_t c = whole; c < C; ++c) accumulate(c, static_cast<int>(c - whole));
    const float dot0 = lane_sum(part0), dot1 = lane_sum(part1), dot2 = Count == 3 ? lane_sum(part2) : 0.f;
    const float dots[3] = {dot0, dot1, dot2};
    for (int k = 0; k < Count; ++k) coef[k] = norm[k] > 0.f ? inv[k] * dots[k] / norm[k] : 0.f;
  }
  // spread: the meanpool gradient per channel (zeros without meanpool); weights: zeros without terms
  const float* add0 = s.spread.data();
  const float* add1 = s.spread.data() + C;
  const float* add2 = s.spread.data() + (Count - 1) * C;
  float* o0 = g.grads[0] == nullptr ? s.sink.data() : g.grads[0] + p * C;
  float* o1 = g.grads[1] == nullptr ? s.sink.data() : g.grads[1] + p * C;
  float* o2 = Count == 3 && g.grads[2] != nullptr ? g.grads[2] + p * C : s.sink.data();
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    const float x0 = to_float(r0[c]), x1 = to_float(r1[c]);
    const float d1 = w1[c] * (x0 * inv[0] - x1 * inv[1]);
    float a0 = d1;
    o1[c] = add1[c] + inv[1] * -d1 - x1 * coef[1];
    if (Count == 3) {
      const float x2 = to_float(r2[c]);
      const float d2 = w2[c] * (x0 * inv[0] - x2 * inv[2]);
      a0 += d2;
      o2[c] = add2[c] + inv[2] * -d2 - x2 * coef[2];
    }
    o0[c] = add0[c] + inv[0] * a0 - x0 * coef[0];
  }
}

template <int Count, typename T>
void backward_positions(const GradItem<T>& g, GradScratch& s) {
  const WorkItem<T>& w = g.w;
  const int64_t HW = w.positions;
  if (w.channels_last) {
    for (int64_t p = 0; p < HW; ++p) grad_position_interleaved<Count>(g, p, s);
    return;
  }
  const int64_t tile = phase1_tile(w.channels);
  s.norm.resize(static_cast<size_t>(Count * tile));
  s.inv.resize(static_cast<size_t>(Count * tile));
  s.dot.resize(static_cast<size_t>(Count * tile));
  for (int64_t first = 0; first < HW; first += tile) grad_tile_planar<Count>(g, first, std::min(tile, HW - first), tile, s);
}

template <typename T>
void backward_item(const GradItem<T>& g, GradScratch& s) {
  const WorkItem<T>& w = g.w;
  const int64_t C = w.channels, HW = w.positions;
  s.sink.resize(static_cast<size_t>(std::max(C, phase1_tile(C))));
  if (g.meanpool) {
    meanpool_spread(g, s);
  } else {
    s.spread.assign(static_cast<size_t>(w.count * C), 0.f);
  }
  s.weights.assign(static_cast<size_t>(2 * C), 0.f);
  if (g.terms) {
    const float two_over_hw = 2.f / static_cast<float>(HW);
    for (int q = 0; q + 1 < w.count; ++q)
      for (int64_t c = 0; c < C; ++c)
        s.weights[q * C + c] = two_over_hw * (g.g_spatial[q] + (w.lin != nullptr ? g.g_lpips[q] * w.lin[c] : 0.f));
  }
  if (w.count == 3) {
    backward_positions<3>(g, s);
  } else {
    backward_positions<2>(g, s);
  }
}

}  // namespace cpu
}  // namespace PF_CPU_ISA
}  // namespace perceptual_fast
