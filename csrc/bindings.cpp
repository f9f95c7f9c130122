// pybind11 module perceptual_fast._C. It takes raw data pointers (Tensor.data_ptr()) with
// shapes and strides rather than torch tensors, so the extension does not link against libtorch:
// it builds in seconds, without torch in the build environment, and works with any torch version.
// The Python wrapper (perceptual_fast/backends/cpp.py) checks dtype, device and layout first.
#include <omp.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>

#include "csrc/spatial_term_cpu.h"

namespace py = pybind11;

namespace {

template <typename T>
T* as_pointer(std::uintptr_t address, const char* what, bool allow_null = false) {
  if (address == 0 && !allow_null) throw std::invalid_argument(std::string(what) + " is a null pointer");
  if (address % alignof(T) != 0) throw std::invalid_argument(std::string(what) + " is not aligned for its dtype");
  return reinterpret_cast<T*>(address);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "perceptual_fast C++ kernels (CPU; CUDA when built with it)";

  m.def(
      "spatial_term_f32",
      [](std::uintptr_t y0, std::uintptr_t y1, std::uintptr_t weight, std::uintptr_t out, int64_t batch,
         int64_t channels, int64_t positions, int64_t stride_n0, int64_t stride_n1, int64_t stride_c,
         int64_t stride_p) {
        const perceptual_fast::PairLayout layout{batch, channels, positions, stride_n0, stride_n1, stride_c, stride_p};
        perceptual_fast::check_pair_layout(layout);
        if (batch == 0) return;
        perceptual_fast::spatial_term_cpu(as_pointer<const float>(y0, "y0"), as_pointer<const float>(y1, "y1"),
                                          as_pointer<const float>(weight, "weight", /*allow_null=*/true),
                                          as_pointer<float>(out, "out"), layout);
      },
      py::arg("y0"), py::arg("y1"), py::arg("weight"), py::arg("out"), py::arg("batch"), py::arg("channels"),
      py::arg("positions"), py::arg("stride_n0"), py::arg("stride_n1"), py::arg("stride_c"), py::arg("stride_p"),
      py::call_guard<py::gil_scoped_release>(),
      "out[n] = mean_p sum_c w_c (y0/|y0| - y1/|y1|)^2 over float32 feature maps given by data pointers.\n"
      "weight = 0 means w_c = 1. Strides are in elements; stride_p == 1 (NCHW) or stride_c == 1 (channels_last).");

  m.def("max_threads", []() { return omp_get_max_threads(); }, "OpenMP threads the kernels use");
  m.attr("has_cuda") = false;
}
