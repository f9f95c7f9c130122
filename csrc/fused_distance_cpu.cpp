#include <omp.h>

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

#include "csrc/fused_distance.h"
#include "csrc/gram_difference_cpu.h"
#include "kernels/cpu/fused_distance.h"

namespace perceptual_fast {

namespace {

std::string where(size_t layer) { return "layer " + std::to_string(layer) + ": "; }

void check_pointer(std::uintptr_t address, std::size_t alignment, const std::string& what) {
  if (address == 0) throw std::invalid_argument(what + " is a null pointer");
  if (address % alignment != 0) throw std::invalid_argument(what + " is not aligned for its element type");
}

}  // namespace

ElementType parse_element_type(const std::string& name) {
  if (name == "float32") return ElementType::kFloat32;
  if (name == "bfloat16") return ElementType::kBFloat16;
  if (name == "float16") return ElementType::kFloat16;
  throw std::invalid_argument("element type must be float32, bfloat16 or float16, got " + name);
}

void check_fused_args(const FusedArgs& args) {
  if (args.count != 2 && args.count != 3)
    throw std::invalid_argument("count must be 2 (pair) or 3 (triplet), got " + std::to_string(args.count));
  if (args.batch < 0) throw std::invalid_argument("batch size must be >= 0, got " + std::to_string(args.batch));
  if (args.layers.empty()) throw std::invalid_argument("need at least one layer");
  if (args.distances == 0 || args.distances >= (1u << cpu::kNumDistances))
    throw std::invalid_argument("distance mask must select some of the 4 distances, got " + std::to_string(args.distances));
  if (args.batch > 0) check_pointer(args.out, alignof(float), "out");  // empty tensors may have null data pointers
  const std::size_t element = args.element == ElementType::kFloat32 ? 4 : 2;
  for (size_t l = 0; l < args.layers.size(); ++l) {
    const LayerArgs& layer = args.layers[l];
    if (layer.channels < 1) throw std::invalid_argument(where(l) + "channel count must be >= 1");
    if (layer.positions < 1) throw std::invalid_argument(where(l) + "feature maps need at least one position (H*W >= 1)");
    if (args.batch == 0) continue;  // nothing is read or written
    for (int k = 0; k < args.count; ++k) {
      check_pointer(layer.maps[k], element, where(l) + "map " + std::to_string(k));
      // Samples are only read, so they may overlap: 0 (an expanded batch) is a valid stride.
      if (layer.batch_stride[k] < 0)
        throw std::invalid_argument(where(l) + "batch stride of map " + std::to_string(k) + " is negative");
    }
    if ((args.distances >> cpu::kLpips) & 1u) check_pointer(layer.lin, alignof(float), where(l) + "lpips weights");
  }
}

namespace {

template <typename T>
void run(const FusedArgs& args) {
  const int64_t N = args.batch, L = static_cast<int64_t>(args.layers.size());
  const int pairs = args.count - 1;
  const bool want[cpu::kNumDistances] = {
      ((args.distances >> cpu::kSpatial) & 1u) != 0, ((args.distances >> cpu::kLpips) & 1u) != 0,
      ((args.distances >> cpu::kMeanpool) & 1u) != 0, ((args.distances >> cpu::kStyle) & 1u) != 0};
  // Largest layers first, so the dynamic schedule ends with small items and threads finish together.
  std::vector<int64_t> order(static_cast<size_t>(L));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) {
    return args.layers[x].channels * args.layers[x].positions > args.layers[y].channels * args.layers[y].positions;
  });
  float* out = reinterpret_cast<float*>(args.out);
  const int64_t items = N * L;

#pragma omp parallel
  {
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
      w.channels_last = layer.channels_last;
      double results[2 * cpu::kNumDistances] = {};
      cpu::phase1(w, want[cpu::kSpatial], want[cpu::kLpips], want[cpu::kMeanpool], want[cpu::kStyle], scratch, results);
      if (want[cpu::kStyle]) {
        double style[2];
        style_terms_cpu(args.count, layer.channels, layer.positions, scratch.normalised.data(), gram_scratch, style);
        for (int q = 0; q < pairs; ++q) results[cpu::kStyle * 2 + q] = style[q];
      }
      for (int d = 0; d < cpu::kNumDistances; ++d) {
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

}  // namespace perceptual_fast
