// Plain-pointer arguments of the CPU kernels (see kernels.h).
#pragma once
#include <cstdint>

#include "../dims.h"

namespace codetr {

template <typename scalar_t, typename acc_t>
struct ForwardArgs {
  const scalar_t* value;   // (N, S, M, D)
  const int64_t* shapes;   // (L, 2)
  const int64_t* starts;   // (L,)
  const acc_t* loc;        // (N, Q, M, L, P, 2)
  const acc_t* attn;       // (N, Q, M, L, P)
  scalar_t* out;           // (N, Q, M, D)
  Dims dims;
};

template <typename scalar_t, typename acc_t>
struct BackwardArgs {
  const scalar_t* grad_out;  // (N, Q, M, D)
  const scalar_t* value;     // (N, S, M, D)
  const int64_t* shapes;
  const int64_t* starts;
  const acc_t* loc;
  const acc_t* attn;
  acc_t* grad_value;  // (N, S, M, D), zero-initialised, accumulation precision
  acc_t* grad_loc;    // (N, Q, M, L, P, 2), zero-initialised
  acc_t* grad_attn;   // (N, Q, M, L, P), zero-initialised
  Dims dims;
};

// One ISA variant of the kernels: explicit instantiations live in kernels_<isa>.cpp.
#define CODETR_DECLARE_CPU_KERNELS(ns)                                                        \
  namespace ns {                                                                              \
  template <typename scalar_t, typename acc_t>                                                \
  void forward_range(const ForwardArgs<scalar_t, acc_t>& a, int64_t begin, int64_t end);      \
  template <typename scalar_t, typename acc_t>                                                \
  void backward_range(const BackwardArgs<scalar_t, acc_t>& a, int64_t begin, int64_t end);    \
  }

}  // namespace codetr
