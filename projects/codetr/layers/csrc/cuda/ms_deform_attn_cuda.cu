// CUDA kernels of multi-scale deformable attention.
//
// Thread layout: every (n, q, m) "sample group" is served by G = min(32, next_pow2(D)) consecutive
// lanes of one warp; lane j handles channels j, j + G, ... < D. Coordinates and bilinear weights
// are computed in opmath precision (float32 for half types) by every lane of the group (they are
// the same instructions in parallel, so this costs no extra time), and the corner reads of a
// group are contiguous over channels (coalesced).
//
// Backward: grad_value receives atomicAdd in opmath precision (a float32 buffer for half types,
// converted once at the end); grad_sampling_locations and grad_attention_weights are reduced
// over the channels of a group with warp shuffles and written once, without atomics.
// There is no im2col_step: any batch size works, and indices are 64-bit.
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../bilinear.h"
#include "../ms_deform_attn.h"

namespace codetr {
namespace {

constexpr int kThreads = 256;

int group_width(int64_t D) {
  int g = 1;
  while (g < D && g < 32) g *= 2;
  return g;
}

template <typename acc_t>
__device__ __forceinline__ acc_t group_sum(acc_t v, int width) {
  for (int offset = width / 2; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset, width);
  return v;
}

template <typename scalar_t>
__global__ void forward_kernel(
    const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes, const int64_t* __restrict__ starts,
    const at::opmath_type<scalar_t>* __restrict__ loc, const at::opmath_type<scalar_t>* __restrict__ attn,
    scalar_t* __restrict__ out, Dims k, int G, int64_t num_groups) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t group = thread / G;  // (n, q, m) flattened
  const int lane = threadIdx.x % G;
  if (group >= num_groups) return;  // forward uses no shuffles: idle lanes may leave
  const int64_t m = group % k.M;
  const int64_t n = group / (k.M * k.Q);
  const int64_t row_stride = k.M * k.D;
  const int64_t point0 = group * k.L * k.P;
  BilinearCorners<acc_t> c;
  for (int64_t d0 = 0; d0 < k.D; d0 += G) {
    const int64_t d = d0 + lane;
    if (d >= k.D) break;
    acc_t acc = 0;
    for (int64_t l = 0; l < k.L; ++l) {
      const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
      const scalar_t* level_value = value + ((n * k.S + starts[l]) * k.M + m) * k.D + d;
      for (int64_t p = 0; p < k.P; ++p) {
        const int64_t pt = point0 + l * k.P + p;
        if (!bilinear_corners<acc_t>(loc[2 * pt], loc[2 * pt + 1], H, W, c)) continue;
        const acc_t w = attn[pt];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          if (c.index[i] >= 0) acc += w * c.weight[i] * static_cast<acc_t>(level_value[c.index[i] * row_stride]);
        }
      }
    }
    out[group * k.D + d] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t>
__global__ void backward_kernel(
    const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts, const at::opmath_type<scalar_t>* __restrict__ loc,
    const at::opmath_type<scalar_t>* __restrict__ attn, at::opmath_type<scalar_t>* __restrict__ grad_value,
    at::opmath_type<scalar_t>* __restrict__ grad_loc, at::opmath_type<scalar_t>* __restrict__ grad_attn, Dims k,
    int G, int64_t num_groups) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t group = thread / G;
  const int lane = threadIdx.x % G;
  // Lanes of a group beyond num_groups stay alive (with zero contributions) so that every lane of
  // the warp takes part in the shuffles below.
  const bool active = group < num_groups;
  const int64_t safe_group = active ? group : 0;
  const int64_t m = safe_group % k.M;
  const int64_t n = safe_group / (k.M * k.Q);
  const int64_t row_stride = k.M * k.D;
  const int64_t point0 = safe_group * k.L * k.P;
  BilinearCorners<acc_t> c;
  for (int64_t l = 0; l < k.L; ++l) {
    const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
    const int64_t level_offset = ((n * k.S + starts[l]) * k.M + m) * k.D;
    for (int64_t p = 0; p < k.P; ++p) {
      const int64_t pt = point0 + l * k.P + p;
      const bool inside = active && bilinear_corners<acc_t>(loc[2 * pt], loc[2 * pt + 1], H, W, c);
      const acc_t w = inside ? attn[pt] : acc_t(0);
      acc_t g_attn = 0, g_x = 0, g_y = 0;
      if (inside) {
        for (int64_t d = lane; d < k.D; d += G) {
          const acc_t go = static_cast<acc_t>(grad_out[safe_group * k.D + d]);
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            if (c.index[i] < 0) continue;
            const int64_t offset = level_offset + c.index[i] * row_stride + d;
            const acc_t v_go = static_cast<acc_t>(value[offset]) * go;
            g_attn += c.weight[i] * v_go;
            g_x += c.dweight_dx[i] * v_go;
            g_y += c.dweight_dy[i] * v_go;
            atomicAdd(grad_value + offset, w * c.weight[i] * go);
          }
        }
      }
      g_attn = group_sum(g_attn, G);
      g_x = group_sum(g_x, G);
      g_y = group_sum(g_y, G);
      if (inside && lane == 0) {
        grad_attn[pt] = g_attn;
        grad_loc[2 * pt] = w * g_x * static_cast<acc_t>(W);
        grad_loc[2 * pt + 1] = w * g_y * static_cast<acc_t>(H);
      }
    }
  }
}

int64_t num_blocks(int64_t threads) { return (threads + kThreads - 1) / kThreads; }

void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "ms_deform_attn (CUDA): ", name, " must be a CUDA tensor, got ", t.device());
}

}  // namespace

at::Tensor ms_deform_attn_forward_cuda(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  check_ms_deform_attn_args(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  check_cuda(value, "value");
  check_cuda(spatial_shapes, "spatial_shapes");
  check_cuda(level_start_index, "level_start_index");
  check_cuda(sampling_locations, "sampling_locations");
  check_cuda(attention_weights, "attention_weights");
  const c10::cuda::CUDAGuard guard(value.device());
  const Dims k = ms_deform_attn_dims(value, sampling_locations);
  auto out = at::zeros({k.N, k.Q, k.M * k.D}, value.options());
  if (out.numel() == 0) return out;
  const int G = group_width(k.D);
  const int64_t groups = k.N * k.Q * k.M;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    forward_kernel<scalar_t><<<num_blocks(groups * G), kThreads, 0, stream>>>(
        value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(), level_start_index.data_ptr<int64_t>(),
        sampling_locations.data_ptr<acc_t>(), attention_weights.data_ptr<acc_t>(), out.data_ptr<scalar_t>(), k, G,
        groups);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& grad_output,
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  check_ms_deform_attn_args(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
  check_cuda(grad_output, "grad_output");
  const c10::cuda::CUDAGuard guard(value.device());
  const Dims k = ms_deform_attn_dims(value, sampling_locations);
  at::Tensor grad_value, grad_loc, grad_attn;
  std::tie(grad_value, grad_loc, grad_attn) =
      zero_grads_for_backward(grad_output, value, sampling_locations, attention_weights, k);
  const int64_t groups = k.N * k.Q * k.M;
  if (groups > 0 && value.numel() != 0) {
    const auto go = grad_output.contiguous();
    const int G = group_width(k.D);
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      backward_kernel<scalar_t><<<num_blocks(groups * G), kThreads, 0, stream>>>(
          go.data_ptr<scalar_t>(), value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
          level_start_index.data_ptr<int64_t>(), sampling_locations.data_ptr<acc_t>(),
          attention_weights.data_ptr<acc_t>(), grad_value.data_ptr<acc_t>(), grad_loc.data_ptr<acc_t>(),
          grad_attn.data_ptr<acc_t>(), k, G, groups);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {grad_value.to(value.scalar_type()), grad_loc, grad_attn};
}

TORCH_LIBRARY_IMPL(codetr, CUDA, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_forward_cuda);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cuda);
}

}  // namespace codetr
