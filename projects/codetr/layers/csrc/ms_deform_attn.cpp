// Operator schemas for codetr::ms_deform_attn and its backward, plus the Python module codetr._C.
// Backend kernels register themselves in cpu/ and cuda/; autograd and fake (meta) kernels are
// registered from Python with torch.library (codetr/layers/ms_deform_attn.py).
#include <torch/extension.h>

#include "ms_deform_attn.h"

namespace codetr {

void check_ms_deform_attn_args(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  TORCH_CHECK(value.dim() == 4, "ms_deform_attn: value must be (N, S, M, D), got ", value.sizes());
  TORCH_CHECK(
      spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2 && spatial_shapes.scalar_type() == at::kLong,
      "ms_deform_attn: spatial_shapes must be int64 (L, 2), got ", spatial_shapes.scalar_type(), " ",
      spatial_shapes.sizes());
  const int64_t L = spatial_shapes.size(0);
  TORCH_CHECK(
      level_start_index.dim() == 1 && level_start_index.size(0) == L && level_start_index.scalar_type() == at::kLong,
      "ms_deform_attn: level_start_index must be int64 (", L, ",), got ", level_start_index.scalar_type(), " ",
      level_start_index.sizes());
  TORCH_CHECK(
      sampling_locations.dim() == 6 && sampling_locations.size(0) == value.size(0) &&
          sampling_locations.size(2) == value.size(2) && sampling_locations.size(3) == L &&
          sampling_locations.size(5) == 2,
      "ms_deform_attn: sampling_locations must be (N, Q, M, L, P, 2) matching value ", value.sizes(), ", got ",
      sampling_locations.sizes());
  TORCH_CHECK(
      attention_weights.dim() == 5 && attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
      "ms_deform_attn: attention_weights must be (N, Q, M, L, P) = ", sampling_locations.sizes().slice(0, 5),
      ", got ", attention_weights.sizes());
  const auto acc = value.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(
      sampling_locations.scalar_type() == acc && attention_weights.scalar_type() == acc,
      "ms_deform_attn: sampling_locations and attention_weights must be ", acc, " for value of dtype ",
      value.scalar_type(), ", got ", sampling_locations.scalar_type(), " and ", attention_weights.scalar_type());
  TORCH_CHECK(
      value.is_contiguous() && sampling_locations.is_contiguous() && attention_weights.is_contiguous() &&
          spatial_shapes.is_contiguous() && level_start_index.is_contiguous(),
      "ms_deform_attn: kernels expect contiguous inputs");
}

Dims ms_deform_attn_dims(const at::Tensor& value, const at::Tensor& sampling_locations) {
  return {value.size(0), value.size(1), value.size(2), value.size(3),
          sampling_locations.size(1), sampling_locations.size(3), sampling_locations.size(4)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> zero_grads_for_backward(
    const at::Tensor& grad_output,
    const at::Tensor& value,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const Dims& k) {
  TORCH_CHECK(
      grad_output.sizes() == at::IntArrayRef({k.N, k.Q, k.M * k.D}) && grad_output.scalar_type() == value.scalar_type(),
      "ms_deform_attn_backward: grad_output must be ", value.scalar_type(), " (", k.N, ", ", k.Q, ", ", k.M * k.D,
      "), got ", grad_output.scalar_type(), " ", grad_output.sizes());
  return {at::zeros(value.sizes(), value.options().dtype(sampling_locations.scalar_type())),
          at::zeros_like(sampling_locations), at::zeros_like(attention_weights)};
}

bool built_with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace codetr

TORCH_LIBRARY(codetr, m) {
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  m.def(
      "ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights) -> (Tensor, Tensor, Tensor)");
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "codetr compiled ops (multi-scale deformable attention)";
  module.def("built_with_cuda", &codetr::built_with_cuda, "True when the CUDA kernels were compiled in");
}
