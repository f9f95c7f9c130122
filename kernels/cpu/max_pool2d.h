// Max pooling of channels_last float32 maps without indices: the per-variant kernel behind
// csrc/max_pool2d_cpu.cpp (compiled once per ISA variant, kernels/cpu/isa.h).
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "csrc/max_pool2d.h"
#include "kernels/cpu/isa.h"

namespace perceptual_fast {
namespace PF_CPU_ISA {
namespace cpu {

// float lanes of the variant's vectors (AVX-512, AVX2, else SSE / NEON-sized), and the channels
// pooled at once: four vectors of maxima stay in registers across a whole window.
#if defined(__AVX512F__)
constexpr std::int64_t kPoolLanes = 16;
#elif defined(__AVX__)
constexpr std::int64_t kPoolLanes = 8;
#else
constexpr std::int64_t kPoolLanes = 4;
#endif
constexpr std::int64_t kPoolBlock = 4 * kPoolLanes;

// The window's maxima follow torch's rule: a value replaces the maximum when it is larger (the
// first of equal values stays) or NaN (so a NaN in the window gives NaN). `v > m ? v : m` is one
// max instruction on x86 (maxps keeps m on equality and when either is NaN); whether any value was
// NaN is kept beside it (`v != v`, a compare the compilers vectorise) and applied once per window.
// Both chains are one instruction deep per element, where a compare-and-blend per element would
// make a 3-instruction dependency chain.
inline float max_of(float m, float v) { return v > m ? v : m; }
inline bool is_nan(float v) { return v != v; }

// out[l] = max over the window (rows [y0, y1), columns [x0, x1)) of channel l of `in`, in row-major
// order, for kPoolBlock channels: the maxima stay in registers across the window. The first element
// starts the maximum, as torch's -inf start does (-inf never wins a comparison a real value would not).
inline void pool_block(const float* in, std::int64_t row_stride, std::int64_t channels, std::int64_t y0, std::int64_t y1,
                       std::int64_t x0, std::int64_t x1, float* out) {
  float m[kPoolBlock];
  int nan[kPoolBlock];
  const float* first = in + y0 * row_stride + x0 * channels;
#pragma omp simd
  for (std::int64_t l = 0; l < kPoolBlock; ++l) {
    m[l] = first[l];
    nan[l] = is_nan(first[l]);
  }
  for (std::int64_t y = y0; y < y1; ++y) {
    for (std::int64_t x = (y == y0 ? x0 + 1 : x0); x < x1; ++x) {
      const float* v = in + y * row_stride + x * channels;
#pragma omp simd
      for (std::int64_t l = 0; l < kPoolBlock; ++l) {
        m[l] = max_of(m[l], v[l]);
        nan[l] |= is_nan(v[l]);
      }
    }
  }
#pragma omp simd
  for (std::int64_t l = 0; l < kPoolBlock; ++l) out[l] = nan[l] ? std::numeric_limits<float>::quiet_NaN() : m[l];
}

// The same for the last `count` < kPoolBlock channels, a channel at a time.
inline void pool_tail(const float* in, std::int64_t row_stride, std::int64_t channels, std::int64_t y0, std::int64_t y1,
                      std::int64_t x0, std::int64_t x1, std::int64_t count, float* out) {
  for (std::int64_t l = 0; l < count; ++l) {
    float m = in[y0 * row_stride + x0 * channels + l];
    bool nan = is_nan(m);
    for (std::int64_t y = y0; y < y1; ++y) {
      for (std::int64_t x = (y == y0 ? x0 + 1 : x0); x < x1; ++x) {
        const float v = in[y * row_stride + x * channels + l];
        m = max_of(m, v);
        nan = nan || is_nan(v);
      }
    }
    out[l] = nan ? std::numeric_limits<float>::quiet_NaN() : m;
  }
}

inline void max_pool2d(const float* x, std::int64_t images, std::int64_t height, std::int64_t width, std::int64_t channels,
                       const PoolWindow& w, float* out, std::int64_t out_h, std::int64_t out_w, int threads) {
  const std::int64_t whole = channels / kPoolBlock * kPoolBlock, row_stride = width * channels;
  // One output row per work item: its windows read kernel_h input rows, which stay in cache.
#pragma omp parallel for schedule(static) num_threads(threads)
  for (std::int64_t row = 0; row < images * out_h; ++row) {
    const std::int64_t image = row / out_h, oy = row % out_h;
    const std::int64_t y0 = std::max<std::int64_t>(oy * w.stride_h - w.pad_h, 0);
    const std::int64_t y1 = std::min(oy * w.stride_h - w.pad_h + w.kernel_h, height);
    const float* in = x + image * height * row_stride;
    float* dst = out + row * out_w * channels;
    for (std::int64_t ox = 0; ox < out_w; ++ox, dst += channels) {
      const std::int64_t x0 = std::max<std::int64_t>(ox * w.stride_w - w.pad_w, 0);
      const std::int64_t x1 = std::min(ox * w.stride_w - w.pad_w + w.kernel_w, width);
      for (std::int64_t c0 = 0; c0 < whole; c0 += kPoolBlock) pool_block(in + c0, row_stride, channels, y0, y1, x0, x1, dst + c0);
      if (whole < channels) pool_tail(in + whole, row_stride, channels, y0, y1, x0, x1, channels - whole, dst + whole);
    }
  }
}

}  // namespace cpu
}  // namespace PF_CPU_ISA
}  // namespace perceptual_fast
