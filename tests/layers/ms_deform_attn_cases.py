"""Input builders shared by the deformable-attention tests (CPU and CUDA)."""
import torch


def level_metadata(shapes, device="cpu"):
    """(spatial_shapes (L, 2) int64, level_start_index (L,) int64, S) for a list of (H, W)."""
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64, device=device)
    sizes = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return spatial_shapes, level_start_index, int(sizes.sum())


def make_inputs(shapes, N=2, M=2, D=4, Q=5, P=2, dtype=torch.float64, device="cpu", loc_low=-0.2, loc_high=1.2,
                seed=0, requires_grad=True):
    """Random op inputs; locations uniform in [loc_low, loc_high) so some fall outside the map."""
    g = torch.Generator().manual_seed(seed)
    spatial_shapes, level_start_index, S = level_metadata(shapes, device)
    L = len(shapes)
    value = torch.randn(N, S, M, D, generator=g, dtype=dtype).to(device)
    loc = (torch.rand(N, Q, M, L, P, 2, generator=g, dtype=dtype) * (loc_high - loc_low) + loc_low).to(device)
    attn = torch.rand(N, Q, M, L, P, generator=g, dtype=dtype).to(device)
    attn = attn / attn.flatten(-2).sum(-1)[..., None, None]
    for t in (value, loc, attn):
        t.requires_grad_(requires_grad)
    return value, spatial_shapes, level_start_index, loc, attn


def realistic_locations(spatial_shapes, N, Q, M, P, offset_scale=0.02, seed=0, device="cpu", dtype=torch.float32):
    """Reference points on the first level's pixel grid (repeated if Q exceeds it) plus small offsets:
    the sampling pattern of a deformable encoder, not uniform noise. Returns (N, Q, M, L, P, 2)."""
    g = torch.Generator().manual_seed(seed)
    H, W = spatial_shapes[0].tolist()
    ys, xs = torch.meshgrid(torch.arange(H, dtype=dtype), torch.arange(W, dtype=dtype), indexing="ij")
    grid = torch.stack([(xs + 0.5) / W, (ys + 0.5) / H], dim=-1).view(-1, 2)
    ref = grid[torch.arange(Q) % grid.shape[0]]  # (Q, 2)
    L = spatial_shapes.shape[0]
    offsets = torch.randn(N, Q, M, L, P, 2, generator=g, dtype=dtype) * offset_scale
    return (ref[None, :, None, None, None, :] + offsets).to(device)
