// Argument checks and parsing shared by the CPU and CUDA launchers (each entry point checks once).
#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

#include "csrc/fused_distance.h"
#include "kernels/distance_slots.h"

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
  if (args.distances == 0 || args.distances >= (1u << kNumDistances))
    throw std::invalid_argument("distance mask must select some of the " + std::to_string(kNumDistances) + " distances, got " + std::to_string(args.distances));
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
    if ((args.distances >> kLpips) & 1u) check_pointer(layer.lin, alignof(float), where(l) + "lpips weights");
    if ((args.distances >> kDists) & 1u) check_pointer(layer.dists, alignof(float), where(l) + "dists weights");
  }
}

std::vector<std::int64_t> layers_largest_first(const FusedArgs& args) {
  std::vector<std::int64_t> order(args.layers.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::int64_t x, std::int64_t y) {
    return args.layers[x].channels * args.layers[x].positions > args.layers[y].channels * args.layers[y].positions;
  });
  return order;
}

void check_backward_args(const FusedArgs& args, const std::vector<GradLayerArgs>& grads) {
  if (((args.distances >> kStyle) & 1u) || ((args.distances >> kDists) & 1u))
    throw std::invalid_argument("the backward kernels cover lpips, spatial and meanpool; style and dists are differentiated by the caller");
  check_fused_args(args);
  if (grads.size() != args.layers.size())
    throw std::invalid_argument("need one gradient row per layer: " + std::to_string(grads.size()) + " for " +
                                std::to_string(args.layers.size()) + " layers");
  for (size_t l = 0; l < grads.size(); ++l)
    for (int k = 0; k < args.count; ++k)
      if (grads[l].grads[k] % alignof(float) != 0 || grads[l].batch_stride[k] < 0)
        throw std::invalid_argument(where(l) + "gradient " + std::to_string(k) + " is misaligned or has a negative batch stride");
}

}  // namespace perceptual_fast
