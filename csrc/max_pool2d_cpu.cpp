// The CPU entry of max pooling (csrc/max_pool2d.h). Compiled once per ISA variant (kernels/cpu/isa.h);
// csrc/cpu_dispatch.cpp calls the variant in use.
#include <omp.h>

#include <stdexcept>

#include "csrc/max_pool2d.h"
#include "kernels/cpu/max_pool2d.h"

namespace perceptual_fast {
namespace PF_CPU_ISA {

void max_pool2d_cpu(const float* x, std::int64_t images, std::int64_t height, std::int64_t width, std::int64_t channels,
                    const PoolWindow& window, float* out, std::int64_t out_h, std::int64_t out_w, int threads) {
  if (images < 0 || height < 1 || width < 1 || channels < 1 || out_h < 1 || out_w < 1 || window.kernel_h < 1 ||
      window.kernel_w < 1 || window.stride_h < 1 || window.stride_w < 1 || window.pad_h < 0 || window.pad_w < 0 ||
      2 * window.pad_h > window.kernel_h || 2 * window.pad_w > window.kernel_w)
    throw std::invalid_argument("max_pool2d_cpu: empty or negative shape, or a window torch's max_pool2d rejects");
  if ((out_h - 1) * window.stride_h - window.pad_h >= height || (out_w - 1) * window.stride_w - window.pad_w >= width)
    throw std::invalid_argument("max_pool2d_cpu: the last window starts past the input (output size too large)");
  cpu::max_pool2d(x, images, height, width, channels, window, out, out_h, out_w, threads > 0 ? threads : omp_get_max_threads());
}

}  // namespace PF_CPU_ISA
}  // namespace perceptual_fast
