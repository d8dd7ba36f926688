"""EncoderOutput: immutable, and its pyramid view is the memory split back into levels."""
import dataclasses

import pytest
import torch

from codetr.modeling.encoders import EncoderOutput, flatten_levels, get_valid_ratios


def test_memory_maps_invert_flattening_and_output_is_frozen():
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(2, 5, 4, 6, generator=g), torch.randn(2, 5, 2, 3, generator=g)]
    masks = [torch.zeros(2, 4, 6, dtype=torch.bool), torch.zeros(2, 2, 3, dtype=torch.bool)]
    masks[0][1, :, 3:] = True
    masks[1][1, :, 2:] = True
    memory, shapes, start, sizes = flatten_levels(maps)
    assert sizes == [(4, 6), (2, 3)] and start.tolist() == [0, 24] and shapes.tolist() == [[4, 6], [2, 3]]
    # position (row 1, col 2) of level 0, channel 3, image 1 is memory[1, 1 * 6 + 2, 3]
    assert memory[1, 8, 3] == maps[0][1, 3, 1, 2]
    enc = EncoderOutput(memory, flatten_levels(masks)[0], torch.zeros_like(memory), shapes, start,
                        get_valid_ratios(masks), tuple(maps), tuple(masks))
    assert enc.shapes == [(4, 6), (2, 3)] and enc.has_padding
    for got, expected in zip(enc.memory_maps(), maps):
        assert torch.equal(got, expected)
    # valid ratios (w, h): image 1 covers 3 of 6 columns at level 0 and 2 of 3 at level 1
    torch.testing.assert_close(enc.valid_ratios[1], torch.tensor([[0.5, 1.0], [2 / 3, 1.0]]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        enc.memory = memory
