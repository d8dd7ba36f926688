// Sizes of one multi-scale deformable attention call (no torch headers: the AVX2 kernels include it).
#pragma once
#include <cstdint>

namespace codetr {

struct Dims {
  int64_t N, S, M, D, Q, L, P;  // batch, value positions, heads, channels/head, queries, levels, points
};

}  // namespace codetr
