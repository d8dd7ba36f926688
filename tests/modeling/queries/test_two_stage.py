"""Two-stage query selection with Co-Deformable-DETR's options (``pos_trans`` query positions,
top-k by class 0, encoder outputs of all positions); checked against independent computations."""
import torch
import torch.nn.functional as F

from codetr.modeling.queries.two_stage import gen_encoder_output_proposals
from support.deformable import D, K, deformable_transformer, encode, select, sine


def test_pos_trans_query_position_hand_computed():
    tr = deformable_transformer(num_queries=6)
    assert tr.pos_trans.weight.shape == (2 * D, 2 * D) and tr.pos_trans_norm.weight.shape == (2 * D,)
    enc = encode(tr)
    sel = select(tr, enc)
    box = sel["ref_boxes"]
    assert not box.requires_grad and sel["query_pos"].shape == (1, 6, D)
    embed = sine(box, D // 2)  # cx, cy, w, h, D / 2 channels each, written out in the test
    full = F.layer_norm(F.linear(embed, tr.pos_trans.weight, tr.pos_trans.bias), (2 * D,),
                        tr.pos_trans_norm.weight, tr.pos_trans_norm.bias)
    torch.testing.assert_close(sel["query_pos"], full[..., :D], atol=1e-5, rtol=1e-4)
    # content: the learned embedding, for every image
    torch.testing.assert_close(sel["tgt"][0], tr.tgt_embed.weight)


def test_select_by_first_class_and_encoder_outputs_of_all_positions():
    tr = deformable_transformer(num_queries=5)
    with torch.no_grad():  # make class 0 disagree with the max over classes
        tr.enc_class_embed.weight.normal_(std=2.0)
        tr.enc_class_embed.bias.copy_(torch.tensor([0.0, 3.0, -1.0]))
    enc = encode(tr, pad=True)
    sel = select(tr, enc)
    _, proposals, valid = gen_encoder_output_proposals(enc.memory, enc.memory_mask, enc.shapes)
    memory = enc.memory.masked_fill(~valid[..., None], 0.0)
    out_memory = tr.enc_output_norm(tr.enc_output(memory))
    logits = tr.enc_class_embed(out_memory)[0]
    boxes = (tr.enc_bbox_embed(out_memory)[0] + proposals[0]).sigmoid()
    first = logits[:, 0].masked_fill(~valid[0], -float("inf"))
    best = sorted(range(len(first)), key=lambda i: -first[i].item())[:5]
    torch.testing.assert_close(sel["ref_boxes"][0], boxes[best])
    by_max = logits.max(-1).values.masked_fill(~valid[0], -float("inf")).topk(5).indices.tolist()
    assert set(by_max) != set(best)  # the two rules differ on this case
    # encoder outputs of every position (S of them), for the encoder loss
    s = enc.memory.shape[1]
    assert sel["enc_logits"].shape == (1, s, K) and sel["enc_boxes"].shape == (1, s, 4)
    torch.testing.assert_close(sel["enc_logits"][0], logits)
    torch.testing.assert_close(sel["enc_boxes"][0], boxes)
    assert (sel["enc_boxes"][0][~valid[0]] == 1).all()  # +inf proposal logits
