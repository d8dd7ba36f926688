"""The self-attention mask between query groups (fixed-target groups and matching queries)."""
import torch
from torch import nn

from codetr.modeling.queries.fixed_target import build_query_attention_mask


def test_attention_mask_hand_made():
    """2 fixed groups of 2 slots, 2 matching queries; True = blocked."""
    expected = torch.tensor(
        [
            # keys: g0 g0 g1 g1 m  m
            [0, 0, 1, 1, 0, 0],  # group 0 sees its group and the matching queries
            [0, 0, 1, 1, 0, 0],
            [1, 1, 0, 0, 0, 0],  # group 1
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],  # matching queries see no fixed query
            [1, 1, 1, 1, 0, 0],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(build_query_attention_mask(2, 2, 2), expected)

    valid = torch.tensor([[True, False, True, True], [True, True, True, True]])
    expected_padded = torch.tensor(
        [
            [0, 1, 1, 1, 0, 0],  # slot 1 is padding: masked as a key ...
            [0, 0, 1, 1, 0, 0],  # ... except for itself (diagonal stays open)
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
        ],
        dtype=torch.bool,
    )
    mask = build_query_attention_mask(2, 2, 2, valid)
    assert mask.shape == (2, 6, 6)
    assert torch.equal(mask[0], expected_padded)
    assert torch.equal(mask[1], expected)


def test_attention_mask_never_blocks_a_whole_row():
    valid = torch.tensor([[False, False, True]])  # no matching queries: padded rows see only themselves
    mask = build_query_attention_mask(1, 3, 0, valid)
    assert not mask.all(-1).any()
    attn = nn.MultiheadAttention(4, 2, batch_first=True)
    x = torch.randn(1, 3, 4)
    out, _ = attn(x, x, x, attn_mask=mask.repeat_interleave(2, dim=0))
    assert torch.isfinite(out).all()
