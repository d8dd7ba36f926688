"""Sine positional encodings (DETR / DAB-DETR / DINO).

Two encodings share one sine/cosine recipe, ``x / T^(2*floor(i/2)/F)`` with even channels
``sin`` and odd channels ``cos`` (interleaved, as in DETR and DINO):

- ``PositionEmbeddingSine``: a 2-d map encoding computed from a padding mask, so that the
  positions of an image do not depend on how much it was padded in a batch.
- ``get_sine_pos_embed``: per-coordinate encoding of normalised points or boxes (DINO's
  ``gen_sineembed_for_position``), used for the decoder's query positions.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["PositionEmbeddingSine", "get_sine_pos_embed"]


def _sine(x: Tensor, num_pos_feats: int, temperature: float) -> Tensor:
    """(...,) -> (..., num_pos_feats): interleaved sin (even) / cos (odd) channels, fp32."""
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=x.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
    x = x.float()[..., None] / dim_t
    return torch.stack((x[..., 0::2].sin(), x[..., 1::2].cos()), dim=-1).flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """2-d sine position embedding of a feature map, computed from its padding mask.

    Args:
        num_pos_feats: channels per axis; the output has ``2 * num_pos_feats`` channels (y then x).
        temperature: T in the frequency formula.
        normalize: divide the (1-based) cumulative position by the valid extent of the image and
            multiply by ``scale``, so positions span (0, scale] whatever the padding.
        scale: see ``normalize`` (2*pi by default).
        offset: added to the cumulative position before normalising (-0.5 puts positions at
            pixel centres, detrex's DINO setting).
        eps: added to the normaliser.
    """

    def __init__(
        self,
        num_pos_feats: int = 128,
        temperature: float = 10000,
        normalize: bool = True,
        scale: float = 2 * math.pi,
        offset: float = 0.0,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.offset = offset
        self.eps = eps

    def forward(self, mask: Tensor) -> Tensor:
        """mask: (N, H, W) bool, True at padded pixels. Returns (N, 2*num_pos_feats, H, W) fp32,
        zero at padded positions."""
        not_mask = (~mask).float()
        y_embed = not_mask.cumsum(1)
        x_embed = not_mask.cumsum(2)
        if self.normalize:
            y_embed = (y_embed + self.offset) / (y_embed[:, -1:, :] + self.eps) * self.scale
            x_embed = (x_embed + self.offset) / (x_embed[:, :, -1:] + self.eps) * self.scale
        pos_y = _sine(y_embed, self.num_pos_feats, self.temperature)
        pos_x = _sine(x_embed, self.num_pos_feats, self.temperature)
        pos = torch.cat((pos_y, pos_x), dim=-1).masked_fill(mask[..., None], 0.0)
        return pos.permute(0, 3, 1, 2)


def get_sine_pos_embed(
    pos_tensor: Tensor, num_pos_feats: int = 128, temperature: float = 10000, exchange_xy: bool = True
) -> Tensor:
    """Sine embedding of every coordinate of normalised points/boxes.

    Args:
        pos_tensor: (..., n) normalised coordinates in [0, 1], e.g. (cx, cy, w, h).
        num_pos_feats: channels per coordinate.
        temperature: T in the frequency formula.
        exchange_xy: put the embedding of the second coordinate first, (y, x, w, h), as DINO does.

    Returns:
        (..., n * num_pos_feats) fp32, coordinates scaled by 2*pi before encoding.
    """
    embeds = list(_sine(pos_tensor.float() * (2 * math.pi), num_pos_feats, temperature).unbind(-2))
    if exchange_xy and len(embeds) >= 2:
        embeds[0], embeds[1] = embeds[1], embeds[0]
    return torch.cat(embeds, dim=-1)
