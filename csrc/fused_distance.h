// Host-side description of one fused distance call, shared by the CPU and CUDA launchers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace perceptual_fast {

// One layer (tap): the maps of the reference `a` and of `b` (and `c` for a triplet), each
// [N, C, H, W] with samples either NCHW-contiguous (channel stride H*W, position stride 1) or,
// with `channels_last`, NHWC-contiguous (channel stride 1, position stride C), and its own batch
// stride; `lin` points at C float32 lpips weights or is 0; `dists` at [2, C] float32 DISTS weights
// (alpha; beta) or is 0.
struct LayerArgs {
  std::uintptr_t maps[3];
  std::int64_t batch_stride[3];
  std::int64_t channels;
  std::int64_t positions;
  std::uintptr_t lin;
  std::uintptr_t dists;
  bool channels_last;
};

enum class ElementType { kFloat32, kBFloat16, kFloat16 };

struct FusedArgs {
  std::vector<LayerArgs> layers;
  std::int64_t batch;     // N
  int count;              // 2 (pair) or 3 (triplet: b and c both compared with a)
  unsigned distances;     // bit d set: compute distance d (kernels/distance_slots.h order)
  ElementType element;    // of every map
  std::uintptr_t out;     // float32 [5, count - 1, N, L]; only the requested distances are written
  int threads = 0;        // CPU: OpenMP threads for this call (the caller passes torch's count); 0: OpenMP's default
};

// CPU: the OpenMP threads the last CPU kernel call (forward or backward) ran with; the kernels
// record them (csrc/cpu_dispatch.cpp holds the value).
int last_cpu_threads();
void record_cpu_threads(int threads);

// Throws std::invalid_argument naming the first problem found (csrc/fused_distance_args.cpp).
void check_fused_args(const FusedArgs& args);

ElementType parse_element_type(const std::string& name);

// The CPU launchers' layer order: largest (C * HW) first, so a dynamic schedule ends with small
// work items and the threads finish together.
std::vector<std::int64_t> layers_largest_first(const FusedArgs& args);

// CPU: OpenMP over (sample, layer) work items, largest layers first. float32 or bfloat16 maps. Runs
// the ISA variant in use (csrc/cpu_dispatch.cpp).
void fused_distance_cpu(const FusedArgs& args);

// The CPU kernels' ISA variants (csrc/cpu_dispatch.cpp): each compiled variant's name and whether
// this CPU can run it, best last; the one in use (the best this CPU runs, or PERCEPTUAL_FAST_CPU_ISA;
// chosen at the first call, an error naming the CPU's features if the variable asks for one it
// cannot run); switching variants (tests, benchmarks); the CPU's features as name -> supported.
std::vector<std::pair<std::string, bool>> cpu_isa_variants();
std::string cpu_isa();
std::string set_cpu_isa(const std::string& name);
std::vector<std::pair<std::string, bool>> cpu_features();

// Where the backward writes the gradients of one layer: float32 maps laid out as that layer's
// inputs (NCHW or channels_last samples), each with its batch stride; 0 for a map that needs none.
struct GradLayerArgs {
  std::uintptr_t grads[3];
  std::int64_t batch_stride[3];
};

// Throws std::invalid_argument naming the first problem of a backward call: check_fused_args's, a
// style bit (its gradient is the caller's), a gradient row count or pointer that does not fit.
void check_backward_args(const FusedArgs& args, const std::vector<GradLayerArgs>& grads);

// CPU backward of lpips, spatial and meanpool (kernels/cpu/fused_distance_backward.h): `args` as
// for the forward except that `out` is the upstream gradient, float32 [5, count - 1, N, L] (read,
// slot order); every element of every requested gradient is written. float32 or bfloat16 maps.
void fused_distance_backward_cpu(const FusedArgs& args, const std::vector<GradLayerArgs>& grads);

// CUDA (only when built with PERCEPTUAL_FAST_CUDA): up to four kernel launches on `stream` (a
// cudaStream_t); maps, lin and out are device pointers. float32, bfloat16 or float16 maps; at most
// kMaxCudaBatch samples (grid axis 1). `workspace` is device memory of at least
// fused_distance_cuda_workspace_bytes(args) bytes, 256-byte aligned (the caller allocates it, so it
// comes from the caller's allocator and is ordered on `stream`).
constexpr std::int64_t kMaxCudaBatch = 65535;
std::size_t fused_distance_cuda_workspace_bytes(const FusedArgs& args);
void fused_distance_cuda(const FusedArgs& args, std::uintptr_t workspace, std::size_t workspace_bytes, std::uintptr_t stream);

// CUDA backward of lpips, spatial and meanpool (kernels/cuda/fused_distance_backward.cuh), the CPU
// backward's contract on device pointers (float32 NCHW maps and gradients), with a workspace of
// fused_distance_backward_cuda_workspace_bytes(...) bytes, launched on `stream`.
std::size_t fused_distance_backward_cuda_workspace_bytes(const FusedArgs& args, const std::vector<GradLayerArgs>& grads);
void fused_distance_backward_cuda(const FusedArgs& args, const std::vector<GradLayerArgs>& grads, std::uintptr_t workspace,
                                  std::size_t workspace_bytes, std::uintptr_t stream);

}  // namespace perceptual_fast
