// Inner loops of the CPU kernels, written once and compiled twice: for the baseline ISA
// (kernels_default.cpp) and with AVX2 + FMA (kernels_avx2.cpp); ms_deform_attn_cpu.cpp picks one at
// run time. Nothing here touches ATen: the caller owns parallelism and tensors.
//
// Include this header with CODETR_CPU_KERNEL_NAMESPACE defined to the namespace to compile into.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "../bilinear.h"
#include "kernel_args.h"

namespace codetr {
namespace CODETR_CPU_KERNEL_NAMESPACE {

// Forward for the (batch, query) pairs [begin, end): out[n, q, m, :] for every head m.
// The four bilinear corners are fused into one channel loop; a corner outside the map reads a row
// of zeros, so the loop has no branches and vectorises over channels.
template <typename scalar_t, typename acc_t>
void forward_range(const ForwardArgs<scalar_t, acc_t>& a, int64_t begin, int64_t end) {
  const Dims& k = a.dims;
  const int64_t row_stride = k.M * k.D;
  std::vector<acc_t> acc(k.D);
  const std::vector<scalar_t> zeros(k.D, scalar_t(0));
  BilinearCorners<acc_t> c;
  for (int64_t nq = begin; nq < end; ++nq) {
    const int64_t n = nq / k.Q;
    for (int64_t m = 0; m < k.M; ++m) {
      std::fill(acc.begin(), acc.end(), acc_t(0));
      acc_t* __restrict__ out_acc = acc.data();
      const int64_t point0 = (nq * k.M + m) * k.L * k.P;
      for (int64_t l = 0; l < k.L; ++l) {
        const int64_t H = a.shapes[2 * l], W = a.shapes[2 * l + 1];
        const scalar_t* level_value = a.value + ((n * k.S + a.starts[l]) * k.M + m) * k.D;
        for (int64_t p = 0; p < k.P; ++p) {
          const int64_t pt = point0 + l * k.P + p;
          if (!bilinear_corners<acc_t>(a.loc[2 * pt], a.loc[2 * pt + 1], H, W, c)) continue;
          const acc_t w = a.attn[pt];
          const scalar_t* r[4];
          acc_t cw[4];
          for (int i = 0; i < 4; ++i) {
            r[i] = c.index[i] >= 0 ? level_value + c.index[i] * row_stride : zeros.data();
            cw[i] = w * c.weight[i];
          }
          const scalar_t* __restrict__ r0 = r[0];
          const scalar_t* __restrict__ r1 = r[1];
          const scalar_t* __restrict__ r2 = r[2];
          const scalar_t* __restrict__ r3 = r[3];
#pragma omp simd
          for (int64_t d = 0; d < k.D; ++d) {
            out_acc[d] += cw[0] * static_cast<acc_t>(r0[d]) + cw[1] * static_cast<acc_t>(r1[d]) +
                          cw[2] * static_cast<acc_t>(r2[d]) + cw[3] * static_cast<acc_t>(r3[d]);
          }
        }
      }
      scalar_t* o = a.out + (nq * k.M + m) * k.D;
      for (int64_t d = 0; d < k.D; ++d) o[d] = static_cast<scalar_t>(acc[d]);
    }
  }
}

// Backward for the (batch, head, level) tasks [begin, end). Each task owns grad_value[n, level, m]
// (disjoint between tasks), so there are no atomics and the result is deterministic. The four
// corners are fused into one channel loop that both reduces <grad_out, value_corner> and
// accumulates grad_out into the corner's grad_value row; corners outside the map read zeros and
// write into a private scratch row.
template <typename scalar_t, typename acc_t>
void backward_range(const BackwardArgs<scalar_t, acc_t>& a, int64_t begin, int64_t end) {
  const Dims& k = a.dims;
  const int64_t row_stride = k.M * k.D;
  std::vector<acc_t> go(k.D);
  std::vector<acc_t> scratch(4 * k.D);
  const std::vector<scalar_t> zeros(k.D, scalar_t(0));
  BilinearCorners<acc_t> c;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t l = task % k.L;
    const int64_t m = (task / k.L) % k.M;
    const int64_t n = task / (k.L * k.M);
    const int64_t H = a.shapes[2 * l], W = a.shapes[2 * l + 1];
    const int64_t level_offset = ((n * k.S + a.starts[l]) * k.M + m) * k.D;
    const scalar_t* level_value = a.value + level_offset;
    acc_t* level_grad = a.grad_value + level_offset;
    for (int64_t q = 0; q < k.Q; ++q) {
      const scalar_t* g = a.grad_out + ((n * k.Q + q) * k.M + m) * k.D;
      for (int64_t d = 0; d < k.D; ++d) go[d] = static_cast<acc_t>(g[d]);
      const acc_t* __restrict__ gop = go.data();
      for (int64_t p = 0; p < k.P; ++p) {
        const int64_t pt = (((n * k.Q + q) * k.M + m) * k.L + l) * k.P + p;
        if (!bilinear_corners<acc_t>(a.loc[2 * pt], a.loc[2 * pt + 1], H, W, c)) continue;  // grads stay 0
        const acc_t w = a.attn[pt];
        const scalar_t* r[4];
        acc_t* gv[4];
        acc_t cw[4];
        for (int i = 0; i < 4; ++i) {
          const bool inside = c.index[i] >= 0;
          r[i] = inside ? level_value + c.index[i] * row_stride : zeros.data();
          gv[i] = inside ? level_grad + c.index[i] * row_stride : scratch.data() + i * k.D;
          cw[i] = w * c.weight[i];
        }
        const scalar_t* __restrict__ r0 = r[0];
        const scalar_t* __restrict__ r1 = r[1];
        const scalar_t* __restrict__ r2 = r[2];
        const scalar_t* __restrict__ r3 = r[3];
        acc_t* __restrict__ gv0 = gv[0];
        acc_t* __restrict__ gv1 = gv[1];
        acc_t* __restrict__ gv2 = gv[2];
        acc_t* __restrict__ gv3 = gv[3];
        acc_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;  // <grad_out, corner value>
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (int64_t d = 0; d < k.D; ++d) {
          const acc_t gd = gop[d];
          s0 += gd * static_cast<acc_t>(r0[d]);
          s1 += gd * static_cast<acc_t>(r1[d]);
          s2 += gd * static_cast<acc_t>(r2[d]);
          s3 += gd * static_cast<acc_t>(r3[d]);
          gv0[d] += cw[0] * gd;
          gv1[d] += cw[1] * gd;
          gv2[d] += cw[2] * gd;
          gv3[d] += cw[3] * gd;
        }
        const acc_t s[4] = {s0, s1, s2, s3};
        acc_t g_attn = 0, g_x = 0, g_y = 0;
        for (int i = 0; i < 4; ++i) {
          g_attn += c.weight[i] * s[i];
          g_x += c.dweight_dx[i] * s[i];
          g_y += c.dweight_dy[i] * s[i];
        }
        a.grad_attn[pt] = g_attn;
        a.grad_loc[2 * pt] = w * g_x * static_cast<acc_t>(W);
        a.grad_loc[2 * pt + 1] = w * g_y * static_cast<acc_t>(H);
      }
    }
  }
}

}  // namespace CODETR_CPU_KERNEL_NAMESPACE
}  // namespace codetr
