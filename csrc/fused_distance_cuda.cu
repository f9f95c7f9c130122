// CUDA launchers of the fused distance op: work lists and scratch in a caller-given workspace
// (a torch tensor, so it comes from torch's caching allocator), launches on the caller's stream.
#include <cuda_runtime.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "csrc/fused_distance.h"
#include "kernels/cuda/fused_distance.cuh"
#include "kernels/cuda/fused_distance_backward.cuh"

namespace perceptual_fast {

namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
}

constexpr std::size_t kAlign = 256;
std::size_t aligned(std::size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// Everything one call needs on the device, laid out in one workspace: the layer table and work
// lists (built here and copied in one host-to-device copy), then the scratch. With `grads` (a
// backward call): no style work list; the gradient table after the work lists; the scratch holds
// meanpool's channel sums and its per-channel gradient.
struct Plan {
  std::vector<cuda::DeviceLayer> layers;
  std::vector<cuda::PointwiseItem> pointwise;
  std::vector<cuda::StyleItem> style;
  std::vector<cuda::GradLayer> grad_layers;
  std::int64_t total_c = 0, total_hw = 0;
  std::size_t pointwise_at = 0, style_at = 0, grads_at = 0, tables_bytes = 0, inv_at = 0, sums_at = 0, spread_at = 0,
              bytes = 0;

  explicit Plan(const FusedArgs& args, const std::vector<GradLayerArgs>* grads = nullptr) {
    for (std::size_t l = 0; l < args.layers.size(); ++l) {
      const LayerArgs& a = args.layers[l];
      cuda::DeviceLayer d{};
      for (int k = 0; k < 3; ++k) {
        d.maps[k] = reinterpret_cast<const void*>(a.maps[k]);
        d.batch_stride[k] = a.batch_stride[k];
      }
      d.channels = a.channels;
      d.positions = a.positions;
      d.lin = reinterpret_cast<const float*>(a.lin);
      d.dists = reinterpret_cast<const float*>(a.dists);
      d.channel_offset = total_c;
      d.position_offset = total_hw;
      layers.push_back(d);
      total_c += a.channels;
      total_hw += a.positions;
      for (std::int64_t p = 0; p < a.positions; p += cuda::kTileP)
        pointwise.push_back({static_cast<std::int32_t>(l), static_cast<std::int32_t>(p)});
      if (grads != nullptr) {
        const GradLayerArgs& g = (*grads)[l];
        cuda::GradLayer gl{};
        for (int k = 0; k < 3; ++k) {
          gl.grads[k] = reinterpret_cast<float*>(g.grads[k]);
          gl.batch_stride[k] = g.batch_stride[k];
        }
        grad_layers.push_back(gl);
        continue;
      }
      for (std::int64_t i = 0; i < a.channels; i += cuda::kStyleTile)
        for (std::int64_t j = i; j < a.channels; j += cuda::kStyleTile)
          style.push_back({static_cast<std::int32_t>(l), static_cast<std::int32_t>(i), static_cast<std::int32_t>(j)});
    }
    pointwise_at = aligned(layers.size() * sizeof(cuda::DeviceLayer));
    style_at = pointwise_at + aligned(pointwise.size() * sizeof(cuda::PointwiseItem));
    grads_at = style_at + aligned(style.size() * sizeof(cuda::StyleItem));
    tables_bytes = grads_at + grad_layers.size() * sizeof(cuda::GradLayer);
    // Scratch only for what is asked; every element read is written first, so no memset.
    const std::size_t per_map = static_cast<std::size_t>(args.count * args.batch) * sizeof(float);
    const bool want_style = (args.distances >> kStyle) & 1u, want_mean = (args.distances >> kMeanpool) & 1u;
    inv_at = aligned(tables_bytes);
    sums_at = inv_at + aligned(want_style ? per_map * static_cast<std::size_t>(total_hw) : 0);
    spread_at = sums_at + aligned(want_mean ? 2 * per_map * static_cast<std::size_t>(total_c) : 0);  // double sums
    bytes = spread_at + (want_mean && grads != nullptr ? per_map * static_cast<std::size_t>(total_c) : 0);
  }

  // The tables as the bytes of the workspace's first tables_bytes.
  std::vector<unsigned char> packed_tables() const {
    std::vector<unsigned char> host(tables_bytes, 0);
    std::memcpy(host.data(), layers.data(), layers.size() * sizeof(cuda::DeviceLayer));
    std::memcpy(host.data() + pointwise_at, pointwise.data(), pointwise.size() * sizeof(cuda::PointwiseItem));
    std::memcpy(host.data() + style_at, style.data(), style.size() * sizeof(cuda::StyleItem));
    std::memcpy(host.data() + grads_at, grad_layers.data(), grad_layers.size() * sizeof(cuda::GradLayer));
    return host;
  }
};

template <typename T, int kCount>
void launch(cuda::Problem pb, const cuda::PointwiseItem* pointwise, std::int64_t pointwise_items,
            const cuda::StyleItem* style, std::int64_t style_items, cudaStream_t stream) {
  const unsigned batch = static_cast<unsigned>(pb.batch);
  const bool want_terms = (pb.distances & ((1u << kSpatial) | (1u << kLpips))) != 0;
  const bool want_mean = (pb.distances >> kMeanpool) & 1u;
  const bool want_style = (pb.distances >> kStyle) & 1u;
  if (want_terms || want_style) {
    cuda::pointwise_kernel<T, kCount><<<dim3(static_cast<unsigned>(pointwise_items), batch),
                                        dim3(cuda::kTileP, cuda::kChanLanes), 0, stream>>>(pb, pointwise);
    check(cudaGetLastError(), "pointwise_kernel launch");
  }
  if (want_style && style_items > 0) {
    cuda::style_kernel<T, kCount><<<dim3(static_cast<unsigned>(style_items), batch),
                                    dim3(cuda::kStyleThreads, cuda::kStyleThreads), 0, stream>>>(pb, style);
    check(cudaGetLastError(), "style_kernel launch");
  }
  if (want_mean) {
    cuda::meanpool_kernel<T, kCount><<<dim3(static_cast<unsigned>(pb.layer_count), batch), 256, 0, stream>>>(pb);
    check(cudaGetLastError(), "meanpool_kernel launch");
  }
  if ((pb.distances >> kDists) & 1u) {
    cuda::dists_kernel<T, kCount><<<dim3(static_cast<unsigned>(pb.layer_count), batch), 256, 0, stream>>>(pb);
    check(cudaGetLastError(), "dists_kernel launch");
  }
}

template <typename T>
void launch_count(int count, const cuda::Problem& pb, const cuda::PointwiseItem* pointwise, std::int64_t pointwise_items,
                  const cuda::StyleItem* style, std::int64_t style_items, cudaStream_t stream) {
  if (count == 3) {
    launch<T, 3>(pb, pointwise, pointwise_items, style, style_items, stream);
  } else {
    launch<T, 2>(pb, pointwise, pointwise_items, style, style_items, stream);
  }
}

// What the CUDA kernels add to the shared argument checks.
void check_cuda_limits(const FusedArgs& args) {
  for (const LayerArgs& layer : args.layers)
    if (layer.channels_last) throw std::invalid_argument("the CUDA kernels take NCHW maps; channels_last is CPU-only");
  if (args.batch > kMaxCudaBatch)
    throw std::invalid_argument("the CUDA kernels take at most " + std::to_string(kMaxCudaBatch) +
                                " samples per call (grid axis 1); split the batch");
}

void check_cuda_args(const FusedArgs& args) {
  check_fused_args(args);
  check_cuda_limits(args);
}

void check_cuda_backward_args(const FusedArgs& args, const std::vector<GradLayerArgs>& grads) {
  check_backward_args(args, grads);
  check_cuda_limits(args);
  if (args.element != ElementType::kFloat32) throw std::invalid_argument("the CUDA backward kernels take float32 maps");
}

// Checks the workspace, refuses stream capture, copies the plan's tables in: the device base pointer.
unsigned char* stage(const Plan& plan, std::uintptr_t workspace, std::size_t workspace_bytes, cudaStream_t stream,
                     const char* entry) {
  if (workspace == 0 || workspace % kAlign != 0 || workspace_bytes < plan.bytes)
    throw std::invalid_argument("workspace must be " + std::to_string(plan.bytes) + " bytes aligned to " +
                                std::to_string(kAlign) + " (" + entry + "_workspace_bytes), got " +
                                std::to_string(workspace_bytes) + " bytes");
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  check(cudaStreamIsCapturing(stream, &capture), "cudaStreamIsCapturing");
  if (capture != cudaStreamCaptureStatusNone)
    throw std::runtime_error(std::string(entry) + " cannot be captured in a CUDA graph (it copies per-call work lists)");
  unsigned char* base = reinterpret_cast<unsigned char*>(workspace);
  // From pageable memory the copy returns once the bytes are staged, so `tables` may go away after it.
  const std::vector<unsigned char> tables = plan.packed_tables();
  check(cudaMemcpyAsync(base, tables.data(), tables.size(), cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync");
  return base;
}

cuda::Problem problem(const FusedArgs& args, const Plan& plan, unsigned char* base) {
  cuda::Problem pb{};
  pb.layers = reinterpret_cast<const cuda::DeviceLayer*>(base);
  pb.batch = args.batch;
  pb.layer_count = static_cast<std::int64_t>(args.layers.size());
  pb.total_channels = plan.total_c;
  pb.total_positions = plan.total_hw;
  pb.distances = args.distances;
  pb.inv_norm = (args.distances >> kStyle) & 1u ? reinterpret_cast<float*>(base + plan.inv_at) : nullptr;
  pb.channel_sums = (args.distances >> kMeanpool) & 1u ? reinterpret_cast<double*>(base + plan.sums_at) : nullptr;
  pb.out = reinterpret_cast<float*>(args.out);
  return pb;
}

template <int kCount>
void launch_backward(const cuda::BackwardProblem& bp, const cuda::PointwiseItem* pointwise, std::int64_t pointwise_items,
                     cudaStream_t stream) {
  const unsigned batch = static_cast<unsigned>(bp.forward.batch);
  if ((bp.forward.distances >> kMeanpool) & 1u) {  // spread first: the pointwise kernel reads it
    cuda::meanpool_backward_kernel<kCount><<<dim3(static_cast<unsigned>(bp.forward.layer_count), batch), 256, 0, stream>>>(bp);
    check(cudaGetLastError(), "meanpool_backward_kernel launch");
  }
  cuda::pointwise_backward_kernel<kCount><<<dim3(static_cast<unsigned>(pointwise_items), batch),
                                            dim3(cuda::kTileP, cuda::kChanLanes), 0, stream>>>(bp, pointwise);
  check(cudaGetLastError(), "pointwise_backward_kernel launch");
}

}  // namespace

std::size_t fused_distance_cuda_workspace_bytes(const FusedArgs& args) {
  check_cuda_args(args);
  return Plan(args).bytes;
}

std::size_t fused_distance_backward_cuda_workspace_bytes(const FusedArgs& args, const std::vector<GradLayerArgs>& grads) {
  check_cuda_backward_args(args, grads);
  return Plan(args, &grads).bytes;
}

void fused_distance_backward_cuda(const FusedArgs& args, const std::vector<GradLayerArgs>& grads, std::uintptr_t workspace,
                                  std::size_t workspace_bytes, std::uintptr_t stream_handle) {
  check_cuda_backward_args(args, grads);
  if (args.batch == 0) return;
  const Plan plan(args, &grads);
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  unsigned char* base = stage(plan, workspace, workspace_bytes, stream, "fused_distance_backward_cuda");
  cuda::BackwardProblem bp{};
  bp.forward = problem(args, plan, base);
  bp.grads = reinterpret_cast<const cuda::GradLayer*>(base + plan.grads_at);
  bp.spread = (args.distances >> kMeanpool) & 1u ? reinterpret_cast<float*>(base + plan.spread_at) : nullptr;
  const auto* pointwise = reinterpret_cast<const cuda::PointwiseItem*>(base + plan.pointwise_at);
  const auto items = static_cast<std::int64_t>(plan.pointwise.size());
  if (args.count == 3) {
    launch_backward<3>(bp, pointwise, items, stream);
  } else {
    launch_backward<2>(bp, pointwise, items, stream);
  }
}

void fused_distance_cuda(const FusedArgs& args, std::uintptr_t workspace, std::size_t workspace_bytes,
                         std::uintptr_t stream_handle) {
  check_cuda_args(args);
  if (args.batch == 0) return;
  const Plan plan(args);
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  unsigned char* base = stage(plan, workspace, workspace_bytes, stream, "fused_distance_cuda");
  const std::int64_t L = static_cast<std::int64_t>(args.layers.size());
  cuda::Problem pb = problem(args, plan, base);
  // Requested slots accumulate atomically from zero; the others keep what the caller put there.
  const std::size_t slot = static_cast<std::size_t>((args.count - 1) * args.batch * L);
  for (int d = 0; d < kNumDistances; ++d) {
    if ((args.distances >> d) & 1u) check(cudaMemsetAsync(pb.out + d * slot, 0, slot * sizeof(float), stream), "cudaMemsetAsync");
  }

  const auto* pointwise = reinterpret_cast<const cuda::PointwiseItem*>(base + plan.pointwise_at);
  const auto* style = reinterpret_cast<const cuda::StyleItem*>(base + plan.style_at);
  const auto items_p = static_cast<std::int64_t>(plan.pointwise.size()), items_s = static_cast<std::int64_t>(plan.style.size());
  switch (args.element) {
    case ElementType::kFloat32:
      launch_count<float>(args.count, pb, pointwise, items_p, style, items_s, stream);
      break;
    case ElementType::kBFloat16:
      launch_count<__nv_bfloat16>(args.count, pb, pointwise, items_p, style, items_s, stream);
      break;
    case ElementType::kFloat16:
      launch_count<__half>(args.count, pb, pointwise, items_p, style, items_s, stream);
      break;
  }
}

}  // namespace perceptual_fast
