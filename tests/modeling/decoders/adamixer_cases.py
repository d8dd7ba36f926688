"""Shared helpers of the AdaMixer decoder tests."""
import torch

from codetr.modeling.encoders.output import EncoderOutput


def make_enc(features, masks=None):
    """The identity encoder's output over ``features`` (L maps (N, C, H_l, W_l)) with padding
    ``masks`` (default: none), as an encoder-less AdaMixer detector builds it."""
    if masks is None:
        masks = [torch.zeros(f.shape[0], *f.shape[-2:], dtype=torch.bool) for f in features]
    return EncoderOutput.from_levels(features, masks, [torch.zeros_like(f) for f in features])
