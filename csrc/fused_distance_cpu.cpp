// The CPU launcher of the fused distance op: OpenMP over (sample, layer) work items. Compiled once
// per ISA variant (kernels/cpu/isa.h); csrc/cpu_dispatch.cpp calls the variant in use.
#include <omp.h>

#include <algorithm>
#include <stdexcept>

#include "csrc/fused_distance.h"
#include "csrc/gram_difference_cpu.h"
#include "kernels/cpu/fused_distance.h"

namespace perceptual_fast {
namespace PF_CPU_ISA {

namespace {

template <typename T>
void run(const FusedArgs& args) {
  const int64_t N = args.batch, L = static_cast<int64_t>(args.layers.size());
  const int pairs = args.count - 1;
  bool want[kNumDistances];
  for (int d = 0; d < kNumDistances; ++d) want[d] = ((args.distances >> d) & 1u) != 0;
  const std::vector<int64_t> order = layers_largest_first(args);
  float* out = reinterpret_cast<float*>(args.out);
  const int64_t items = N * L;

  const int threads = args.threads > 0 ? args.threads : omp_get_max_threads();
#pragma omp parallel num_threads(threads)
  {
#pragma omp single
    record_cpu_threads(omp_get_num_threads());
    cpu::Scratch scratch;
    GramScratch gram_scratch;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t l = order[item / N], n = item % N;
      const LayerArgs& layer = args.layers[l];
      cpu::WorkItem<T> w{};
      for (int k = 0; k < args.count; ++k)
        w.maps[k] = reinterpret_cast<const T*>(layer.maps[k]) + n * layer.batch_stride[k];
      w.count = args.count;
      w.channels = layer.channels;
      w.positions = layer.positions;
      w.lin = reinterpret_cast<const float*>(layer.lin);
      w.dists = reinterpret_cast<const float*>(layer.dists);
      w.channels_last = layer.channels_last;
      double results[2 * kNumDistances] = {};
      cpu::phase1(w, want[kSpatial], want[kLpips], want[kMeanpool], want[kStyle], want[kDists], scratch, results);
      if (want[kStyle]) {
        double style[2];
        style_terms_cpu(args.count, layer.channels, layer.positions, scratch.normalised.data(), gram_scratch, style);
        for (int q = 0; q < pairs; ++q) results[kStyle * 2 + q] = style[q];
      }
      for (int d = 0; d < kNumDistances; ++d) {
        if (!want[d]) continue;
        for (int q = 0; q < pairs; ++q) out[((d * pairs + q) * N + n) * L + l] = static_cast<float>(results[d * 2 + q]);
      }
    }
  }
}

}  // namespace

void fused_distance_cpu(const FusedArgs& args) {
  check_fused_args(args);
  if (args.element == ElementType::kFloat16) throw std::invalid_argument("the CPU kernel takes float32 or bfloat16 maps, not float16");
  if (args.batch == 0) return;
  if (args.element == ElementType::kFloat32) {
    run<float>(args);
  } else {
    run<std::uint16_t>(args);
  }
}

}  // namespace PF_CPU_ISA
}  // namespace perceptual_fast
