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


def test_from_levels_flattens_maps_masks_and_positions():
    g = torch.Generator().manual_seed(1)
    maps = [torch.randn(1, 4, 2, 3, generator=g, dtype=torch.float64), torch.randn(1, 4, 1, 2, generator=g,
                                                                             dtype=torch.float64)]
    pos = [torch.randn(1, 4, 2, 3, generator=g), torch.randn(1, 4, 1, 2, generator=g)]
    masks = [torch.zeros(1, 2, 3, dtype=torch.bool), torch.zeros(1, 1, 2, dtype=torch.bool)]
    masks[0][0, :, 2] = True
    masks[1][0, :, 1] = True
    enc = EncoderOutput.from_levels(maps, masks, pos)
    assert enc.memory.shape == (1, 8, 4) and enc.memory_pos.dtype == torch.float64
    # memory position 4 = level 0, row 1, col 1; position 7 = level 1, row 0, col 1
    assert torch.equal(enc.memory[0, 4], maps[0][0, :, 1, 1]) and torch.equal(enc.memory[0, 7], maps[1][0, :, 0, 1])
    assert torch.equal(enc.memory_pos[0, 7], pos[1][0, :, 0, 1].double())
    assert enc.memory_mask[0].tolist() == [False, False, True, False, False, True, False, True]
    assert enc.spatial_shapes.tolist() == [[2, 3], [1, 2]] and enc.level_start_index.tolist() == [0, 6]
    torch.testing.assert_close(enc.valid_ratios[0], torch.tensor([[2 / 3, 1.0], [0.5, 1.0]]))
    assert enc.features[1] is maps[1] and enc.masks[0] is masks[0]
