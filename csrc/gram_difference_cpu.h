// The style stage of the CPU fused op (kernels/cpu/gram_difference.h), in its own translation
// unit because it is compiled with FMA contraction and phase 1 is not.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cpu/isa.h"

namespace perceptual_fast {
namespace PF_CPU_ISA {

// Per-thread buffers of the style stage, reused across work items.
struct GramScratch {
  std::vector<float> gram;       // channel form: block accumulators between position chunks
  std::vector<double> position;  // position form
};

// sums[q] = (1/C^2) |Ga - Gx_q|_F^2 for q < count - 1, from the position-major, channel-padded
// normalised maps [count][positions][round_up(channels, kChannelPad)].
void style_terms_cpu(int count, std::int64_t channels, std::int64_t positions, const float* normalised,
                     GramScratch& scratch, double* sums);

}  // namespace PF_CPU_ISA
}  // namespace perceptual_fast
