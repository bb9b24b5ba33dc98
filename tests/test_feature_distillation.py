"""The feature term, the components it regresses and their predictability from the watch, the skeleton-motion
teacher and the fusion teacher's modality dropout: by hand on small tensors, then through a run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_distill_pipeline import TINY

from pskd.config import build_config
from pskd.data.layouts import UTD_KINECT_V1
from pskd.distill.components import predictability, principal_components, teacher_components, watch_features
from pskd.distill.losses.feature import Feature, component_loss
from pskd.distill.terms import TeacherOutputs, TermContext, TermInputs
from pskd.models.fusion import FusionNet
from pskd.models.skeleton import SkeletonMotion
from pskd.pipeline import run

QUIET = lambda *a, **k: None  # noqa: E731


def test_principal_components_by_hand():
    # points along (1, 1) with a small spread along (1, -1): the first component is (1, 1) / sqrt 2
    t = torch.linspace(-2, 2, 9)
    s = 0.1 * (-1.0) ** torch.arange(9)  # even around the middle, so uncorrelated with t
    points = torch.stack([t + s, t - s], dim=1) + torch.tensor([3.0, -1.0])
    components = principal_components(points, 5)
    assert components.basis.shape == (2, 2)  # no more than the data spans
    assert abs(abs(float(components.basis[0, 0])) - 2 ** -0.5) < 1e-4 and components.variance[0] > components.variance[1]
    torch.testing.assert_close(components.mean, points.mean(dim=0))
    coordinates = components.project(points)
    torch.testing.assert_close(coordinates.var(dim=0), components.variance, rtol=1e-4, atol=1e-6)


def test_predictability_finds_what_the_features_carry_on_held_out_groups():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((120, 6))
    groups = np.repeat(np.arange(6), 20)
    targets = np.stack([features @ np.array([1.0, -2, 0, 0, 0.5, 0]),  # carried by the features
                        rng.standard_normal(120)], axis=1)            # not carried at all
    r2 = predictability(features, targets, groups, ridge=1e-3)
    assert r2[0] > 0.99 and r2[1] < 0.05 and ((r2 >= 0) & (r2 <= 1)).all()


def test_watch_features_are_standardised_and_per_segment():
    clips = np.random.default_rng(1).standard_normal((10, 16, 3)).astype(np.float32)
    features = watch_features(clips)
    assert features.shape == (10, 3 * (4 * 3 + 2))
    np.testing.assert_allclose(features.mean(axis=0), 0, atol=1e-9)


def _context(embeddings: torch.Tensor, found, **options) -> TermContext:
    teacher = TeacherOutputs("skeleton", torch.zeros(len(embeddings), 3), embeddings, torch.zeros(3, 2), found)
    return TermContext(4, [teacher], None, options=options)


def test_the_feature_term_by_hand():
    embeddings = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    components = principal_components(embeddings, 2)
    components.predictable = torch.tensor([1.0, 0.0])  # the watch predicts the first component, not the second
    term = Feature(_context(embeddings, components, components=2))
    student = torch.randn(4, 4)
    predicted = term.heads["skeleton"](student)
    target = components.project(embeddings)
    inputs = TermInputs(student, torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), ["skeleton"], [torch.zeros(4, 3)],
                        [embeddings], {})
    expected = ((predicted - target) ** 2).sum(dim=1).mean() / components.variance.sum()
    torch.testing.assert_close(term(inputs)["feature"], expected)
    torch.testing.assert_close(component_loss(target, target, components.variance), torch.tensor(0.0))
    focused = Feature(_context(embeddings, components, components=2, focus="predictable"))
    focused.heads.load_state_dict(term.heads.state_dict())
    only_first = ((predicted[:, 0] - target[:, 0]) ** 2).mean() / components.variance[0]
    torch.testing.assert_close(focused(inputs)["feature"], only_first)


def test_teacher_components_read_training_clips_only():
    embeddings = torch.randn(20, 5)
    embeddings[15:] = 100.0  # test clips, never part of the components
    components = teacher_components(embeddings, np.arange(15), 3)
    assert components.mean.abs().max() < 5 and components.predictable is None


def test_skeleton_motion_describes_the_motion_and_fusion_drops_the_skeleton():
    model = SkeletonMotion(UTD_KINECT_V1, 5, 16, segments=4)
    embedding, logits = model(torch.randn(3, 16, 20, 3))
    assert embedding.shape == (3, 20 * 3 * 2 * 4) and logits.shape == (3, 5)
    assert sum(p.numel() for p in model.parameters()) == 5 * (480 + 1)  # only the classifier learns
    with pytest.raises(ValueError, match="segments"):
        SkeletonMotion(UTD_KINECT_V1, 5, 16, segments=17)

    class Branch(torch.nn.Module):
        embedding_dim = 2

        def forward(self, x):
            return x, None

    net = FusionNet(Branch(), Branch(), 3, skeleton_dropout=0.5)
    skeleton, watch = torch.ones(1000, 2), torch.zeros(1000, 2)
    net.train()
    first = net.head.join.weight.detach()[:, :2].sum(dim=1)
    with torch.no_grad():
        embedding, _ = net(skeleton, watch)
    bias = torch.relu(net.head.join.bias.detach())
    dropped = (embedding == bias).all(dim=1).float().mean()
    assert 0.4 < dropped < 0.6 and first.abs().sum() > 0
    net.eval()
    with torch.no_grad():
        embedding, _ = net(skeleton, watch)
    assert not (embedding == bias).all(dim=1).any()
    with pytest.raises(ValueError, match="skeleton_dropout"):
        FusionNet(Branch(), Branch(), 3, skeleton_dropout=1.0)


def test_a_run_with_the_feature_term_and_the_skeleton_motion_teacher(tmp_path):
    tree = {**TINY, "method": "kd", "distill": {"add_terms": ["feature"],
                                                 "terms": {"feature": {"focus": "predictable", "components": 8}}}}
    tree["teachers"] = {**tree["teachers"], "motion": {"name": "skeleton_motion", "streams": ["skeleton"],
                                                       "options": {"segments": 2}, "train": {"epochs": 2}}}
    tree["distill"]["stages"] = [{"start": 1, "teachers": ["motion", "skeleton"], "loss": ["kd", "feature"]}]
    out, metrics = run(build_config(tree), tmp_path / "run", log=QUIET)
    shares = metrics["student"]["teacher_variance_predictable"]
    assert set(shares) == set(tree["teachers"]) and all(0 <= v <= 1 for v in shares.values())
    history = (out / "history.csv").read_text().splitlines()[0]
    assert "feature" in history


def test_diagnose_finds_the_classes_the_watch_cannot_see(capsys, monkeypatch):
    """The blind-wrist synthetic: a class whose right arm moves exactly as another's comes out unreachable."""
    import json

    from conftest import run_cli

    from pskd.training import diagnose

    monkeypatch.setattr(diagnose, "EPOCHS", 12)
    monkeypatch.setattr(diagnose, "CAMERA_EPOCHS", 20)
    args = ["data", "diagnose", "configs/synthetic/blind_wrist.yaml", "--set", "threads=1", "--set",
            "data.synthetic.subjects=6", "--set", "data.synthetic.classes=3", "--set", "data.synthetic.blind=1",
            "--folds", "3"]
    code, out, err = run_cli([*args, "--json"], capsys)
    assert code == 0, err
    found = json.loads(out)
    assert found["camera_streams"] == ["skeleton"] and found["watch_streams"] == ["accelerometer"]
    assert found["clips"] == 3 * 4 * 4  # the training subjects' clips (1, 3, 5), never the test subjects'
    blind = next(row for row in found["per_class"] if row["name"] == "wave, left hand on the hip")
    pair = next(p for p in found["pairs"] if set(p["classes"]) == {"wave", "wave, left hand on the hip"})
    assert pair["separability"] <= 0.3  # the watch cannot tell them apart
    assert blind["unreachable"] >= blind["reachable"]
    assert 0 <= found["reachable"] <= found["gap"] + 1e-9 and found["unreachable"] >= 0
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and "reachable" in out and "wave, left hand on the hip" in out
    code, _, err = run_cli(["data", "diagnose", "configs/utd_mhad/student_ce.yaml", "--set", "data.dataset=synthetic"],
                           capsys)
    assert code == 2 and "no teacher reads a stream" in err


def test_a_term_can_learn_from_some_of_the_stages_teachers():
    from pskd.data.batches import INDEX, LABEL
    from pskd.distill.distiller import Distiller, Stage
    from pskd.errors import ConfigError

    def teacher(name):
        embeddings = torch.randn(6, 4)
        return TeacherOutputs(name, torch.randn(6, 3), embeddings, torch.zeros(3, 4),
                              principal_components(embeddings, 2))

    context = TermContext(5, [teacher("a"), teacher("b")], build_config({}).distill)
    stages = [Stage(1, ["a", "b"], ["kd", "feature"])]
    distiller = Distiller(context, stages, {"feature": {"teachers": ["b"]}})
    assert set(distiller.terms["feature"].heads) == {"b"}
    batch = {LABEL: torch.tensor([0, 1, 2]), INDEX: torch.tensor([0, 3, 5])}
    terms = distiller((torch.randn(3, 5), torch.randn(3, 3)), batch)
    assert set(terms) == {"ce", "kd", "feature"} and torch.isfinite(terms["feature"])
    with pytest.raises(ValueError, match="are not teachers"):
        Distiller(context, stages, {"feature": {"teachers": ["c"]}})
    tree = {**TINY, "method": "pskd", "distill": {"terms": {"acs": {"teachers": ["nobody"]}}}}
    with pytest.raises(ConfigError, match=r"distill.terms.acs.teachers: \['nobody'\] are not among the teachers"):
        run(build_config(tree), None, log=QUIET)
