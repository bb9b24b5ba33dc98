import math

import pytest
import torch

from pskd.config import DistillConfig
from pskd.distill.distiller import Distiller, Stage, TeacherOutputs
from pskd.distill.losses.kd import kd_loss
from pskd.distill.terms import TermContext


def teacher(name, logits, dim=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(len(logits), dim, generator=g)
    return TeacherOutputs(name, torch.tensor(logits), embeddings, torch.randn(3, dim, generator=g))


N = 4
SKELETON = teacher("skeleton", [[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0], [3.0, 0.0, 0.0]], seed=1)
FUSION = teacher("fusion", [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dim=3, seed=2)


def distiller(teachers, stages, terms=None, **settings):
    context = TermContext(5, teachers, DistillConfig(**settings))
    return Distiller(context, stages, terms if terms is not None else context.settings.terms)


def batch(index, labels=(0, 1, 2, 0)):
    index = torch.tensor(index)
    return {"label": torch.tensor(labels)[index], "index": index}


def test_targets_are_looked_up_by_clip_index():
    made = distiller([SKELETON], [Stage(1, ["skeleton"], "kd")], temperature=2.0)
    student = torch.zeros(2, 3)
    terms = made((torch.zeros(2, 5), student), batch([2, 0]))
    expected = kd_loss(student, SKELETON.logits[[2, 0]], 2.0)
    assert terms["kd"].item() == pytest.approx(expected.item())
    assert terms["ce"].item() == pytest.approx(math.log(3))


def test_progressive_stages_switch_teachers_and_losses_by_epoch():
    stages = [Stage(1, ["fusion"], "kd"), Stage(4, ["skeleton", "fusion"], "acs")]
    made = distiller([SKELETON, FUSION], stages)
    made.set_epoch(3)
    assert made.stage.teachers == ["fusion"]
    first = made((torch.randn(4, 5), torch.randn(4, 3)), batch([0, 1, 2, 3]))
    assert set(first) == {"ce", "kd"}
    made.set_epoch(4)
    second = made((torch.randn(4, 5), torch.randn(4, 3)), batch([0, 1, 2, 3]))
    assert set(second) == {"ce", "acs_kd", "acs_semantic"}


@pytest.mark.parametrize("loss, names", [
    ("kd", {"ce", "kd"}), ("avg_kd", {"ce", "avg_kd"}), ("dkd", {"ce", "dkd"}), ("camkd", {"ce", "camkd"}),
    ("dask", {"ce", "dask_kd", "dask_relational", "dask_semantic"}), ("acs", {"ce", "acs_kd", "acs_semantic"}),
    ("contrastive", {"ce", "contrastive"}), (["acs", "contrastive"], {"ce", "acs_kd", "acs_semantic", "contrastive"}),
])
@pytest.mark.parametrize("labels", [(0, 1, 2, 0), (0, -1, -1, 2), (-1, -1, -1, -1)])
def test_every_loss_gives_named_finite_terms_and_gradients(loss, names, labels):
    made = distiller([SKELETON, FUSION], [Stage(1, ["skeleton", "fusion"], loss)])
    embedding = torch.randn(4, 5, requires_grad=True)
    logits = torch.randn(4, 3, requires_grad=True)
    terms = made((embedding, logits), batch([0, 1, 2, 3], labels))
    assert set(terms) == names  # the same names whether or not the batch holds labels
    total = sum(terms.values())
    assert torch.isfinite(total)
    total.backward()
    assert logits.grad is not None
    label_free = loss not in ("dkd", "camkd")
    if label_free or min(labels) >= 0:  # (the contrastive term reaches the embedding, not the logits)
        reached = [g.abs().sum() for g in (logits.grad, embedding.grad) if g is not None]
        assert sum(reached) > 0


def test_unlabelled_clips_reach_label_free_terms_only():
    labels = (0, -1, -1, -1)
    kd = distiller([SKELETON], [Stage(1, ["skeleton"], "kd")])
    dkd = distiller([SKELETON], [Stage(1, ["skeleton"], "dkd")])
    assert kd.uses_unlabelled and not dkd.uses_unlabelled
    logits = torch.randn(4, 3)
    terms = kd((torch.zeros(4, 5), logits), batch([0, 1, 2, 3], labels))
    assert terms["kd"].item() == pytest.approx(kd_loss(logits, SKELETON.logits, 4.0).item())
    # cross-entropy over the one labelled clip only, with the default label smoothing of 0
    assert terms["ce"].item() == pytest.approx(torch.nn.functional.cross_entropy(logits[:1], torch.tensor([0])).item())
    # dkd sees the labelled clip only, counted by its share of the batch
    from pskd.distill.losses.dkd import dkd_loss

    terms = dkd((torch.zeros(4, 5), logits), batch([0, 1, 2, 3], labels))
    expected = 0.25 * dkd_loss(logits[:1], SKELETON.logits[:1], torch.tensor([0]), 1.0, 8.0, 4.0)
    assert terms["dkd"].item() == pytest.approx(expected.item())


def test_only_projections_and_prototypes_are_learnable():
    made = distiller([SKELETON, FUSION], [Stage(1, ["skeleton"], "acs")], class_embedding="prototype")
    names = {name for name, _ in made.named_parameters()}
    assert names == {"terms.acs.projections.skeleton.linear.weight", "terms.acs.projections.skeleton.linear.bias",
                     "terms.acs.projections.fusion.linear.weight", "terms.acs.projections.fusion.linear.bias",
                     "terms.acs.prototypes.skeleton", "terms.acs.prototypes.fusion"}
    assert not SKELETON.logits.requires_grad


def test_term_options_are_checked_and_used():
    made = distiller([SKELETON], [Stage(1, ["skeleton"], "contrastive")], {"contrastive": {"dim": 7}})
    assert made.terms["contrastive"].student_heads["skeleton"].out_features == 7
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        distiller([SKELETON], [Stage(1, ["skeleton"], "contrastive")], {"contrastive": {"dimension": 7}})


@pytest.mark.parametrize("stages, message", [
    ([Stage(2, ["skeleton"], "kd")], "must start at epoch 1"),
    ([Stage(1, ["depth"], "kd")], "names teachers ['depth']"),
    ([Stage(1, [], "kd")], "names teachers []"),
    ([Stage(1, ["skeleton"], "crd")], "unknown loss 'crd'"),
])
def test_bad_stages(stages, message):
    from pskd.errors import ConfigError

    with pytest.raises((ValueError, ConfigError)) as caught:
        distiller([SKELETON], stages)
    assert message in str(caught.value)
