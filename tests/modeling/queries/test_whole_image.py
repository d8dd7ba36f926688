import math

import torch

from codetr.modeling.queries.whole_image import WholeImageQueries


def test_whole_image_boxes_and_normalised_content():
    q = WholeImageQueries(num_queries=3, embed_dim=8)
    content, xyzr = q(torch.tensor([[64.0, 32.0], [20.0, 80.0]]))
    assert content.shape == (2, 3, 8) and xyzr.shape == (2, 3, 4)
    # image 0: 64 x 32 -> centre (32, 16), z = log2(sqrt(64 * 32)), r = log2(32 / 64) = -1
    torch.testing.assert_close(xyzr[0], torch.tensor([32.0, 16.0, math.log2(math.sqrt(2048.0)), -1.0]).expand(3, 4))
    torch.testing.assert_close(xyzr[1, 0], torch.tensor([10.0, 40.0, math.log2(40.0), 2.0]))
    torch.testing.assert_close(content.mean(-1), torch.zeros(2, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(content.var(-1, unbiased=False), torch.ones(2, 3), atol=1e-4, rtol=0)
    assert torch.equal(content[0], content[1])


def test_boxes_frozen_content_learned():
    q = WholeImageQueries(num_queries=2, embed_dim=4)
    assert set(q.state_dict()) == {"boxes", "content"}
    assert not q.boxes.requires_grad and q.content.requires_grad and [n for n, _ in q.named_parameters()] == ["content"]
    content, xyzr = q(torch.tensor([[10.0, 10.0]]))
    (content.square().mul(torch.arange(4.0)).sum() + xyzr.sum()).backward()
    assert q.content.grad is not None and q.boxes.grad is None
