// CPU launcher of the per-layer spatial / lpips term (see kernels/cpu/spatial_term.h).
#pragma once

#include <cstdint>

namespace perceptual_fast {

// Shapes and strides of one pair of feature maps [N, C, H, W] whose H*W positions are addressed
// by a single stride (true for NCHW-contiguous and channels_last tensors alike).
struct PairLayout {
  int64_t batch;      // N
  int64_t channels;   // C
  int64_t positions;  // H * W
  int64_t stride_n0;  // batch stride of y0 (elements)
  int64_t stride_n1;  // batch stride of y1 (elements)
  int64_t stride_c;   // channel stride, shared by y0 and y1
  int64_t stride_p;   // position stride, shared by y0 and y1
};

// Checks the layout; throws std::invalid_argument naming the problem.
void check_pair_layout(const PairLayout& layout);

// out[n] = mean_p sum_c w_c (y0/|y0| - y1/|y1|)^2 for float32 inputs, w_c = 1 when weight is null.
// Either stride_p == 1 (NCHW) or stride_c == 1 (channels_last). OpenMP over (sample, tile).
void spatial_term_cpu(const float* y0, const float* y1, const float* weight, float* out,
                      const PairLayout& layout);

}  // namespace perceptual_fast
