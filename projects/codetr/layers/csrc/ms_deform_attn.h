// Multi-scale deformable attention: declarations shared by the registration and the kernels.
//
// Shapes (see codetr/layers/ms_deform_attn.py for the full contract):
//   value              (N, S, M, D)          float32/float64/float16/bfloat16, contiguous
//   spatial_shapes     (L, 2)  int64         (H, W) per level
//   level_start_index  (L,)    int64
//   sampling_locations (N, Q, M, L, P, 2)    opmath dtype (float64 for double value, else float32)
//   attention_weights  (N, Q, M, L, P)       opmath dtype
//   output             (N, Q, M * D)         dtype of value
#pragma once
#include <torch/types.h>

#include <tuple>

#include "dims.h"

namespace codetr {

// The sizes of a call, read from value (N, S, M, D) and sampling_locations (N, Q, M, L, P, 2).
Dims ms_deform_attn_dims(const at::Tensor& value, const at::Tensor& sampling_locations);

// Checks grad_output (N, Q, M * D) and returns zero-initialised (grad_value, grad_locations,
// grad_weights); grad_value is in the accumulation dtype (float32 for half types).
std::tuple<at::Tensor, at::Tensor, at::Tensor> zero_grads_for_backward(
    const at::Tensor& grad_output,
    const at::Tensor& value,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const Dims& k);

at::Tensor ms_deform_attn_forward_cpu(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights);

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& grad_output,
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights);

// Checks shared by every backend: ranks, sizes and dtypes that the kernels rely on. The Python
// wrapper validates user input with friendlier messages first; these guard direct op calls.
void check_ms_deform_attn_args(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights);

}  // namespace codetr
