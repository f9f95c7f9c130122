// CUDA launchers of the fused distance op: work lists and scratch in a caller-given workspace
// (a torch tensor, so it comes from torch's caching allocator), launches on the caller's stream.
#include <cuda_runtime.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "csrc/fused_distance.h"
#include "kernels/cuda/fused_distance.cuh"

namespace perceptual_fast {

namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
}

constexpr std::size_t kAlign = 256;
std::size_t aligned(std::size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// Everything one call needs on the device, laid out in one workspace: the layer table and work
// lists (built here and copied in one host-to-device copy), then the float32 scratch.
struct Plan {
  std::vector<cuda::DeviceLayer> layers;
  std::vector<cuda::PointwiseItem> pointwise;
  std::vector<cuda::StyleItem> style;
  std::int64_t total_c = 0, total_hw = 0;
  std::size_t pointwise_at = 0, style_at = 0, tables_bytes = 0, inv_at = 0, sums_at = 0, bytes = 0;

  explicit Plan(const FusedArgs& args) {
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
      d.channel_offset = total_c;
      d.position_offset = total_hw;
      layers.push_back(d);
      total_c += a.channels;
      total_hw += a.positions;
      for (std::int64_t p = 0; p < a.positions; p += cuda::kTileP)
        pointwise.push_back({static_cast<std::int32_t>(l), static_cast<std::int32_t>(p)});
      for (std::int64_t i = 0; i < a.channels; i += cuda::kStyleTile)
        for (std::int64_t j = i; j < a.channels; j += cuda::kStyleTile)
          style.push_back({static_cast<std::int32_t>(l), static_cast<std::int32_t>(i), static_cast<std::int32_t>(j)});
    }
    pointwise_at = aligned(layers.size() * sizeof(cuda::DeviceLayer));
    style_at = pointwise_at + aligned(pointwise.size() * sizeof(cuda::PointwiseItem));
    tables_bytes = style_at + style.size() * sizeof(cuda::StyleItem);
    // Scratch only for what is asked; every element read is written first, so no memset.
    const std::size_t per_map = static_cast<std::size_t>(args.count * args.batch) * sizeof(float);
    const bool want_style = (args.distances >> kStyle) & 1u, want_mean = (args.distances >> kMeanpool) & 1u;
    inv_at = aligned(tables_bytes);
    sums_at = inv_at + aligned(want_style ? per_map * static_cast<std::size_t>(total_hw) : 0);
    bytes = sums_at + (want_mean ? 2 * per_map * static_cast<std::size_t>(total_c) : 0);  // double sums
  }

  // The tables as the bytes of the workspace's first tables_bytes.
  std::vector<unsigned char> packed_tables() const {
    std::vector<unsigned char> host(tables_bytes, 0);
    std::memcpy(host.data(), layers.data(), layers.size() * sizeof(cuda::DeviceLayer));
    std::memcpy(host.data() + pointwise_at, pointwise.data(), pointwise.size() * sizeof(cuda::PointwiseItem));
    std::memcpy(host.data() + style_at, style.data(), style.size() * sizeof(cuda::StyleItem));
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

void check_cuda_args(const FusedArgs& args) {
  check_fused_args(args);
  for (const LayerArgs& layer : args.layers)
    if (layer.channels_last) throw std::invalid_argument("the CUDA kernels take NCHW maps; channels_last is CPU-only");
  if (args.batch > kMaxCudaBatch)
    throw std::invalid_argument("the CUDA kernels take at most " + std::to_string(kMaxCudaBatch) +
                                " samples per call (grid axis 1); split the batch");
}

}  // namespace

std::size_t fused_distance_cuda_workspace_bytes(const FusedArgs& args) {
  check_cuda_args(args);
  return Plan(args).bytes;
}

void fused_distance_cuda(const FusedArgs& args, std::uintptr_t workspace, std::size_t workspace_bytes,
                         std::uintptr_t stream_handle) {
  check_cuda_args(args);
  if (args.batch == 0) return;
  const Plan plan(args);
  if (workspace == 0 || workspace % kAlign != 0 || workspace_bytes < plan.bytes)
    throw std::invalid_argument("workspace must be " + std::to_string(plan.bytes) + " bytes aligned to " +
                                std::to_string(kAlign) + " (fused_distance_cuda_workspace_bytes), got " +
                                std::to_string(workspace_bytes) + " bytes");
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  check(cudaStreamIsCapturing(stream, &capture), "cudaStreamIsCapturing");
  if (capture != cudaStreamCaptureStatusNone)
    throw std::runtime_error("fused_distance_cuda cannot be captured in a CUDA graph (it copies per-call work lists)");

  unsigned char* base = reinterpret_cast<unsigned char*>(workspace);
  // From pageable memory the copy returns once the bytes are staged, so `tables` may go away after it.
  const std::vector<unsigned char> tables = plan.packed_tables();
  check(cudaMemcpyAsync(base, tables.data(), tables.size(), cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync");
  const std::int64_t L = static_cast<std::int64_t>(args.layers.size());
  cuda::Problem pb{};
  pb.layers = reinterpret_cast<const cuda::DeviceLayer*>(base);
  pb.batch = args.batch;
  pb.layer_count = L;
  pb.total_channels = plan.total_c;
  pb.total_positions = plan.total_hw;
  pb.distances = args.distances;
  pb.inv_norm = (args.distances >> kStyle) & 1u ? reinterpret_cast<float*>(base + plan.inv_at) : nullptr;
  pb.channel_sums = (args.distances >> kMeanpool) & 1u ? reinterpret_cast<double*>(base + plan.sums_at) : nullptr;
  pb.out = reinterpret_cast<float*>(args.out);
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
