"""Shared helpers of the AdaMixer decoder tests."""
import torch

from codetr.modeling.encoders.output import EncoderOutput, flatten_levels, get_valid_ratios


def make_enc(features, masks=None):
    """An ``EncoderOutput`` over ``features`` (L maps (N, C, H_l, W_l)) with padding ``masks``
    (default: none), the way an encoder-less AdaMixer detector would build it."""
    if masks is None:
        masks = [torch.zeros(f.shape[0], *f.shape[-2:], dtype=torch.bool) for f in features]
    memory, shapes, start, _ = flatten_levels(features)
    mask_flat = flatten_levels(masks)[0]
    return EncoderOutput(memory, mask_flat, torch.zeros_like(memory), shapes, start, get_valid_ratios(masks),
                         tuple(features), tuple(masks))
