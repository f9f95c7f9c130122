// LPIPS's input scaling of image batches in one pass (perceptual_fast/preprocess.py, scaled_batch).
#pragma once

#include <cstdint>

namespace perceptual_fast {

// out = float(x) * alpha[c] + beta[c] for each of `images` contiguous NCHW RGB images x of
// `positions` pixels each (x: uint8 when `from_uint8`, else float32), written to `out` (float32) as
// NCHW, or as NHWC when `channels_last`: the cast, the affine and the layout in one read of x and
// one write of out. A multiply, then an add (no FMA): the values equal torch's
// `x.float() * alpha + beta` bit for bit. alpha, beta: [3]. threads <= 0: OpenMP's default.
void scale_images_cpu(const void* x, bool from_uint8, std::int64_t images, std::int64_t positions, const float* alpha,
                      const float* beta, float* out, bool channels_last, int threads);

}  // namespace perceptual_fast
