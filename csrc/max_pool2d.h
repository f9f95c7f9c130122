// Max pooling of channels_last float32 maps without indices (perceptual_fast/ops/max_pool2d.py).
#pragma once

#include <cstdint>

namespace perceptual_fast {

// Window geometry of a 2-D max pool (dilation 1), as torch.nn.functional.max_pool2d takes it.
struct PoolWindow {
  std::int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
};

// out[n, oy, ox, c] = max of x[n, y, x', c] over the window of (oy, ox), clipped to the input
// (padding never wins, as in torch). x: [images, height, width, channels] (a channels_last NCHW
// tensor's memory), out: [images, out_h, out_w, channels], both contiguous float32; the caller
// computes out_h/out_w (ceil_mode included) and guarantees every window overlaps the input. NaN
// in the window gives NaN (the quiet +NaN; torch passes on the input NaN itself). Unlike torch's max_pool2d on CPU, no int64 argmax indices are
// computed or written: they would double the bytes written, and inference never reads them.
// threads <= 0: OpenMP's default. Runs the ISA variant in use (csrc/cpu_dispatch.cpp).
void max_pool2d_cpu(const float* x, std::int64_t images, std::int64_t height, std::int64_t width, std::int64_t channels,
                    const PoolWindow& window, float* out, std::int64_t out_h, std::int64_t out_w, int threads);

}  // namespace perceptual_fast
