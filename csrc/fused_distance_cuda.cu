// CUDA launchers of the fused distance op: work lists and scratch on the caller's stream.
#include <cuda_runtime.h>

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

// Stream-ordered device allocations of one call, freed on the same stream when the call ends,
// also when a check throws half-way.
class DeviceBuffers {
 public:
  explicit DeviceBuffers(cudaStream_t stream) : stream_(stream) {}
  DeviceBuffers(const DeviceBuffers&) = delete;
  DeviceBuffers& operator=(const DeviceBuffers&) = delete;
  ~DeviceBuffers() {
    for (void* ptr : owned_) cudaFreeAsync(ptr, stream_);
  }

  void* allocate(std::size_t bytes) {
    void* ptr = nullptr;
    check(cudaMallocAsync(&ptr, bytes, stream_), "cudaMallocAsync");
    owned_.push_back(ptr);
    return ptr;
  }

  // A host-to-device copy: from pageable memory it returns once the data is staged, so `host`
  // may go away after it.
  template <typename T>
  T* copy(const std::vector<T>& host) {
    void* ptr = allocate(host.size() * sizeof(T));
    check(cudaMemcpyAsync(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync");
    return static_cast<T*>(ptr);
  }

 private:
  cudaStream_t stream_;
  std::vector<void*> owned_;
};

template <typename T, int kCount>
void launch(cuda::Problem pb, const cuda::PointwiseItem* pointwise, std::int64_t pointwise_items,
            const cuda::StyleItem* style, std::int64_t style_items, cudaStream_t stream) {
  const unsigned batch = static_cast<unsigned>(pb.batch);
  const bool want_terms = (pb.distances & ((1u << cuda::kSpatial) | (1u << cuda::kLpips))) != 0;
  const bool want_mean = (pb.distances >> cuda::kMeanpool) & 1u;
  const bool want_style = (pb.distances >> cuda::kStyle) & 1u;
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

}  // namespace

void fused_distance_cuda(const FusedArgs& args, std::uintptr_t stream_handle) {
  check_fused_args(args);
  for (const LayerArgs& layer : args.layers)
    if (layer.channels_last) throw std::invalid_argument("the CUDA kernels take NCHW maps; channels_last is CPU-only");
  if (args.batch == 0) return;
  if (args.batch > 65535) throw std::invalid_argument("the CUDA kernels take at most 65535 samples per call; split the batch");
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  check(cudaStreamIsCapturing(stream, &capture), "cudaStreamIsCapturing");
  if (capture != cudaStreamCaptureStatusNone)
    throw std::runtime_error("fused_distance_cuda cannot be captured in a CUDA graph (it copies per-call work lists)");
  const int pairs = args.count - 1;
  const std::int64_t L = static_cast<std::int64_t>(args.layers.size());

  std::vector<cuda::DeviceLayer> layers;
  std::vector<cuda::PointwiseItem> pointwise;
  std::vector<cuda::StyleItem> style;
  std::int64_t total_c = 0, total_hw = 0;
  for (std::int64_t l = 0; l < L; ++l) {
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

  DeviceBuffers buffers(stream);
  cuda::Problem pb{};
  pb.layers = buffers.copy(layers);
  const cuda::PointwiseItem* pointwise_dev = buffers.copy(pointwise);
  const cuda::StyleItem* style_dev = buffers.copy(style);
  pb.batch = args.batch;
  pb.layer_count = L;
  pb.total_channels = total_c;
  pb.total_positions = total_hw;
  pb.distances = args.distances;
  // Scratch only for what is asked; every element read is written first, so no memset.
  const bool want_style = (args.distances >> cuda::kStyle) & 1u, want_mean = (args.distances >> cuda::kMeanpool) & 1u;
  const std::size_t floats = sizeof(float);
  pb.inv_norm = want_style ? static_cast<float*>(buffers.allocate(args.count * args.batch * total_hw * floats)) : nullptr;
  pb.channel_sums = want_mean ? static_cast<float*>(buffers.allocate(args.count * args.batch * total_c * floats)) : nullptr;
  pb.out = reinterpret_cast<float*>(args.out);
  // Requested slots accumulate atomically from zero; the others keep what the caller put there.
  const std::size_t slot = static_cast<std::size_t>(pairs * args.batch * L);
  for (int d = 0; d < 4; ++d) {
    if ((args.distances >> d) & 1u) check(cudaMemsetAsync(pb.out + d * slot, 0, slot * sizeof(float), stream), "cudaMemsetAsync");
  }

  const auto items_p = static_cast<std::int64_t>(pointwise.size()), items_s = static_cast<std::int64_t>(style.size());
  switch (args.element) {
    case ElementType::kFloat32:
      launch_count<float>(args.count, pb, pointwise_dev, items_p, style_dev, items_s, stream);
      break;
    case ElementType::kBFloat16:
      launch_count<__nv_bfloat16>(args.count, pb, pointwise_dev, items_p, style_dev, items_s, stream);
      break;
    case ElementType::kFloat16:
      launch_count<__half>(args.count, pb, pointwise_dev, items_p, style_dev, items_s, stream);
      break;
  }
}

}  // namespace perceptual_fast
