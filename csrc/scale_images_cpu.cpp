// LPIPS's input scaling of image batches in one pass (csrc/scale_images.h). Memory-bound: it reads
// 1 (uint8) or 4 bytes and writes 4 per value, so it is compiled once, for the baseline ISA.
#include "csrc/scale_images.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace perceptual_fast {

namespace {

#if defined(__SSE2__)
// Four consecutive values as floats.
inline __m128 load4(const float* x) { return _mm_loadu_ps(x); }
inline __m128 load4(const std::uint8_t* x) {
  std::int32_t word;
  std::memcpy(&word, x, sizeof word);
  const __m128i zero = _mm_setzero_si128();
  const __m128i bytes = _mm_cvtsi32_si128(word);
  return _mm_cvtepi32_ps(_mm_unpacklo_epi16(_mm_unpacklo_epi8(bytes, zero), zero));
}
#endif

// Pixels per work item: a few KiB of each channel's row, so the threads share an image evenly.
constexpr std::int64_t kPixelBlock = 1024;

// RGB images to channels_last: the three channel rows in step, stored interleaved. The compilers
// do not vectorise the stride-3 stores for the baseline ISA (7 GB/s written on one core, against 31
// for NCHW), so on x86-64 four pixels at a time are transposed in SSE2 registers, which every x86-64
// CPU has. The arithmetic is the same multiply, then add, either way.
template <typename In>
void interleave_rgb(const In* in, std::int64_t positions, std::int64_t first, std::int64_t count, const float* alpha,
                    const float* beta, float* dst) {
  const In *r = in, *g = in + positions, *b = in + 2 * positions;
  std::int64_t p = first;
#if defined(__SSE2__)
  const __m128 ar = _mm_set1_ps(alpha[0]), ag = _mm_set1_ps(alpha[1]), ab = _mm_set1_ps(alpha[2]);
  const __m128 br = _mm_set1_ps(beta[0]), bg = _mm_set1_ps(beta[1]), bb = _mm_set1_ps(beta[2]);
  for (; p + 4 <= first + count; p += 4) {
    const __m128 vr = _mm_add_ps(_mm_mul_ps(load4(r + p), ar), br);
    const __m128 vg = _mm_add_ps(_mm_mul_ps(load4(g + p), ag), bg);
    const __m128 vb = _mm_add_ps(_mm_mul_ps(load4(b + p), ab), bb);
    const __m128 rg_lo = _mm_unpacklo_ps(vr, vg), rg_hi = _mm_unpackhi_ps(vr, vg);  // r0 g0 r1 g1, r2 g2 r3 g3
    const __m128 gb_lo = _mm_unpacklo_ps(vg, vb), gb_hi = _mm_unpackhi_ps(vg, vb);  // g0 b0 g1 b1, g2 b2 g3 b3
    const __m128 br_lo = _mm_unpacklo_ps(vb, vr), br_hi = _mm_unpackhi_ps(vb, vr);  // b0 r0 b1 r1, b2 r2 b3 r3
    float* out = dst + 3 * p;
    _mm_storeu_ps(out, _mm_shuffle_ps(rg_lo, br_lo, _MM_SHUFFLE(3, 0, 1, 0)));      // r0 g0 b0 r1
    _mm_storeu_ps(out + 4, _mm_shuffle_ps(gb_lo, rg_hi, _MM_SHUFFLE(1, 0, 3, 2)));  // g1 b1 r2 g2
    _mm_storeu_ps(out + 8, _mm_shuffle_ps(br_hi, gb_hi, _MM_SHUFFLE(3, 2, 3, 0)));  // b2 r3 g3 b3
  }
#endif
  for (; p < first + count; ++p) {
    dst[3 * p] = static_cast<float>(r[p]) * alpha[0] + beta[0];
    dst[3 * p + 1] = static_cast<float>(g[p]) * alpha[1] + beta[1];
    dst[3 * p + 2] = static_cast<float>(b[p]) * alpha[2] + beta[2];
  }
}

template <typename In>
void scale(const In* x, std::int64_t images, std::int64_t positions, const float* alpha, const float* beta, float* out,
           bool channels_last, int threads) {
  const std::int64_t blocks = (positions + kPixelBlock - 1) / kPixelBlock;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (std::int64_t item = 0; item < images * blocks; ++item) {
    const std::int64_t image = item / blocks, first = item % blocks * kPixelBlock;
    const std::int64_t count = std::min(kPixelBlock, positions - first);
    const In* in = x + image * 3 * positions;
    float* dst = out + image * 3 * positions;
    if (channels_last) {
      interleave_rgb(in, positions, first, count, alpha, beta, dst);
      continue;
    }
    for (int c = 0; c < 3; ++c) {
      const In* row = in + c * positions;
      float* to = dst + c * positions;
      const float a = alpha[c], b = beta[c];
#pragma omp simd
      for (std::int64_t p = first; p < first + count; ++p) to[p] = static_cast<float>(row[p]) * a + b;
    }
  }
}

}  // namespace

void scale_images_cpu(const void* x, bool from_uint8, std::int64_t images, std::int64_t positions, const float* alpha,
                      const float* beta, float* out, bool channels_last, int threads) {
  if (images < 0 || positions < 1) throw std::invalid_argument("scale_images_cpu: empty or negative shape");
  const int n = threads > 0 ? threads : omp_get_max_threads();
  if (from_uint8) {
    scale(static_cast<const std::uint8_t*>(x), images, positions, alpha, beta, out, channels_last, n);
  } else {
    scale(static_cast<const float*>(x), images, positions, alpha, beta, out, channels_last, n);
  }
}

}  // namespace perceptual_fast
