import math

import pytest
import torch

from pskd.distill.distiller import Distiller, LossWeights, Stage, TeacherOutputs
from pskd.distill.losses.kd import kd_loss


def teacher(name, logits, dim=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(len(logits), dim, generator=g)
    return TeacherOutputs(name, torch.tensor(logits), embeddings, torch.randn(3, dim, generator=g))


N = 4
SKELETON = teacher("skeleton", [[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0], [3.0, 0.0, 0.0]], seed=1)
FUSION = teacher("fusion", [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dim=3, seed=2)


def batch(index):
    index = torch.tensor(index)
    return {"label": torch.tensor([0, 1, 2, 0])[index], "index": index}


def test_targets_are_looked_up_by_clip_index():
    distiller = Distiller(5, [SKELETON], [Stage(1, ["skeleton"], "kd")], LossWeights(temperature=2.0))
    student = torch.zeros(2, 3)
    terms = distiller((torch.zeros(2, 5), student), batch([2, 0]))
    expected = kd_loss(student, SKELETON.logits[[2, 0]], 2.0)
    assert terms["kd"].item() == pytest.approx(expected.item())
    assert terms["ce"].item() == pytest.approx(math.log(3))


def test_progressive_stages_switch_teachers_and_losses_by_epoch():
    stages = [Stage(1, ["fusion"], "kd"), Stage(4, ["skeleton", "fusion"], "acs")]
    distiller = Distiller(5, [SKELETON, FUSION], stages, LossWeights())
    distiller.set_epoch(3)
    assert distiller.stage.teachers == ["fusion"]
    first = distiller((torch.randn(4, 5), torch.randn(4, 3)), batch([0, 1, 2, 3]))
    assert set(first) == {"ce", "kd"}
    distiller.set_epoch(4)
    second = distiller((torch.randn(4, 5), torch.randn(4, 3)), batch([0, 1, 2, 3]))
    assert set(second) == {"ce", "kd", "semantic"}


@pytest.mark.parametrize("loss, names", [
    ("kd", {"ce", "kd"}), ("avg_kd", {"ce", "kd"}), ("dkd", {"ce", "dkd"}), ("camkd", {"ce", "kd"}),
    ("dask", {"ce", "kd", "relational", "semantic"}), ("acs", {"ce", "kd", "semantic"}),
])
def test_every_loss_gives_named_finite_terms_and_gradients(loss, names):
    distiller = Distiller(5, [SKELETON, FUSION], [Stage(1, ["skeleton", "fusion"], loss)], LossWeights())
    embedding = torch.randn(4, 5, requires_grad=True)
    logits = torch.randn(4, 3, requires_grad=True)
    terms = distiller((embedding, logits), batch([0, 1, 2, 3]))
    assert set(terms) == names
    total = sum(terms.values())
    assert torch.isfinite(total)
    total.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_only_projections_and_prototypes_are_learnable():
    weights = LossWeights(class_embedding="prototype")
    distiller = Distiller(5, [SKELETON, FUSION], [Stage(1, ["skeleton"], "acs")], weights)
    names = {name for name, _ in distiller.named_parameters()}
    assert names == {"projections.skeleton.linear.weight", "projections.skeleton.linear.bias",
                     "projections.fusion.linear.weight", "projections.fusion.linear.bias",
                     "prototypes.skeleton", "prototypes.fusion"}
    assert not SKELETON.logits.requires_grad


@pytest.mark.parametrize("stages, message", [
    ([Stage(2, ["skeleton"], "kd")], "must start at epoch 1"),
    ([Stage(1, ["depth"], "kd")], "names teachers ['depth']"),
    ([Stage(1, ["skeleton"], "crd")], "unknown distillation loss 'crd'"),
])
def test_bad_stages(stages, message):
    with pytest.raises(ValueError) as caught:
        Distiller(5, [SKELETON], stages, LossWeights())
    assert message in str(caught.value)
