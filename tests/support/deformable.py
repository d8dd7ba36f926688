"""The small Deformable-DETR++ transformer (Co-Deformable-DETR's options) of the decoder, query
selection and Co-Deformable-DETR tests, and an independent sine embedding of boxes."""
import math

import torch

from codetr.layers.position_encoding import PositionEmbeddingSine
from codetr.modeling.decoders import DeformableDecoder
from codetr.modeling.encoders import DeformableEncoder
from codetr.modeling.transformers import DeformableTransformer

D, K, HEADS = 32, 3, 4


def logit(x):
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=1e-3) / (1 - x).clamp(min=1e-3))


def deformable_transformer(num_queries=6, num_levels=2, seed=0, **kw):
    torch.manual_seed(seed)
    layer = dict(embed_dim=D, num_heads=HEADS, num_levels=num_levels, num_points=2, ffn_dim=48)
    decoder = DeformableDecoder(2, num_classes=K, look_forward_twice=True, ref_point_head=False, post_norm=False,
                                **layer)
    opts = dict(select_by="first_class", enc_outputs="all")
    opts.update(kw)
    return DeformableTransformer(
        DeformableEncoder(1, **layer), decoder, num_feature_levels=num_levels, num_queries=num_queries,
        embed_dim=D, num_classes=K, **opts,
    ).eval()


def encode(tr, seed=1, sizes=((8, 8), (4, 4)), pad=False):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(1, D, h, w, generator=g) for h, w in sizes]
    masks = [torch.zeros(1, h, w, dtype=torch.bool) for h, w in sizes]
    if pad:
        masks[0][:, :, 6:] = True
        masks[1][:, :, 3:] = True
    pe = PositionEmbeddingSine(D // 2, normalize=True, offset=-0.5)
    return tr.encode(feats, masks, [pe(m) for m in masks])


def decode(tr, enc, groups, attn_mask=None):
    out = tr.decoder(groups, enc, attn_mask)
    return {"logits": out.logits, "boxes": out.boxes, "hidden": out.hidden}


def select(tr, enc):
    group, enc_out = tr.select_queries(enc)
    return {"tgt": group.content, "ref_boxes": group.reference, "query_pos": group.query_pos,
            "enc_logits": enc_out["pred_logits"], "enc_boxes": enc_out["pred_boxes"]}


def sine(boxes, feats_per_coord):
    """Independent statement of Co-DETR's get_proposal_pos_embed on normalised cxcywh."""
    out = []
    for c in range(4):
        x = boxes[..., c] * 2 * math.pi
        chans = []
        for i in range(feats_per_coord):
            v = x / 10000 ** (2 * (i // 2) / feats_per_coord)
            chans.append(torch.sin(v) if i % 2 == 0 else torch.cos(v))
        out.append(torch.stack(chans, -1))
    return torch.cat(out, -1)
