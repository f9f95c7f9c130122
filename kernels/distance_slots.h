// The distances' order in every kernel's output ([5, count - 1, N, L] float32) and in a call's bit
// mask (bit d set: compute distance d). The one C++ definition, for the CPU and the CUDA kernels;
// Python's perceptual_fast.ops.fused_distance.reference.DISTANCES is the same order, and a test
// compares it with perceptual_fast._C.DISTANCE_SLOTS (these names, in slot order).
#pragma once

namespace perceptual_fast {

enum DistanceSlot : int { kLpips = 0, kSpatial = 1, kMeanpool = 2, kStyle = 3, kDists = 4, kNumDistances = 5 };

inline constexpr const char* kDistanceNames[kNumDistances] = {"lpips", "spatial", "meanpool", "style", "dists"};

}  // namespace perceptual_fast
