#include "csrc/spatial_term_cpu.h"

#include <omp.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/spatial_term.h"

namespace perceptual_fast {

void check_pair_layout(const PairLayout& l) {
  if (l.batch < 0) throw std::invalid_argument("batch size must be >= 0, got " + std::to_string(l.batch));
  if (l.channels < 1) throw std::invalid_argument("channel count must be >= 1, got " + std::to_string(l.channels));
  if (l.positions < 1)
    throw std::invalid_argument("feature maps need at least one position (H*W >= 1), got " +
                                std::to_string(l.positions));
  if (l.stride_p != 1 && l.stride_c != 1)
    throw std::invalid_argument(
        "feature maps must be NCHW-contiguous (position stride 1) or channels_last (channel stride 1); "
        "got channel stride " + std::to_string(l.stride_c) + " and position stride " + std::to_string(l.stride_p));
}

namespace {

template <bool kWeighted>
void run(const float* y0, const float* y1, const float* weight, float* out, const PairLayout& l) {
  const bool planar = l.stride_p == 1;
  // Interleaved tiles are sized so that each thread gets a few work items even at batch 1.
  const int64_t tile = planar ? cpu::kPlanarTile : std::max<int64_t>(1, std::min<int64_t>(64, l.positions));
  const int64_t tiles = (l.positions + tile - 1) / tile;
  const int64_t items = l.batch * tiles;
  std::vector<double> partial(static_cast<size_t>(items));

#pragma omp parallel for schedule(static)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t n = item / tiles;
    const int64_t first = (item % tiles) * tile;
    const int64_t count = std::min(tile, l.positions - first);
    const float* a = y0 + n * l.stride_n0 + first * l.stride_p;
    const float* b = y1 + n * l.stride_n1 + first * l.stride_p;
    partial[item] = planar ? cpu::spatial_tile_planar<kWeighted>(a, b, l.stride_c, l.channels, count, weight)
                           : cpu::spatial_tile_interleaved<kWeighted>(a, b, l.stride_p, l.channels, count, weight);
  }
  // Sum the tiles of each sample in a fixed order so results do not depend on the thread count.
  for (int64_t n = 0; n < l.batch; ++n) {
    double sum = 0.0;
    for (int64_t t = 0; t < tiles; ++t) sum += partial[n * tiles + t];
    out[n] = static_cast<float>(sum / static_cast<double>(l.positions));
  }
}

}  // namespace

void spatial_term_cpu(const float* y0, const float* y1, const float* weight, float* out,
                      const PairLayout& layout) {
  check_pair_layout(layout);
  if (weight != nullptr) {
    run<true>(y0, y1, weight, out, layout);
  } else {
    run<false>(y0, y1, weight, out, layout);
  }
}

}  // namespace perceptual_fast
