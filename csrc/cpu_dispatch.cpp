// Run-time choice among the CPU kernels' ISA variants (kernels/cpu/isa.h), as ATen's DispatchStub:
// CMakeLists.txt compiles the kernel translation units once per variant and defines
// PF_HAVE_ISA_<name> for each; this file (compiled for the baseline) picks the best variant the CPU
// supports at the first call, or the one PERCEPTUAL_FAST_CPU_ISA names.
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "csrc/fused_distance.h"
#include "csrc/max_pool2d.h"

namespace perceptual_fast {

// The variants' entry points, each in its own namespace (PF_CPU_ISA of that variant's build).
#define PF_DECLARE_VARIANT(ns)                                                               \
  namespace ns {                                                                             \
  void fused_distance_cpu(const FusedArgs& args);                                            \
  void fused_distance_backward_cpu(const FusedArgs& args, const std::vector<GradLayerArgs>& grads); \
  void max_pool2d_cpu(const float* x, std::int64_t images, std::int64_t height, std::int64_t width,   \
                      std::int64_t channels, const PoolWindow& window, float* out, std::int64_t out_h,   \
                      std::int64_t out_w, int threads);                                                 \
  }
#ifdef PF_HAVE_ISA_x86_64_v2
PF_DECLARE_VARIANT(isa_x86_64_v2)
#endif
#ifdef PF_HAVE_ISA_avx2
PF_DECLARE_VARIANT(isa_avx2)
#endif
#ifdef PF_HAVE_ISA_avx512
PF_DECLARE_VARIANT(isa_avx512)
#endif
#ifdef PF_HAVE_ISA_portable
PF_DECLARE_VARIANT(isa_portable)
#endif
#ifdef PF_HAVE_ISA_native
PF_DECLARE_VARIANT(isa_native)
#endif
#undef PF_DECLARE_VARIANT

namespace {

struct Variant {
  const char* name;
  const char* needs;  // what the CPU must have, for error messages
  bool (*supported)();
  void (*forward)(const FusedArgs&);
  void (*backward)(const FusedArgs&, const std::vector<GradLayerArgs>&);
  void (*max_pool2d)(const float*, std::int64_t, std::int64_t, std::int64_t, std::int64_t, const PoolWindow&, float*,
                     std::int64_t, std::int64_t, int);
};

[[maybe_unused]] bool always() { return true; }  // the portable and native variants need no CPU check

// Compiled variants, from the least to the most capable.
const std::vector<Variant>& variants() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
#endif
  static const std::vector<Variant> all = {
#ifdef PF_HAVE_ISA_x86_64_v2
      {"x86-64-v2", "SSE4.2 and POPCNT (x86-64-v2)", [] { return __builtin_cpu_supports("x86-64-v2") != 0; }, isa_x86_64_v2::fused_distance_cpu,
       isa_x86_64_v2::fused_distance_backward_cpu, isa_x86_64_v2::max_pool2d_cpu},
#endif
#ifdef PF_HAVE_ISA_avx2
      {"avx2", "AVX2, FMA, BMI2 and F16C (x86-64-v3)", [] { return __builtin_cpu_supports("x86-64-v3") != 0; }, isa_avx2::fused_distance_cpu,
       isa_avx2::fused_distance_backward_cpu, isa_avx2::max_pool2d_cpu},
#endif
#ifdef PF_HAVE_ISA_avx512
      {"avx512", "AVX-512 F, BW, CD, DQ and VL (x86-64-v4)", [] { return __builtin_cpu_supports("x86-64-v4") != 0; },
       isa_avx512::fused_distance_cpu, isa_avx512::fused_distance_backward_cpu, isa_avx512::max_pool2d_cpu},
#endif
#ifdef PF_HAVE_ISA_portable
      {"portable", "nothing", always, isa_portable::fused_distance_cpu, isa_portable::fused_distance_backward_cpu, isa_portable::max_pool2d_cpu},
#endif
#ifdef PF_HAVE_ISA_native
      {"native", "the build machine's instruction set (-march=native)", always, isa_native::fused_distance_cpu,
       isa_native::fused_distance_backward_cpu, isa_native::max_pool2d_cpu},
#endif
  };
  return all;
}

std::string features_text() {
  std::string out;
  for (const auto& [name, has] : cpu_features()) out += (out.empty() ? "" : ", ") + name + (has ? " yes" : " no");
  return out;
}

std::string variant_names() {
  std::string out;
  for (const Variant& v : variants()) out += (out.empty() ? "" : ", ") + std::string(v.name);
  return out;
}

const Variant& find(const std::string& name) {
  for (const Variant& v : variants()) {
    if (name != v.name) continue;
    if (!v.supported())
      throw std::invalid_argument("CPU kernel variant '" + name + "' needs " + v.needs + ", which this CPU lacks (" +
                                  features_text() + "); choose one of the variants it runs or unset PERCEPTUAL_FAST_CPU_ISA");
    return v;
  }
  throw std::invalid_argument("no CPU kernel variant '" + name + "' in this build; built: " + variant_names());
}

std::mutex chosen_mutex;
const Variant* chosen = nullptr;

const Variant& current() {
  std::lock_guard<std::mutex> lock(chosen_mutex);
  if (chosen == nullptr) {
    const char* forced = std::getenv("PERCEPTUAL_FAST_CPU_ISA");
    if (forced != nullptr && *forced != '\0') {
      chosen = &find(forced);
    } else {
      for (const Variant& v : variants())
        if (v.supported()) chosen = &v;  // the last supported is the most capable
      if (chosen == nullptr) throw std::runtime_error("this CPU runs none of the built kernel variants (" + variant_names() + ")");
    }
  }
  return *chosen;
}

}  // namespace

std::vector<std::pair<std::string, bool>> cpu_isa_variants() {
  std::vector<std::pair<std::string, bool>> out;
  for (const Variant& v : variants()) out.emplace_back(v.name, v.supported());
  return out;
}

std::string cpu_isa() { return current().name; }

std::string set_cpu_isa(const std::string& name) {
  const Variant& next = find(name);
  const std::string previous = current().name;
  std::lock_guard<std::mutex> lock(chosen_mutex);
  chosen = &next;
  return previous;
}

std::vector<std::pair<std::string, bool>> cpu_features() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  return {{"sse4.2", __builtin_cpu_supports("sse4.2")},   {"avx2", __builtin_cpu_supports("avx2")},
          {"fma", __builtin_cpu_supports("fma")},         {"avx512f", __builtin_cpu_supports("avx512f")},
          {"avx512bw", __builtin_cpu_supports("avx512bw")}, {"avx512vl", __builtin_cpu_supports("avx512vl")},
          {"avx512bf16", __builtin_cpu_supports("avx512bf16")}, {"amx-tile", __builtin_cpu_supports("amx-tile")},
          {"amx-bf16", __builtin_cpu_supports("amx-bf16")}};
#else
  return {};
#endif
}

namespace {
std::atomic<int> last_threads{0};
}  // namespace

int last_cpu_threads() { return last_threads.load(); }

void record_cpu_threads(int threads) { last_threads.store(threads); }

void fused_distance_cpu(const FusedArgs& args) { current().forward(args); }

void fused_distance_backward_cpu(const FusedArgs& args, const std::vector<GradLayerArgs>& grads) {
  current().backward(args, grads);
}

void max_pool2d_cpu(const float* x, std::int64_t images, std::int64_t height, std::int64_t width, std::int64_t channels,
                    const PoolWindow& window, float* out, std::int64_t out_h, std::int64_t out_w, int threads) {
  current().max_pool2d(x, images, height, width, channels, window, out, out_h, out_w, threads);
}

}  // namespace perceptual_fast
