// CPU backend of codetr::ms_deform_attn: tensor handling, parallelism and ISA dispatch. The inner
// loops are in kernels.h, compiled for the baseline ISA and for AVX2 + FMA.
//
// Forward: parallel over (batch, query). Backward: parallel over (batch, head, level): the
// grad_value rows of different tasks are disjoint, so no atomics or per-thread copies are needed
// and the result is deterministic; every task does the same work (Q * P samples).
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "../ms_deform_attn.h"
#include "kernel_args.h"

namespace codetr {

CODETR_DECLARE_CPU_KERNELS(cpu_default)
#if defined(__x86_64__) || defined(_M_X64)
CODETR_DECLARE_CPU_KERNELS(cpu_avx2)
#endif

namespace {

bool use_avx2() {
#if defined(__x86_64__) || defined(_M_X64)
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

template <typename scalar_t, typename acc_t>
void run_forward(const ForwardArgs<scalar_t, acc_t>& args) {
  const Dims& k = args.dims;
  // ~ a few thousand bilinear samples per task keeps scheduling overhead negligible
  const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, k.M * k.L * k.P));
  at::parallel_for(0, k.N * k.Q, grain, [&](int64_t begin, int64_t end) {
#if defined(__x86_64__) || defined(_M_X64)
    if (use_avx2()) return cpu_avx2::forward_range(args, begin, end);
#endif
    cpu_default::forward_range(args, begin, end);
  });
}

template <typename scalar_t, typename acc_t>
void run_backward(const BackwardArgs<scalar_t, acc_t>& args) {
  const Dims& k = args.dims;
  at::parallel_for(0, k.N * k.M * k.L, 1, [&](int64_t begin, int64_t end) {
#if defined(__x86_64__) || defined(_M_X64)
    if (use_avx2()) return cpu_avx2::backward_range(args, begin, end);
#endif
    cpu_default::backward_range(args, begin, end);
  });
}

}  // namespace

at::Tensor ms_deform_attn_forward_cpu(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  check_ms_deform_attn_args(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const Dims k = ms_deform_attn_dims(value, sampling_locations);
  auto out = at::zeros({k.N, k.Q, k.M * k.D}, value.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    run_forward<scalar_t, acc_t>(
        {value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(), level_start_index.data_ptr<int64_t>(),
         sampling_locations.data_ptr<acc_t>(), attention_weights.data_ptr<acc_t>(), out.data_ptr<scalar_t>(), k});
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& grad_output,
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  check_ms_deform_attn_args(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  const Dims k = ms_deform_attn_dims(value, sampling_locations);
  at::Tensor grad_value, grad_loc, grad_attn;
  std::tie(grad_value, grad_loc, grad_attn) =
      zero_grads_for_backward(grad_output, value, sampling_locations, attention_weights, k);
  if (grad_loc.numel() != 0 && value.numel() != 0) {
    const auto go = grad_output.contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      run_backward<scalar_t, acc_t>(
          {go.data_ptr<scalar_t>(), value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
           level_start_index.data_ptr<int64_t>(), sampling_locations.data_ptr<acc_t>(),
           attention_weights.data_ptr<acc_t>(), grad_value.data_ptr<acc_t>(), grad_loc.data_ptr<acc_t>(),
           grad_attn.data_ptr<acc_t>(), k});
    });
  }
  return {grad_value.to(value.scalar_type()), grad_loc, grad_attn};
}

TORCH_LIBRARY_IMPL(codetr, CPU, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_forward_cpu);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cpu);
}

}  // namespace codetr
