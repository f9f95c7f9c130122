// CUDA device code of the fused distance op (docs/design.md, section 8); launchers in
// csrc/fused_distance_cuda.cu. Same structure as the Triton kernels, one launch per kind of work whatever
// the number of layers, each over a work list:
//
//  pointwise_kernel  (tile of 32 positions of a layer) x sample: per-position channel norms,
//                    spatial / lpips terms (normalised difference with round-to-nearest
//                    intrinsics, never contracted into an FMA, so equal maps give exactly 0),
//                    inverse norms for style.
//  style_kernel      (32x32 channel block pair of the upper triangle) x sample: Ga and Gx block
//                    accumulated through shared-memory tiles of normalised features; adds
//                    sum((Ga - Gx)^2), twice off the diagonal. No Gram matrix is stored.
//  meanpool_kernel   layer x sample: channel sums (a warp per channel, fixed order), normalised
//                    means, squared difference, all in double.
//  dists_kernel      layer x sample: per channel (a warp each) the sums of y and y^2 of every map
//                    and of (a - x)^2 per comparison, in double, then DISTS's layer term.
//
// Maps are float, __nv_bfloat16 or __half; arithmetic is float32 (meanpool: double). spatial / lpips / style
// accumulate over blocks with atomicAdd, so their last bits depend on the order blocks finish
// (equal maps still give exactly 0: every contribution is 0).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/distance_slots.h"

namespace perceptual_fast {
namespace cuda {

struct DeviceLayer {
  const void* maps[3];
  std::int64_t batch_stride[3];
  std::int64_t channels;
  std::int64_t positions;
  const float* lin;
  const float* dists;  // [2, C] DISTS weights (alpha; beta), or null
  std::int64_t channel_offset;   // into the [count, N, sum C] channel-sum scratch
  std::int64_t position_offset;  // into the [count, N, sum HW] inverse-norm scratch
};

struct PointwiseItem {
  std::int32_t layer;
  std::int32_t first;  // first position of the tile
};

struct StyleItem {
  std::int32_t layer;
  std::int32_t i0;
  std::int32_t j0;
};

struct Problem {
  const DeviceLayer* layers;
  std::int64_t batch;
  std::int64_t layer_count;
  std::int64_t total_channels;
  std::int64_t total_positions;
  unsigned distances;
  float* inv_norm;      // [count, N, total_positions]
  double* channel_sums;  // [count, N, total_channels]
  float* out;           // [5, count - 1, N, L]
};

constexpr int kTileP = 32;      // pointwise: threadIdx.x runs over positions (one warp)
constexpr int kChanLanes = 8;   // pointwise: threadIdx.y runs over channels
constexpr int kStyleTile = 32;  // style: channel block edge
constexpr int kStyleP = 32;     // style: positions per shared-memory step
constexpr int kStyleThreads = 16;  // style: 16 x 16 threads, 2 x 2 entries each
constexpr float kNormEps = 1e-10f;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

// Sample n of map k (0 = reference) of a layer.
template <typename T>
__device__ __forceinline__ const T* sample_map(const DeviceLayer& layer, int k, std::int64_t n) {
  return static_cast<const T*>(layer.maps[k]) + n * layer.batch_stride[k];
}

__device__ __forceinline__ bool wants(unsigned mask, int slot) { return (mask >> slot) & 1u; }

__device__ __forceinline__ float* out_slot(const Problem& pb, int slot, int q, int pairs, std::int64_t n, std::int64_t l) {
  return pb.out + ((static_cast<std::int64_t>(slot) * pairs + q) * pb.batch + n) * pb.layer_count + l;
}

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the whole block (blockDim.x * blockDim.y threads, a multiple of 32); the result is
// valid in thread 0. `shared` holds one A per warp.
template <typename A>
__device__ __forceinline__ A block_sum(A v, A* shared) {
  const int tid = threadIdx.x + threadIdx.y * blockDim.x;
  const int warps = (blockDim.x * blockDim.y) / 32;
  v = warp_sum(v);
  __syncthreads();
  if (tid % 32 == 0) shared[tid / 32] = v;
  __syncthreads();
  A total = 0;
  if (tid == 0)
    for (int w = 0; w < warps; ++w) total += shared[w];
  return total;
}

// The channel norm |y| of every map at this thread's position p (threadIdx.x), its channels split
// over the kChanLanes lanes (threadIdx.y) and summed through the shared `partial`; every thread of
// the block gets the norms of its column. Ends with a barrier, so `partial` may be reused.
template <typename T, int kCount>
__device__ __forceinline__ void position_norms(const T* const* maps, std::int64_t C, std::int64_t HW, std::int64_t p,
                                               bool valid, float (*partial)[kChanLanes][kTileP], float* norm) {
  float sq[kCount];
  for (int k = 0; k < kCount; ++k) sq[k] = 0.f;
  for (std::int64_t c = threadIdx.y; c < C; c += kChanLanes) {
    for (int k = 0; k < kCount; ++k) {
      const float v = valid ? to_float(maps[k][c * HW + p]) : 0.f;
      sq[k] += v * v;
    }
  }
  for (int k = 0; k < kCount; ++k) partial[k][threadIdx.y][threadIdx.x] = sq[k];
  __syncthreads();
  for (int k = 0; k < kCount; ++k) {
    float s = 0.f;
    for (int y = 0; y < kChanLanes; ++y) s += partial[k][y][threadIdx.x];
    norm[k] = sqrtf(s);
  }
  __syncthreads();
}

template <typename T, int kCount>
__global__ void pointwise_kernel(Problem pb, const PointwiseItem* items) {
  const PointwiseItem item = items[blockIdx.x];
  const std::int64_t n = blockIdx.y;
  const DeviceLayer layer = pb.layers[item.layer];
  const std::int64_t C = layer.channels, HW = layer.positions;
  const std::int64_t p = item.first + threadIdx.x;
  const bool valid = p < HW;
  const T* maps[kCount];
  for (int k = 0; k < kCount; ++k) maps[k] = sample_map<T>(layer, k, n);

  __shared__ float partial[kCount][kChanLanes][kTileP];
  __shared__ float reduce_buffer[kTileP * kChanLanes / 32];
  float norm[kCount], inv[kCount];
  position_norms<T, kCount>(maps, C, HW, p, valid, partial, norm);
  for (int k = 0; k < kCount; ++k) inv[k] = 1.f / (norm[k] + kNormEps);
  if (wants(pb.distances, kStyle) && threadIdx.y == 0 && valid) {
    for (int k = 0; k < kCount; ++k)
      pb.inv_norm[(k * pb.batch + n) * pb.total_positions + layer.position_offset + p] = inv[k];
  }
  if (!wants(pb.distances, kSpatial) && !wants(pb.distances, kLpips)) return;  // uniform in the block
  float spatial[2] = {0.f, 0.f}, lpips[2] = {0.f, 0.f};
  for (std::int64_t c = threadIdx.y; c < C; c += kChanLanes) {
    if (!valid) break;
    const float a = __fmul_rn(to_float(maps[0][c * HW + p]), inv[0]);
    const float w = layer.lin != nullptr ? layer.lin[c] : 0.f;
    for (int q = 0; q + 1 < kCount; ++q) {
      const float d = __fsub_rn(a, __fmul_rn(to_float(maps[q + 1][c * HW + p]), inv[q + 1]));
      spatial[q] += d * d;
      lpips[q] += w * d * d;
    }
  }
  const int pairs = kCount - 1;
  for (int q = 0; q < pairs; ++q) {
    const float s = block_sum(spatial[q], reduce_buffer);
    const float l = block_sum(lpips[q], reduce_buffer);
    if (threadIdx.x == 0 && threadIdx.y == 0) {
      if (wants(pb.distances, kSpatial)) atomicAdd(out_slot(pb, kSpatial, q, pairs, n, item.layer), s / HW);
      if (wants(pb.distances, kLpips)) atomicAdd(out_slot(pb, kLpips, q, pairs, n, item.layer), l / HW);
    }
  }
}

template <typename T, int kCount>
__global__ void style_kernel(Problem pb, const StyleItem* items) {
  const StyleItem item = items[blockIdx.x];
  const std::int64_t n = blockIdx.y;
  const DeviceLayer layer = pb.layers[item.layer];
  const std::int64_t C = layer.channels, HW = layer.positions;
  const T* maps[kCount];
  const float* inv[kCount];
  for (int k = 0; k < kCount; ++k) {
    maps[k] = sample_map<T>(layer, k, n);
    inv[k] = pb.inv_norm + (k * pb.batch + n) * pb.total_positions + layer.position_offset;
  }
  __shared__ float rows_i[kCount][kStyleTile][kStyleP + 1];
  __shared__ float rows_j[kCount][kStyleTile][kStyleP + 1];
  __shared__ float reduce_buffer[kStyleThreads * kStyleThreads / 32];
  const int tid = threadIdx.x + threadIdx.y * kStyleThreads;
  float g[kCount][2][2];
  for (int k = 0; k < kCount; ++k)
    for (int r = 0; r < 2; ++r) g[k][r][0] = g[k][r][1] = 0.f;

  for (std::int64_t p0 = 0; p0 < HW; p0 += kStyleP) {
    for (int e = tid; e < kStyleTile * kStyleP; e += kStyleThreads * kStyleThreads) {
      const int r = e / kStyleP, pp = e % kStyleP;
      const std::int64_t p = p0 + pp;
      const std::int64_t ci = item.i0 + r, cj = item.j0 + r;
      for (int k = 0; k < kCount; ++k) {
        const float iv = p < HW ? inv[k][p] : 0.f;
        rows_i[k][r][pp] = (p < HW && ci < C) ? to_float(maps[k][ci * HW + p]) * iv : 0.f;
        rows_j[k][r][pp] = (p < HW && cj < C) ? to_float(maps[k][cj * HW + p]) * iv : 0.f;
      }
    }
    __syncthreads();
    for (int pp = 0; pp < kStyleP; ++pp) {
      for (int k = 0; k < kCount; ++k) {
        const float a0 = rows_i[k][2 * threadIdx.y][pp], a1 = rows_i[k][2 * threadIdx.y + 1][pp];
        const float b0 = rows_j[k][2 * threadIdx.x][pp], b1 = rows_j[k][2 * threadIdx.x + 1][pp];
        g[k][0][0] += a0 * b0;
        g[k][0][1] += a0 * b1;
        g[k][1][0] += a1 * b0;
        g[k][1][1] += a1 * b1;
      }
    }
    __syncthreads();
  }
  const int pairs = kCount - 1;
  const float scale = (item.i0 == item.j0 ? 1.f : 2.f) / (static_cast<float>(HW) * HW * static_cast<float>(C) * C);
  for (int q = 0; q < pairs; ++q) {
    float s = 0.f;
    for (int r = 0; r < 2; ++r)
      for (int c = 0; c < 2; ++c) {
        const float d = g[0][r][c] - g[q + 1][r][c];
        s += d * d;
      }
    s = block_sum(s, reduce_buffer);
    if (tid == 0) atomicAdd(out_slot(pb, kStyle, q, pairs, n, item.layer), s * scale);
  }
}

// Every map's channel sums of (layer, sample n) into the scratch, sums[k] pointing at map k's: one
// warp per channel, the same fixed order for every map (no atomics), in double. Ends with a
// barrier: the sums (global memory) are then read by other warps of the block.
template <typename T, int kCount>
__device__ __forceinline__ void channel_sums(const Problem& pb, const DeviceLayer& layer, std::int64_t n, double** sums) {
  const std::int64_t C = layer.channels, HW = layer.positions;
  for (int k = 0; k < kCount; ++k) sums[k] = pb.channel_sums + (k * pb.batch + n) * pb.total_channels + layer.channel_offset;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (std::int64_t c = warp; c < C; c += warps) {  // uniform per warp: the full-mask shuffle is safe
    for (int k = 0; k < kCount; ++k) {
      const T* row = sample_map<T>(layer, k, n) + c * HW;
      double s = 0.0;
      for (std::int64_t p = lane; p < HW; p += 32) s += static_cast<double>(to_float(row[p]));
      s = warp_sum(s);
      if (lane == 0) sums[k][c] = s;
    }
  }
  __syncthreads();
}

// One block per (layer, sample). The channel sums are computed here, each by one warp in a fixed
// order that is the same for every map (no atomics), so equal maps give bitwise equal means and
// the term is exactly 0, as on the CPU. Sums, means, norms and the difference are double: the term
// is a small difference of two unit vectors, which float sums over many positions would blur.
template <typename T, int kCount>
__global__ void meanpool_kernel(Problem pb) {
  const std::int64_t l = blockIdx.x, n = blockIdx.y;
  const DeviceLayer layer = pb.layers[l];
  const std::int64_t C = layer.channels, HW = layer.positions;
  const double hw = static_cast<double>(HW);
  __shared__ double reduce_buffer[8];
  __shared__ double broadcast[2];
  double* sums[kCount];
  channel_sums<T, kCount>(pb, layer, n, sums);
  const int pairs = kCount - 1;
  for (int q = 0; q < pairs; ++q) {
    double sa = 0.0, sx = 0.0;
    for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const double ma = sums[0][c] / hw, mx = sums[q + 1][c] / hw;
      sa += ma * ma;
      sx += mx * mx;
    }
    sa = block_sum(sa, reduce_buffer);
    sx = block_sum(sx, reduce_buffer);
    if (threadIdx.x == 0) {
      broadcast[0] = 1.0 / (sqrt(sa) + 1e-10);  // LPIPS's epsilon, as a double
      broadcast[1] = 1.0 / (sqrt(sx) + 1e-10);
    }
    __syncthreads();
    const double scale_a = broadcast[0], scale_x = broadcast[1];
    double acc = 0.0;
    for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const double d = __dsub_rn(__dmul_rn(sums[0][c] / hw, scale_a), __dmul_rn(sums[q + 1][c] / hw, scale_x));
      acc += d * d;
    }
    acc = block_sum(acc, reduce_buffer);
    if (threadIdx.x == 0) *out_slot(pb, kMeanpool, q, pairs, n, l) = static_cast<float>(acc / static_cast<double>(C));
    __syncthreads();
  }
}

// One block per (layer, sample): each warp takes channels in turn and sums, in double and in a fixed
// order, y and y^2 of every map and (a - x)^2 of every comparison over the positions; lane 0 adds
// the channel's alpha (1 - S1) + beta (1 - S2) in the difference form of the CPU kernel
// (kernels/cpu/fused_distance.h dists_term): equal maps give exactly 0. No scratch, no atomics.
template <typename T, int kCount>
__global__ void dists_kernel(Problem pb) {
  const std::int64_t l = blockIdx.x, n = blockIdx.y;
  const DeviceLayer layer = pb.layers[l];
  const std::int64_t C = layer.channels, HW = layer.positions;
  const double hw = static_cast<double>(HW);
  constexpr int pairs = kCount - 1;
  __shared__ double reduce_buffer[8];
  const T* maps[kCount];
  for (int k = 0; k < kCount; ++k) maps[k] = sample_map<T>(layer, k, n);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  double term[pairs];
  for (int q = 0; q < pairs; ++q) term[q] = 0.0;
  for (std::int64_t c = warp; c < C; c += warps) {  // uniform per warp: the full-mask shuffle is safe
    double sum[kCount], sq[kCount], diff_sq[pairs];
    for (int k = 0; k < kCount; ++k) sum[k] = sq[k] = 0.0;
    for (int q = 0; q < pairs; ++q) diff_sq[q] = 0.0;
    for (std::int64_t p = lane; p < HW; p += 32) {
      double v[kCount];
      for (int k = 0; k < kCount; ++k) {
        v[k] = static_cast<double>(to_float(maps[k][c * HW + p]));
        sum[k] += v[k];
        sq[k] += v[k] * v[k];
      }
      for (int q = 0; q < pairs; ++q) {
        const double d = __dsub_rn(v[0], v[q + 1]);
        diff_sq[q] += d * d;
      }
    }
    for (int k = 0; k < kCount; ++k) {
      sum[k] = warp_sum(sum[k]);
      sq[k] = warp_sum(sq[k]);
    }
    for (int q = 0; q < pairs; ++q) diff_sq[q] = warp_sum(diff_sq[q]);
    if (lane == 0) {
      const double alpha = layer.dists[c], beta = layer.dists[C + c];
      const double ma = sum[0] / hw, va = fmax(0.0, sq[0] / hw - ma * ma);
      for (int q = 0; q < pairs; ++q) {
        const double mx = sum[q + 1] / hw, dm = __dsub_rn(ma, mx);
        const double vx = fmax(0.0, sq[q + 1] / hw - mx * mx);
        const double vd = fmax(0.0, diff_sq[q] / hw - dm * dm);
        term[q] += alpha * (dm * dm / (ma * ma + mx * mx + 1e-6)) + beta * (vd / (va + vx + 1e-6));
      }
    }
  }
  for (int q = 0; q < pairs; ++q) {
    const double total = block_sum(term[q], reduce_buffer);
    if (threadIdx.x == 0) *out_slot(pb, kDists, q, pairs, n, l) = static_cast<float>(total);
  }
}

}  // namespace cuda
}  // namespace perceptual_fast
