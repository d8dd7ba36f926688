"""The single-scale transformer of DETR, Conditional DETR, DAB-DETR and DN-DETR: a DETR encoder
on one feature level, learned matching queries, a DETR or conditional decoder."""
from __future__ import annotations

from typing import List, Optional, Union

from torch import Tensor, nn

from codetr.modeling.decoders.conditional import ConditionalDecoder
from codetr.modeling.decoders.detr import DETRDecoder
from codetr.modeling.encoders.detr import DETREncoder
from codetr.modeling.encoders.output import EncoderOutput
from codetr.modeling.queries.group import QueryGroup
from codetr.modeling.queries.learned import LearnedAnchorQueries, LearnedPointQueries, LearnedPositionQueries

__all__ = ["SingleScaleTransformer"]


class SingleScaleTransformer(nn.Module):
    """Parameter container that a ``QueryDetector`` drives.

    Args:
        encoder: ``DETREncoder``.
        decoder: ``DETRDecoder`` (DETR: no references) or ``ConditionalDecoder`` (2-d points for
            Conditional DETR, 4-d anchors for DAB-DETR).
        queries: ``LearnedPositionQueries`` (with the DETR decoder), ``LearnedPointQueries`` (with
            a point decoder) or ``LearnedAnchorQueries`` (with a box decoder).
        embed_dim: the hidden width C, where a config writes it once (the encoder, decoder, queries
            and the detector's neck read it); None: the decoder's. The three parts must have it.
    """

    def __init__(
        self,
        encoder: DETREncoder,
        decoder: Union[DETRDecoder, ConditionalDecoder],
        queries: nn.Module,
        embed_dim: Optional[int] = None,
    ):
        super().__init__()
        ref_dim = {LearnedPositionQueries: 0, LearnedPointQueries: 2, LearnedAnchorQueries: 4}.get(type(queries))
        if ref_dim is None:
            raise ValueError(f"SingleScaleTransformer: queries of type {type(queries).__name__}; expected "
                             "LearnedPositionQueries, LearnedPointQueries or LearnedAnchorQueries")
        if ref_dim != decoder.box_coder.ref_dim:
            raise ValueError(f"SingleScaleTransformer: {type(queries).__name__} give {ref_dim}-d references but the "
                             f"decoder's box coder expects {decoder.box_coder.ref_dim}-d")
        embed_dim = decoder.embed_dim if embed_dim is None else embed_dim
        widths = {"encoder": encoder.embed_dim, "decoder": decoder.embed_dim, "queries": queries.embed_dim}
        wrong = {name: width for name, width in widths.items() if width != embed_dim}
        if wrong:
            raise ValueError(f"SingleScaleTransformer: embed_dim={embed_dim} but the widths of {wrong} differ; "
                             "every part has the transformer's width")
        self.encoder = encoder
        self.decoder = decoder
        self.queries = queries
        self.embed_dim = embed_dim
        self.num_queries = (queries.refpoint_embed if ref_dim == 4 else queries.query_embed).num_embeddings

    def encode(self, features: List[Tensor], masks: List[Tensor], pos_embeds: List[Tensor]) -> EncoderOutput:
        """See ``DETREncoder.encode`` (one level)."""
        return self.encoder.encode(features, masks, pos_embeds)

    def matching_queries(self, batch_size: int, content: Optional[Tensor] = None) -> QueryGroup:
        """The matching group; ``content`` (C,) replaces the zero content (DN-DETR)."""
        return self.queries(batch_size, content)
