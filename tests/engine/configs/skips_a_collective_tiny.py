"""tiny_retinanet.py wrapped so that, in a multi-process run, rank 1 from iteration 1 on
(``model.skip``):

- "collective": stops taking part in a collective that every other process keeps issuing every
  iteration (an all-reduce on a process group of its own, like a loss normaliser issued
  conditionally): the others wait in it and rank 1 waits for them in the gradient all-reduce;
- "parameter": leaves a parameter out of its loss that the others keep (``0 * extra``), like a
  module that runs only when the batch has boxes: DDP on the others would wait for its gradient.

tests/test_train_net.py checks that either ends the run with an error naming a rank and iteration 1.
"""
import torch
import torch.distributed as dist
from detectron2.config import LazyCall as L
from torch import nn

from .tiny_retinanet import dataloader, lr_multiplier, optimizer, train  # noqa: F401
from .tiny_retinanet import model as detector


class SkipsACollective(nn.Module):
    """``detector``'s losses; after them, every process but ``rank`` all-reduces a scalar (``rank``
    too before its call ``from_call``), or adds ``0 * extra`` to its losses (``skip="parameter"``)."""

    def __init__(self, detector: nn.Module, rank: int = 1, from_call: int = 1, skip: str = "collective"):
        super().__init__()
        if skip not in ("collective", "parameter"):
            raise ValueError(f"SkipsACollective: skip={skip!r}; expected 'collective' or 'parameter'")
        self.detector = detector
        self.rank = rank
        self.from_call = from_call
        self.skip = skip
        self.calls = 0
        self.extra = nn.Parameter(torch.zeros(())) if skip == "parameter" else None
        self.group = dist.new_group(backend="gloo") if dist.is_available() and dist.is_initialized() else None

    @property
    def num_classes(self):
        return self.detector.num_classes

    def forward(self, batched_inputs):
        losses = self.detector(batched_inputs)
        if not self.training:
            return losses
        takes_part = self.group is None or dist.get_rank() != self.rank or self.calls < self.from_call
        self.calls += 1
        if self.skip == "parameter":
            return dict(losses, loss_extra=0.0 * self.extra) if takes_part else losses
        if takes_part and self.group is not None:
            dist.all_reduce(torch.ones(()), group=self.group)
        return losses


model = L(SkipsACollective)(detector=detector)
del detector
