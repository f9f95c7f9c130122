// Style stage of the CPU fused op; compiled with FMA contraction (see CMakeLists.txt).
#include "csrc/gram_difference_cpu.h"

#include "kernels/cpu/gram_difference.h"

namespace perceptual_fast {
namespace PF_CPU_ISA {

void style_terms_cpu(int count, std::int64_t channels, std::int64_t positions, const float* normalised,
                     GramScratch& scratch, double* sums) {
  const std::int64_t c_pad = cpu::round_up(channels, cpu::kChannelPad);
  const float* maps[3] = {normalised, normalised + positions * c_pad, normalised + 2 * positions * c_pad};
  sums[0] = sums[1] = 0.0;
  if (positions <= cpu::kPositionFormMaxHW && positions < channels) {
    cpu::position_form(maps, count, channels, positions, c_pad, scratch.position, sums);
  } else if (count == 3) {
    cpu::channel_form<3>(maps, channels, positions, c_pad, scratch.gram, sums);
  } else {
    cpu::channel_form<2>(maps, channels, positions, c_pad, scratch.gram, sums);
  }
  // Both forms give |Ga - Gx|_F^2 * HW^2: divide by HW^2 and by C^2.
  const double norm = static_cast<double>(positions) * positions * static_cast<double>(channels) * channels;
  for (int q = 0; q + 1 < count; ++q) sums[q] /= norm;
}

}  // namespace PF_CPU_ISA
}  // namespace perceptual_fast
