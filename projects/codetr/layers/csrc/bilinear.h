// Bilinear sampling geometry shared by the CPU and CUDA kernels.
//
// Convention: grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False). A normalised
// location (lx, ly) in [0, 1] maps to the pixel coordinate x = lx * W - 0.5, y = ly * H - 0.5; the
// four neighbouring pixels are weighted bilinearly and pixels outside the map read as zero.
#pragma once
#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace codetr {

template <typename acc_t>
struct BilinearCorners {
  // Corner c in order (y0, x0), (y0, x1), (y1, x0), (y1, x1).
  int64_t index[4];  // y * W + x inside the level, or -1 when the corner lies outside the map
  acc_t weight[4];   // bilinear weight of the corner
  acc_t dweight_dx[4];  // d weight / d x (pixel units)
  acc_t dweight_dy[4];  // d weight / d y (pixel units)
};

// Fills `c` for the normalised location (loc_x, loc_y) on an H x W map. Returns false when no
// corner lies inside the map (the sample is exactly zero, and so are its gradients); NaN
// locations also return false.
template <typename acc_t>
C10_HOST_DEVICE inline bool bilinear_corners(acc_t loc_x, acc_t loc_y, int64_t H, int64_t W, BilinearCorners<acc_t>& c) {
  const acc_t x = loc_x * static_cast<acc_t>(W) - acc_t(0.5);
  const acc_t y = loc_y * static_cast<acc_t>(H) - acc_t(0.5);
  if (!(x > acc_t(-1) && y > acc_t(-1) && x < static_cast<acc_t>(W) && y < static_cast<acc_t>(H))) {
    return false;
  }
  const acc_t xf = ::floor(x);
  const acc_t yf = ::floor(y);
  const int64_t x0 = static_cast<int64_t>(xf);
  const int64_t y0 = static_cast<int64_t>(yf);
  const acc_t lx = x - xf, ly = y - yf;
  const acc_t hx = acc_t(1) - lx, hy = acc_t(1) - ly;
  const bool x0_in = x0 >= 0, x1_in = x0 + 1 < W, y0_in = y0 >= 0, y1_in = y0 + 1 < H;
  c.index[0] = (y0_in && x0_in) ? y0 * W + x0 : -1;
  c.index[1] = (y0_in && x1_in) ? y0 * W + x0 + 1 : -1;
  c.index[2] = (y1_in && x0_in) ? (y0 + 1) * W + x0 : -1;
  c.index[3] = (y1_in && x1_in) ? (y0 + 1) * W + x0 + 1 : -1;
  c.weight[0] = hy * hx;
  c.weight[1] = hy * lx;
  c.weight[2] = ly * hx;
  c.weight[3] = ly * lx;
  c.dweight_dx[0] = -hy;
  c.dweight_dx[1] = hy;
  c.dweight_dx[2] = -ly;
  c.dweight_dx[3] = ly;
  c.dweight_dy[0] = -hx;
  c.dweight_dy[1] = -lx;
  c.dweight_dy[2] = hx;
  c.dweight_dy[3] = lx;
  return true;
}

}  // namespace codetr
