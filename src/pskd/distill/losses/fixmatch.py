"""Self-training on unlabelled clips, FixMatch-style (Sohn et al., NeurIPS 2020), with no teacher at all.

The student's prediction on the clip as the training loop augmented it (the weak view) becomes a pseudo-label
where its confidence reaches `threshold`; the student is then trained with cross-entropy to give that label on a
strongly augmented view of the same clip (larger rotation, scaling, noise and time crop, and part of the clip
replaced by its mean). The loss is averaged over every unlabelled clip of the batch, so a batch where the student
is rarely confident pulls little. It is the honest control of cross-modal distillation from unlabelled pairs:
it uses the same unlabelled watch clips, without the skeleton.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from pskd.config import RunConfig
from pskd.data.batches import INDEX, LABEL
from pskd.data.transforms import Augmenter
from pskd.distill.distiller import Stage
from pskd.distill.methods import register_method
from pskd.distill.terms import LossTerm, TermContext, TermInputs, TermOptions, register_loss


class FixMatchOptions(TermOptions):
    weight: float = Field(1.0, ge=0)
    threshold: float = Field(0.7, ge=0, le=1)  # label smoothing caps the confidence below 1: keep it under that
    # 30 degrees, as the loop's own augmentation: validation chose it over 60 on UTD-MHAD at a quarter of the
    # labels (docs/results.md, "When does distillation pay?"); the watch's tilt against gravity tells actions apart
    rotation_deg: float = Field(30.0, ge=0, le=180)
    scale: float = Field(0.4, ge=0, lt=1)
    jitter: float = Field(0.05, ge=0)
    time_crop: float = Field(0.3, ge=0, lt=1)
    mask: float = Field(0.2, ge=0, lt=1)  # fraction of the clip replaced by its mean over time


def mask_time(x: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Replace a random span of `fraction` of each clip ([B, T, ...]) by that clip's mean over time."""
    steps = x.shape[1]
    span = int(round(fraction * steps))
    if span == 0:
        return x
    starts = torch.randint(0, steps - span + 1, (x.shape[0],), generator=generator)
    time = torch.arange(steps)[None, :]
    inside = (time >= starts[:, None]) & (time < starts[:, None] + span)
    inside = inside.view(*inside.shape, *([1] * (x.dim() - 2)))
    return torch.where(inside, x.mean(dim=1, keepdim=True), x)


@register_loss("fixmatch")
class FixMatch(LossTerm):
    Options = FixMatchOptions
    needs_teachers = False

    def __init__(self, context: TermContext):
        super().__init__(context)
        o = self.options
        self.augment = Augmenter(o.scale, o.jitter, o.rotation_deg, o.time_crop, devices=context.devices)

    def strong(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The strong view, drawn from the global torch generator (which a checkpoint saves and restores)."""
        self.augment.generator.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        streams = {k: v.cpu() for k, v in batch.items() if k not in (LABEL, INDEX)}
        view = self.augment(streams)
        view = {k: mask_time(v, self.options.mask, self.augment.generator) for k, v in view.items()}
        device = next(iter(batch.values())).device
        return {k: v.to(device) for k, v in view.items()}

    def forward(self, inputs: TermInputs) -> dict[str, torch.Tensor]:
        if inputs.model is None:
            raise RuntimeError("the fixmatch term needs the student model (the training loop passes it)")
        pool = inputs.labels < 0
        with torch.no_grad():
            confidence, guess = F.softmax(inputs.logits.detach(), dim=1).max(dim=1)
        chosen = pool & (confidence >= self.options.threshold)
        if not bool(chosen.any()):
            return {"self": inputs.logits.sum() * 0.0}
        _, logits = inputs.model(self.strong({k: v[chosen] for k, v in inputs.batch.items()}))
        loss = F.cross_entropy(logits, guess[chosen], reduction="sum") / pool.sum()
        return {"self": self.options.weight * loss}


@register_method("self_train", min_teachers=0)
def self_train(config: RunConfig) -> list[Stage]:
    """No teacher: the student pseudo-labels unlabelled clips itself (FixMatch), the control for distillation from
    unlabelled pairs."""
    return [Stage(1, [], "fixmatch")]
