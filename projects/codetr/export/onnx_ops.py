"""``codetr::ms_deform_attn`` written with standard ONNX operators (no custom domain).

Two translations for the dynamo ONNX exporter's ``custom_translation_table``; both read the
level shapes (H_l, W_l) and starts from the ``spatial_shapes`` / ``level_start_index`` tensors of
the graph, so one exported graph serves every image size.

- ``grid_sample``: per level, the level's slice of ``value`` reshaped to (N*M, D, H_l, W_l) and
  one ``GridSample`` (bilinear, zeros padding, align_corners=0: the op's sampling convention),
  then the attention-weighted sum over the points; the levels are summed.
- ``gather``: all levels at once: for each of the 4 bilinear corners, flat indices into
  ``value`` (N*M*S, D), one ``Gather``, and the weighted sum over (level, point) as a batched
  ``MatMul`` with weights = attention weight x bilinear weight x (corner inside the map).

Shapes as in ``codetr.layers.ms_deform_attn``: value (N, S, M, D), spatial_shapes (L, 2) int64
(H, W), level_start_index (L,), sampling_locations (N, Q, M, L, P, 2) normalised (x, y),
attention_weights (N, Q, M, L, P) -> (N, Q, M * D).
"""
from __future__ import annotations

from typing import Callable

import onnxscript

__all__ = ["IMPLEMENTATIONS", "ms_deform_attn_translation"]

IMPLEMENTATIONS = ("grid_sample", "gather")
MIN_OPSET = 16  # GridSample


def _opset(version: int):
    return getattr(onnxscript, f"opset{version}")


def _static_dim(value, axis: int, what: str) -> int:
    dim = value.shape[axis] if value.shape is not None else None
    if not isinstance(dim, int):
        raise ValueError(f"ms_deform_attn ONNX translation: the number of {what} must be static, got {dim!r}")
    return dim


def _grid_sample_translation(op, opset: int) -> Callable:
    mode = "linear" if opset >= 20 else "bilinear"  # opset 20 renamed the mode

    def ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        num_levels = _static_dim(sampling_locations, 3, "levels (sampling_locations dim 3)")
        n = op.Shape(value, start=0, end=1)
        m = op.Shape(value, start=2, end=3)
        d = op.Shape(value, start=3, end=4)
        q = op.Shape(sampling_locations, start=1, end=2)
        p = op.Shape(sampling_locations, start=4, end=5)
        nm = op.Mul(n, m)
        # (N, Q, M, L, P, 2) -> (N, M, L, Q, P, 2) in [-1, 1]; (N, Q, M, L, P) -> (N, M, L, Q, P)
        grids = op.Sub(op.Mul(op.Transpose(sampling_locations, perm=[0, 2, 3, 1, 4, 5]), op.Constant(value_float=2.0)),
                       op.Constant(value_float=1.0))
        weights = op.Transpose(attention_weights, perm=[0, 2, 3, 1, 4])
        value_t = op.Transpose(value, perm=[0, 2, 3, 1])  # (N, M, D, S)
        out = None
        for level in range(num_levels):
            lvl = op.Constant(value_ints=[level])
            hw = op.Reshape(op.Gather(spatial_shapes, lvl, axis=0), op.Constant(value_ints=[2]))
            h = op.Slice(hw, op.Constant(value_ints=[0]), op.Constant(value_ints=[1]))
            w = op.Slice(hw, op.Constant(value_ints=[1]), op.Constant(value_ints=[2]))
            start = op.Gather(level_start_index, lvl, axis=0)
            end = op.Add(start, op.Mul(h, w))
            v = op.Slice(value_t, start, end, op.Constant(value_ints=[3]))  # (N, M, D, H*W)
            v = op.Reshape(v, op.Concat(nm, d, h, w, axis=0))
            g = op.Gather(grids, lvl, axis=2)  # (N, M, 1, Q, P, 2)
            g = op.Reshape(g, op.Concat(nm, q, p, op.Constant(value_ints=[2]), axis=0))
            sampled = op.GridSample(v, g, mode=mode, padding_mode="zeros", align_corners=0)  # (N*M, D, Q, P)
            wl = op.Reshape(op.Gather(weights, lvl, axis=2), op.Concat(nm, op.Constant(value_ints=[1]), q, p, axis=0))
            part = op.ReduceSum(op.Mul(sampled, wl), op.Constant(value_ints=[3]), keepdims=0)  # (N*M, D, Q)
            out = part if out is None else op.Add(out, part)
        out = op.Reshape(out, op.Concat(n, op.Mul(m, d), q, axis=0))
        return op.Transpose(out, perm=[0, 2, 1])

    return ms_deform_attn


def _gather_translation(op, opset: int) -> Callable:
    def ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        n = op.Shape(value, start=0, end=1)
        s = op.Shape(value, start=1, end=2)
        m = op.Shape(value, start=2, end=3)
        d = op.Shape(value, start=3, end=4)
        q = op.Shape(sampling_locations, start=1, end=2)
        one = op.Constant(value_ints=[1])
        minus_one = op.Constant(value_ints=[-1])
        dtype_like = op.CastLike(op.Constant(value_float=0.0), sampling_locations)
        # (N*M*S, D): row (n*M + m)*S + s
        table = op.Reshape(op.Transpose(value, perm=[0, 2, 1, 3]), op.Concat(minus_one, d, axis=0))
        # (N, Q, M, L, P, 2) -> (N, M, Q, L, P, 2); (N, Q, M, L, P) -> (N, M, Q, L, P)
        loc = op.Transpose(sampling_locations, perm=[0, 2, 1, 3, 4, 5])
        attn = op.Transpose(attention_weights, perm=[0, 2, 1, 3, 4])
        # per level (L, 1) int64 and float sizes, broadcast against (..., L, P)
        heights = op.Slice(spatial_shapes, op.Constant(value_ints=[0]), one, one)  # (L, 1)
        widths = op.Slice(spatial_shapes, one, op.Constant(value_ints=[2]), one)
        starts = op.Unsqueeze(level_start_index, one)  # (L, 1)
        x = op.Sub(op.Mul(op.Gather(loc, op.Constant(value_int=0), axis=5), op.CastLike(widths, dtype_like)),
                   op.Constant(value_float=0.5))
        y = op.Sub(op.Mul(op.Gather(loc, op.Constant(value_int=1), axis=5), op.CastLike(heights, dtype_like)),
                   op.Constant(value_float=0.5))
        x0f, y0f = op.Floor(x), op.Floor(y)
        fx, fy = op.Sub(x, x0f), op.Sub(y, y0f)
        x0, y0 = op.Cast(x0f, to=7), op.Cast(y0f, to=7)  # int64
        # base row of image n, head m: (n*M + m) * S, shape (N, M, 1, 1, 1)
        nm = op.Mul(n, m)
        base = op.Reshape(op.Mul(op.Range(op.Constant(value_int=0), op.Squeeze(nm), op.Constant(value_int=1)),
                                 op.Squeeze(s)),
                          op.Concat(n, m, one, one, one, axis=0))
        lp = op.Mul(op.Shape(loc, start=3, end=4), op.Shape(loc, start=4, end=5))
        rows = op.Concat(n, m, q, one, lp, axis=0)  # weights as (N, M, Q, 1, L*P)
        out = None
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            xi = op.Add(x0, op.Constant(value_int=dx)) if dx else x0
            yi = op.Add(y0, op.Constant(value_int=dy)) if dy else y0
            wx = fx if dx else op.Sub(op.Constant(value_float=1.0), fx)
            wy = fy if dy else op.Sub(op.Constant(value_float=1.0), fy)
            inside = op.And(op.And(op.GreaterOrEqual(xi, op.Constant(value_int=0)), op.Less(xi, widths)),
                            op.And(op.GreaterOrEqual(yi, op.Constant(value_int=0)), op.Less(yi, heights)))
            weight = op.Where(inside, op.Mul(op.Mul(wx, wy), attn), op.CastLike(op.Constant(value_float=0.0), attn))
            flat = op.Add(op.Add(starts, op.Mul(yi, widths)), xi)  # (N, M, Q, L, P) index within S
            flat = op.Add(op.Where(inside, flat, op.Constant(value_int=0)), base)
            picked = op.Gather(table, op.Reshape(flat, op.Concat(n, m, q, lp, axis=0)), axis=0)  # (N, M, Q, LP, D)
            part = op.MatMul(op.Reshape(weight, rows), picked)  # (N, M, Q, 1, D)
            out = part if out is None else op.Add(out, part)
        out = op.Transpose(op.Reshape(out, op.Concat(n, m, q, d, axis=0)), perm=[0, 2, 1, 3])  # (N, Q, M, D)
        return op.Reshape(out, op.Concat(n, q, op.Mul(m, d), axis=0))

    return ms_deform_attn


def ms_deform_attn_translation(implementation: str = "grid_sample", opset: int = 17) -> Callable:
    """The ONNX translation of ``codetr::ms_deform_attn`` (``implementation``: "grid_sample" or
    "gather", see the module doc) for ``torch.onnx.export(custom_translation_table=...)``."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"ms_deform_attn ONNX translation: implementation={implementation!r}; expected one of {IMPLEMENTATIONS}"
        )
    if opset < MIN_OPSET:
        raise ValueError(f"ms_deform_attn ONNX translation: opset {opset} < {MIN_OPSET} (GridSample)")
    op = _opset(opset)
    build = _grid_sample_translation if implementation == "grid_sample" else _gather_translation
    return build(op, opset)
