// pybind11 module perceptual_fast._C. It takes raw data pointers (Tensor.data_ptr()) with
// shapes and strides rather than torch tensors, so the extension does not link against libtorch:
// it builds in seconds, without torch in the build environment, and works with any torch version.
// The Python wrappers (perceptual_fast/ops/fused_distance/cpu.py, cuda.py) check dtype, device and layout first.
#include <omp.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "csrc/fused_distance.h"
#include "csrc/max_pool2d.h"
#include "csrc/scale_images.h"
#include "kernels/distance_slots.h"

namespace py = pybind11;

namespace {

// (a, b, c, stride_a, stride_b, stride_c, channels, positions, lin, dists, channels_last) per layer.
using LayerTuple = std::tuple<std::uintptr_t, std::uintptr_t, std::uintptr_t, std::int64_t, std::int64_t,
                              std::int64_t, std::int64_t, std::int64_t, std::uintptr_t, std::uintptr_t, bool>;

// (grad0, grad1, grad2, stride0, stride1, stride2) per layer: where the backward writes each map's gradient.
using GradTuple = std::tuple<std::uintptr_t, std::uintptr_t, std::uintptr_t, std::int64_t, std::int64_t, std::int64_t>;

perceptual_fast::FusedArgs make_args(const std::vector<LayerTuple>& layers, std::int64_t batch, int count,
                                     unsigned distances, const std::string& element, std::uintptr_t out, int threads = 0) {
  perceptual_fast::FusedArgs args;
  for (const auto& t : layers) {
    perceptual_fast::LayerArgs layer{};
    layer.maps[0] = std::get<0>(t);
    layer.maps[1] = std::get<1>(t);
    layer.maps[2] = std::get<2>(t);
    layer.batch_stride[0] = std::get<3>(t);
    layer.batch_stride[1] = std::get<4>(t);
    layer.batch_stride[2] = std::get<5>(t);
    layer.channels = std::get<6>(t);
    layer.positions = std::get<7>(t);
    layer.lin = std::get<8>(t);
    layer.dists = std::get<9>(t);
    layer.channels_last = std::get<10>(t);
    args.layers.push_back(layer);
  }
  args.batch = batch;
  args.count = count;
  args.distances = distances;
  args.element = perceptual_fast::parse_element_type(element);
  args.out = out;
  args.threads = threads;
  return args;  // checked by the entry point it is passed to
}

std::vector<perceptual_fast::GradLayerArgs> grad_rows(const std::vector<GradTuple>& grads) {
  std::vector<perceptual_fast::GradLayerArgs> rows;
  for (const auto& t : grads)
    rows.push_back({{std::get<0>(t), std::get<1>(t), std::get<2>(t)}, {std::get<3>(t), std::get<4>(t), std::get<5>(t)}});
  return rows;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "perceptual_fast C++ kernels (CPU; CUDA when built with it)";

  m.def(
      "fused_distance_cpu",
      [](const std::vector<LayerTuple>& layers, std::int64_t batch, int count, unsigned distances,
         const std::string& element, std::uintptr_t out, int threads) {
        const auto args = make_args(layers, batch, count, distances, element, out, threads);
        py::gil_scoped_release release;
        perceptual_fast::fused_distance_cpu(args);
      },
      py::arg("layers"), py::arg("batch"), py::arg("count"), py::arg("distances"), py::arg("element"), py::arg("out"),
      py::arg("threads") = 0,
      "Every requested distance of every layer in one call. layers: (a, b, c, stride_a, stride_b, stride_c, C, HW,\n"
      "lin, dists, channels_last) per layer (data pointers of NCHW or NHWC maps; c = 0 for a pair; lin: [C] lpips\n"
      "weights, dists: [2, C] DISTS alpha/beta, float32, 0 when not used). distances: bit mask (bit d: DISTANCE_SLOTS[d];\n"
      "1 lpips, 2 spatial, 4 meanpool, 8 style, 16 dists). element: 'float32' or 'bfloat16'. out: float32 [5, count - 1, N, L].");

  m.def(
      "scale_images_cpu",
      [](std::uintptr_t x, const std::string& element, std::int64_t images, std::int64_t positions, std::uintptr_t alpha,
         std::uintptr_t beta, std::uintptr_t out, bool channels_last, int threads) {
        if (element != "uint8" && element != "float32") throw std::invalid_argument("element must be 'uint8' or 'float32', got '" + element + "'");
        py::gil_scoped_release release;
        perceptual_fast::scale_images_cpu(reinterpret_cast<const void*>(x), element == "uint8", images, positions,
                                          reinterpret_cast<const float*>(alpha), reinterpret_cast<const float*>(beta),
                                          reinterpret_cast<float*>(out), channels_last, threads);
      },
      py::arg("x"), py::arg("element"), py::arg("images"), py::arg("positions"), py::arg("alpha"), py::arg("beta"),
      py::arg("out"), py::arg("channels_last"), py::arg("threads") = 0,
      "out = float(x) * alpha[c] + beta[c] in one pass (LPIPS's input scaling). x: contiguous NCHW RGB images, uint8\n"
      "or float32 (element); alpha, beta: float32 [3]; out: float32 [images, 3, positions] (NCHW) or\n"
      "[images, positions, 3] (channels_last). Bit for bit torch's x.float() * alpha + beta.");

  m.def(
      "max_pool2d_cpu",
      [](std::uintptr_t x, std::int64_t images, std::int64_t height, std::int64_t width, std::int64_t channels,
         const std::vector<std::int64_t>& window, std::uintptr_t out, std::int64_t out_h, std::int64_t out_w, int threads) {
        if (window.size() != 6) throw std::invalid_argument("window must be (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w)");
        const perceptual_fast::PoolWindow w{window[0], window[1], window[2], window[3], window[4], window[5]};
        py::gil_scoped_release release;
        perceptual_fast::max_pool2d_cpu(reinterpret_cast<const float*>(x), images, height, width, channels, w,
                                        reinterpret_cast<float*>(out), out_h, out_w, threads);
      },
      py::arg("x"), py::arg("images"), py::arg("height"), py::arg("width"), py::arg("channels"), py::arg("window"),
      py::arg("out"), py::arg("out_h"), py::arg("out_w"), py::arg("threads") = 0,
      "Max pooling without indices. x: float32 [images, height, width, channels] (channels_last memory); window:\n"
      "(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w); out: float32 [images, out_h, out_w, channels]. Equal\n"
      "to torch's max_pool2d values (NaN propagates).");

  m.def(
      "fused_distance_backward_cpu",
      [](const std::vector<LayerTuple>& layers, std::int64_t batch, int count, unsigned distances,
         const std::string& element, std::uintptr_t grad_terms, const std::vector<GradTuple>& grads, int threads) {
        const auto args = make_args(layers, batch, count, distances, element, grad_terms, threads);
        const auto rows = grad_rows(grads);
        py::gil_scoped_release release;
        perceptual_fast::fused_distance_backward_cpu(args, rows);
      },
      py::arg("layers"), py::arg("batch"), py::arg("count"), py::arg("distances"), py::arg("element"),
      py::arg("grad_terms"), py::arg("grads"), py::arg("threads") = 0,
      "Backward of lpips, spatial and meanpool (style and dists: the caller's). layers, batch, count, distances, element: as fused_distance_cpu.\n"
      "grad_terms: float32 [5, count - 1, N, L] upstream gradient. grads: (g0, g1, g2, stride0, stride1, stride2) per\n"
      "layer: float32 outputs laid out as that layer's maps (0: no gradient for that map).");

#ifdef PERCEPTUAL_FAST_WITH_CUDA
  m.def(
      "fused_distance_cuda_workspace_bytes",
      [](const std::vector<LayerTuple>& layers, std::int64_t batch, int count, unsigned distances, const std::string& element,
         std::uintptr_t out) {
        return perceptual_fast::fused_distance_cuda_workspace_bytes(make_args(layers, batch, count, distances, element, out));
      },
      py::arg("layers"), py::arg("batch"), py::arg("count"), py::arg("distances"), py::arg("element"), py::arg("out"),
      "Bytes of device workspace fused_distance_cuda needs for these arguments (tables and scratch).");
  m.def(
      "fused_distance_cuda",
      [](const std::vector<LayerTuple>& layers, std::int64_t batch, int count, unsigned distances,
         const std::string& element, std::uintptr_t out, std::uintptr_t workspace, std::size_t workspace_bytes,
         std::uintptr_t stream) {
        const auto args = make_args(layers, batch, count, distances, element, out);
        py::gil_scoped_release release;
        perceptual_fast::fused_distance_cuda(args, workspace, workspace_bytes, stream);
      },
      py::arg("layers"), py::arg("batch"), py::arg("count"), py::arg("distances"), py::arg("element"), py::arg("out"),
      py::arg("workspace"), py::arg("workspace_bytes"), py::arg("stream"),
      "fused_distance_cpu's contract on device pointers, launched on `stream` (a cudaStream_t as an integer), with\n"
      "a device workspace of fused_distance_cuda_workspace_bytes(...) bytes, 256-byte aligned. element: 'float32',\n"
      "'bfloat16' or 'float16'. At most 65535 samples per call.");
  m.def(
      "fused_distance_backward_cuda_workspace_bytes",
      [](const std::vector<LayerTuple>& layers, std::int64_t batch, int count, unsigned distances, const std::string& element,
         std::uintptr_t grad_terms, const std::vector<GradTuple>& grads) {
        return perceptual_fast::fused_distance_backward_cuda_workspace_bytes(
            make_args(layers, batch, count, distances, element, grad_terms), grad_rows(grads));
      },
      py::arg("layers"), py::arg("batch"), py::arg("count"), py::arg("distances"), py::arg("element"),
      py::arg("grad_terms"), py::arg("grads"), "Bytes of device workspace fused_distance_backward_cuda needs.");
  m.def(
      "fused_distance_backward_cuda",
      [](const std::vector<LayerTuple>& layers, std::int64_t batch, int count, unsigned distances, const std::string& element,
         std::uintptr_t grad_terms, const std::vector<GradTuple>& grads, std::uintptr_t workspace, std::size_t workspace_bytes,
         std::uintptr_t stream) {
        const auto args = make_args(layers, batch, count, distances, element, grad_terms);
        const auto rows = grad_rows(grads);
        py::gil_scoped_release release;
        perceptual_fast::fused_distance_backward_cuda(args, rows, workspace, workspace_bytes, stream);
      },
      py::arg("layers"), py::arg("batch"), py::arg("count"), py::arg("distances"), py::arg("element"),
      py::arg("grad_terms"), py::arg("grads"), py::arg("workspace"), py::arg("workspace_bytes"), py::arg("stream"),
      "fused_distance_backward_cpu's contract on device pointers (float32 NCHW maps), launched on `stream` with a\n"
      "device workspace of fused_distance_backward_cuda_workspace_bytes(...) bytes, 256-byte aligned.");
  m.attr("has_cuda") = true;
#ifdef PERCEPTUAL_FAST_CUDA_ARCHS
  m.attr("cuda_archs") = py::str(PERCEPTUAL_FAST_CUDA_ARCHS).attr("split")(",");  // CMake's list, e.g. 80-real,90
#endif
#else
  m.attr("has_cuda") = false;
#endif
  py::tuple slots(static_cast<std::size_t>(perceptual_fast::kNumDistances));
  for (int d = 0; d < perceptual_fast::kNumDistances; ++d) slots[d] = perceptual_fast::kDistanceNames[d];
  m.attr("DISTANCE_SLOTS") = slots;  // the output slot order (kernels/distance_slots.h)
  m.def("max_threads", []() { return omp_get_max_threads(); }, "OpenMP's default thread count");
  m.def("last_cpu_threads", &perceptual_fast::last_cpu_threads,
        "OpenMP threads the last CPU kernel call ran with (the `threads` it was given: the cpp backend passes torch's)");
  m.def("cpu_isa_variants", &perceptual_fast::cpu_isa_variants,
        "The CPU kernels' compiled ISA variants as (name, this CPU runs it), least capable first");
  m.def("cpu_isa", &perceptual_fast::cpu_isa,
        "The CPU kernel variant in use: the best this CPU runs, or PERCEPTUAL_FAST_CPU_ISA (chosen at the first call)");
  m.def("set_cpu_isa", &perceptual_fast::set_cpu_isa, py::arg("name"),
        "Switches the CPU kernel variant (tests, benchmarks); returns the previous one's name");
  m.def("cpu_features", &perceptual_fast::cpu_features, "This CPU's ISA features as (name, supported)");
}
