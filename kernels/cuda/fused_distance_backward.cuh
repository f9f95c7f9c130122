// CUDA device code of the fused op's backward for lpips, spatial and meanpool (style's gradient is
// the caller's: autograd of the reference); launchers in csrc/fused_distance_cuda.cu. The same
// math as the CPU kernel (kernels/cpu/fused_distance_backward.h): with y a map's channel vector at
// one position, n = |y|, s = n + eps, ŷ = y / s, a gradient a w.r.t. ŷ becomes
//     dy = a / s - y (a . ŷ) / (n s)        (second term 0 where n = 0)
// with a = (2/HW) w (ŷ0 - ŷq) for the reference and minus that for map q, w = g_spatial + g_lpips lin_c.
//
//  meanpool_backward_kernel   layer x sample: channel sums (a warp per channel, fixed order, double),
//                             then d/d(channel mean) / HW of every map in double into `spread`.
//  pointwise_backward_kernel  (tile of 32 positions) x sample: norms, a . ŷ per position, then every
//                             wanted map's gradient (plus `spread` with meanpool); the normalised
//                             difference with round-to-nearest intrinsics, so equal maps give an
//                             exactly zero gradient. Float32 maps (the Scorer widens 16-bit taps first).
#pragma once

#include "kernels/cuda/fused_distance.cuh"

namespace perceptual_fast {
namespace cuda {

struct GradLayer {
  float* grads[3];  // null: that map needs no gradient
  std::int64_t batch_stride[3];
};

struct BackwardProblem {
  Problem forward;        // maps and tables; `out` is the upstream gradient [4, count - 1, N, L] (read)
  const GradLayer* grads;  // one per layer
  float* spread;           // [count, N, total_channels]: meanpool's gradient per channel, over HW
};

__device__ __forceinline__ float upstream(const BackwardProblem& bp, int slot, int q, int pairs, std::int64_t n, std::int64_t l) {
  return wants(bp.forward.distances, slot) ? *out_slot(bp.forward, slot, q, pairs, n, l) : 0.f;
}

template <int kCount>
__global__ void meanpool_backward_kernel(BackwardProblem bp) {
  const Problem& pb = bp.forward;
  const std::int64_t l = blockIdx.x, n = blockIdx.y;
  const DeviceLayer layer = pb.layers[l];
  const std::int64_t C = layer.channels, HW = layer.positions;
  const double hw = static_cast<double>(HW);
  const int pairs = kCount - 1;
  __shared__ double reduce_buffer[8];
  __shared__ double broadcast[2 * 3];
  double* sums[kCount];
  channel_sums<float, kCount>(pb, layer, n, sums);
  double norm[kCount], scale[kCount];
  for (int k = 0; k < kCount; ++k) {
    double sq = 0.0;
    for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) sq += (sums[k][c] / hw) * (sums[k][c] / hw);
    sq = block_sum(sq, reduce_buffer);
    if (threadIdx.x == 0) broadcast[k] = sqrt(sq);
    __syncthreads();
    norm[k] = broadcast[k];
    scale[k] = 1.0 / (norm[k] + 1e-10);
    __syncthreads();
  }
  double coef[2] = {0.0, 0.0};
  for (int q = 0; q < pairs; ++q) coef[q] = 2.0 * upstream(bp, kMeanpool, q, pairs, n, l) / static_cast<double>(C);
  // a . n̂ per map, a the gradient w.r.t. the normalised means
  double along[kCount];
  for (int k = 0; k < kCount; ++k) along[k] = 0.0;
  for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const double u0 = __dmul_rn(sums[0][c] / hw, scale[0]);
    double a0 = 0.0;
    for (int q = 0; q < pairs; ++q) {
      const double uq = __dmul_rn(sums[q + 1][c] / hw, scale[q + 1]);
      const double d = coef[q] * __dsub_rn(u0, uq);
      a0 += d;
      along[q + 1] -= d * uq;
    }
    along[0] += a0 * u0;
  }
  double radial[kCount];
  for (int k = 0; k < kCount; ++k) {
    const double total = block_sum(along[k], reduce_buffer);
    if (threadIdx.x == 0) broadcast[k] = total;
    __syncthreads();
    radial[k] = norm[k] > 0.0 ? scale[k] * broadcast[k] / norm[k] : 0.0;
    __syncthreads();
  }
  for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const double m0 = sums[0][c] / hw, u0 = __dmul_rn(m0, scale[0]);
    double a0 = 0.0;
    for (int q = 0; q < pairs; ++q) {
      const double mq = sums[q + 1][c] / hw;
      const double d = coef[q] * __dsub_rn(u0, __dmul_rn(mq, scale[q + 1]));
      a0 += d;
      bp.spread[((q + 1) * pb.batch + n) * pb.total_channels + layer.channel_offset + c] =
          static_cast<float>((scale[q + 1] * -d - mq * radial[q + 1]) / hw);
    }
    bp.spread[n * pb.total_channels + layer.channel_offset + c] = static_cast<float>((scale[0] * a0 - m0 * radial[0]) / hw);
  }
}

template <int kCount>
__global__ void pointwise_backward_kernel(BackwardProblem bp, const PointwiseItem* items) {
  const Problem& pb = bp.forward;
  const PointwiseItem item = items[blockIdx.x];
  const std::int64_t n = blockIdx.y;
  const DeviceLayer layer = pb.layers[item.layer];
  const GradLayer out = bp.grads[item.layer];
  const std::int64_t C = layer.channels, HW = layer.positions;
  const std::int64_t p = item.first + threadIdx.x;
  const bool valid = p < HW;
  const int pairs = kCount - 1;
  const bool terms = wants(pb.distances, kSpatial) || wants(pb.distances, kLpips);
  const bool meanpool = wants(pb.distances, kMeanpool);
  const float* maps[kCount];
  float* grads[kCount];
  for (int k = 0; k < kCount; ++k) {
    maps[k] = sample_map<float>(layer, k, n);
    grads[k] = out.grads[k] == nullptr ? nullptr : out.grads[k] + n * out.batch_stride[k];
  }
  float g_sp[2] = {0.f, 0.f}, g_lp[2] = {0.f, 0.f};
  for (int q = 0; q < pairs; ++q) {
    g_sp[q] = upstream(bp, kSpatial, q, pairs, n, item.layer);
    g_lp[q] = upstream(bp, kLpips, q, pairs, n, item.layer);
  }
  const float two_over_hw = 2.f / static_cast<float>(HW);
  __shared__ float partial[kCount][kChanLanes][kTileP];
  float inv[kCount], coef[kCount];
  for (int k = 0; k < kCount; ++k) inv[k] = coef[k] = 0.f;
  if (terms) {  // uniform in the block
    float norm[kCount];
    position_norms<float, kCount>(maps, C, HW, p, valid, partial, norm);
    for (int k = 0; k < kCount; ++k) inv[k] = 1.f / (norm[k] + kNormEps);
    float dot[kCount];
    for (int k = 0; k < kCount; ++k) dot[k] = 0.f;
    for (std::int64_t c = threadIdx.y; c < C; c += kChanLanes) {
      if (!valid) break;
      const float w = layer.lin != nullptr ? layer.lin[c] : 0.f;
      const float y0 = __fmul_rn(maps[0][c * HW + p], inv[0]);
      float a0 = 0.f;
      for (int q = 0; q < pairs; ++q) {
        const float yq = __fmul_rn(maps[q + 1][c * HW + p], inv[q + 1]);
        const float d = two_over_hw * (g_sp[q] + g_lp[q] * w) * __fsub_rn(y0, yq);
        a0 += d;
        dot[q + 1] -= d * yq;
      }
      dot[0] += a0 * y0;
    }
    for (int k = 0; k < kCount; ++k) partial[k][threadIdx.y][threadIdx.x] = dot[k];
    __syncthreads();
    for (int k = 0; k < kCount; ++k) {
      float s = 0.f;
      for (int y = 0; y < kChanLanes; ++y) s += partial[k][y][threadIdx.x];
      coef[k] = norm[k] > 0.f ? inv[k] * s / norm[k] : 0.f;
    }
  }
  if (!valid) return;
  for (std::int64_t c = threadIdx.y; c < C; c += kChanLanes) {
    const float w = layer.lin != nullptr ? layer.lin[c] : 0.f;
    const float x0 = maps[0][c * HW + p];
    const float y0 = __fmul_rn(x0, inv[0]);
    float a0 = 0.f;
    for (int q = 0; q < pairs; ++q) {
      const float xq = maps[q + 1][c * HW + p];
      const float d = terms ? two_over_hw * (g_sp[q] + g_lp[q] * w) * __fsub_rn(y0, __fmul_rn(xq, inv[q + 1])) : 0.f;
      a0 += d;
      if (grads[q + 1] != nullptr) {
        const float add = meanpool ? bp.spread[((q + 1) * pb.batch + n) * pb.total_channels + layer.channel_offset + c] : 0.f;
        grads[q + 1][c * HW + p] = add + inv[q + 1] * -d - xq * coef[q + 1];
      }
    }
    if (grads[0] != nullptr) {
      const float add = meanpool ? bp.spread[n * pb.total_channels + layer.channel_offset + c] : 0.f;
      grads[0][c * HW + p] = add + inv[0] * a0 - x0 * coef[0];
    }
  }
}

}  // namespace cuda
}  // namespace perceptual_fast
