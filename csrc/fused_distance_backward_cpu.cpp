// The CPU launcher of the fused op's backward (spatial, lpips, meanpool): OpenMP over (sample,
// layer) work items, largest layers first, as the forward. Compiled once per ISA variant
// (kernels/cpu/isa.h); csrc/cpu_dispatch.cpp calls the variant in use.
#include <omp.h>

#include <algorithm>
#include <stdexcept>

#include "csrc/fused_distance.h"
#include "kernels/cpu/fused_distance_backward.h"

namespace perceptual_fast {
namespace PF_CPU_ISA {

namespace {

template <typename T>
void run_backward(const FusedArgs& args, const std::vector<GradLayerArgs>& grads) {
  const int64_t N = args.batch, L = static_cast<int64_t>(args.layers.size());
  const int pairs = args.count - 1;
  const std::vector<int64_t> order = layers_largest_first(args);
  const float* upstream = reinterpret_cast<const float*>(args.out);
  auto grad_of = [&](int slot, int q, int64_t n, int64_t l) { return upstream[((slot * pairs + q) * N + n) * L + l]; };
  const bool terms = ((args.distances >> kSpatial) & 1u) || ((args.distances >> kLpips) & 1u);
  const bool meanpool = ((args.distances >> kMeanpool) & 1u) != 0;
  const int64_t items = N * L;

  const int threads = args.threads > 0 ? args.threads : omp_get_max_threads();
#pragma omp parallel num_threads(threads)
  {
#pragma omp single
    record_cpu_threads(omp_get_num_threads());
    cpu::GradScratch scratch;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t l = order[item / N], n = item % N;
      const LayerArgs& layer = args.layers[l];
      cpu::GradItem<T> g{};
      for (int k = 0; k < args.count; ++k) {
        g.w.maps[k] = reinterpret_cast<const T*>(layer.maps[k]) + n * layer.batch_stride[k];
        g.grads[k] = grads[l].grads[k] == 0 ? nullptr : reinterpret_cast<float*>(grads[l].grads[k]) + n * grads[l].batch_stride[k];
      }
      g.w.count = args.count;
      g.w.channels = layer.channels;
      g.w.positions = layer.positions;
      g.w.lin = reinterpret_cast<const float*>(layer.lin);
      g.w.channels_last = layer.channels_last;
      for (int q = 0; q < pairs; ++q) {
        g.g_spatial[q] = (args.distances >> kSpatial) & 1u ? grad_of(kSpatial, q, n, l) : 0.f;
        g.g_lpips[q] = (args.distances >> kLpips) & 1u ? grad_of(kLpips, q, n, l) : 0.f;
        g.g_meanpool[q] = meanpool ? grad_of(kMeanpool, q, n, l) : 0.f;
      }
      g.terms = terms;
      g.meanpool = meanpool;
      cpu::backward_item(g, scratch);
    }
  }
}

}  // namespace

void fused_distance_backward_cpu(const FusedArgs& args, const std::vector<GradLayerArgs>& grads) {
  check_backward_args(args, grads);
  if (args.element == ElementType::kFloat16) throw std::invalid_argument("the CPU kernel takes float32 or bfloat16 maps, not float16");
  if (args.batch == 0) return;
  if (args.element == ElementType::kFloat32) {
    run_backward<float>(args, grads);
  } else {
    run_backward<std::uint16_t>(args, grads);
  }
}

}  // namespace PF_CPU_ISA
}  // namespace perceptual_fast
