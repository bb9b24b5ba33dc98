"""Doing no harm with scarce labels: the gate (the student trained without teachers, delivered where validation
prefers it, by a sign test), and the filters ACS switches on where the teachers rarely agree on unlabelled clips."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from test_distill_pipeline import TINY
from test_label_scarce import QUIET, scarce

from pskd.config import DistillConfig, build_config
from pskd.pipeline import run


def test_the_gate_delivers_the_student_validation_prefers(tmp_path, monkeypatch):
    from pskd.training import recipe

    original = recipe.train_and_evaluate
    roles = []

    def worse_with_teachers(role, *args, **kwargs):
        trained = original(role, *args, **kwargs)
        roles.append(role)
        if role == "student":  # make validation prefer the plain student
            trained.summary["val"] = {"accuracy": -1.0, "macro_f1": 0.0}
        return trained

    monkeypatch.setattr(recipe, "train_and_evaluate", worse_with_teachers)
    out, metrics = run(scarce("kd", gate=True), tmp_path / "gated", log=QUIET)
    gate = metrics["student"]["gate"]
    assert roles[-2:] == ["student", "student without teachers (gate)"]
    assert gate["delivered"] == "cross-entropy" and gate["val_distilled"] == -1.0
    assert metrics["student"]["test"]["accuracy"] == gate["test_cross_entropy"]
    assert "so the cross-entropy student is delivered" in (out / "report.md").read_text()
    assert scarce("kd", gate=True).distill.gate == "any" and scarce("kd", gate=False).distill.gate == "off"
    roles.clear()
    monkeypatch.setattr(recipe, "train_and_evaluate", original)
    _, plain = run(scarce("self_train", gate=True), tmp_path / "no-teachers", log=QUIET)
    assert "gate" not in plain["student"]  # nothing to gate without teachers


def test_the_blind_wrist_setting_runs_through_the_gate(tmp_path):
    """Classes the wrist cannot see (pskd.data.synthetic.BLIND): the gated student is the one validation prefers."""
    tree = {**TINY, "method": "pskd", "distill": {"gate": True},
            "data": {"dataset": "synthetic", "synthetic": {"subjects": 4, "trials": 2, "classes": 3, "blind": 1}}}
    _, metrics = run(build_config(tree), tmp_path / "blind", log=QUIET)
    gate = metrics["student"]["gate"]
    assert metrics["student"]["test"]["per_class"][3]["class"] == "wave, left hand on the hip"
    assert gate["delivered"] == ("distilled" if gate["val_distilled"] >= gate["val_cross_entropy"] else "cross-entropy")
    chosen = gate["test_distilled"] if gate["delivered"] == "distilled" else gate["test_cross_entropy"]
    assert metrics["student"]["test"]["accuracy"] == chosen


def test_unlabelled_agreement_counts_confident_agreement_by_hand():
    from types import SimpleNamespace

    from pskd.training.student import unlabelled_agreement

    probabilities = {
        # clips 0-3 are labelled (never looked at); 4: both say 0, A at .95; 5: both say 1, neither at .9;
        # 6: A says 0 at .95, B says 2; 7: both say 2, B at .92
        "a": [[1 / 3] * 3] * 4 + [[0.95, 0.03, 0.02], [0.2, 0.6, 0.2], [0.95, 0.03, 0.02], [0.1, 0.1, 0.8]],
        "b": [[1 / 3] * 3] * 4 + [[0.6, 0.3, 0.1], [0.3, 0.5, 0.2], [0.1, 0.1, 0.8], [0.04, 0.04, 0.92]],
    }
    teachers = {name: SimpleNamespace(outputs=SimpleNamespace(logits=torch.log(torch.tensor(p))))
                for name, p in probabilities.items()}
    session = SimpleNamespace(split=SimpleNamespace(unlabelled=np.array([4, 5, 6, 7])))
    found = unlabelled_agreement(session, teachers)
    assert found["clips"] == 4 and found["confident_agreement"] == pytest.approx(0.5)  # clips 4 and 7
    # the most confident teacher: a on 4 and 6, a on 5 (.6 > .5), b on 7
    assert found["followed"] == pytest.approx({"a": 0.75, "b": 0.25})
    assert unlabelled_agreement(SimpleNamespace(split=SimpleNamespace(unlabelled=np.array([], dtype=int))),
                                teachers) is None


def test_pskd_reports_how_far_its_teachers_agree_on_unlabelled_clips_and_filters_them(tmp_path):
    lines = []
    _, metrics = run(scarce("pskd", unlabelled_threshold=0.9, unlabelled_agree=True), tmp_path / "run",
                     log=lambda message, *a, **k: lines.append(str(message)))
    found = metrics["student"]["unlabelled_agreement"]
    assert 0 < found["clips"] <= metrics["labels"]["unlabelled"]  # the training subjects' unlabelled clips
    assert 0 <= found["confident_agreement"] <= 1 and sum(found["followed"].values()) == pytest.approx(1)
    assert set(found["followed"]) == {"skeleton", "fusion"}
    said = [line for line in lines if line.startswith("unlabelled clips:")]
    assert said and f"{100 * found['confident_agreement']:.0f} % of them" in said[0]
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"Unlabelled training clips: {found['clips']}. The teachers agree" in report
    assert f"on {100 * found['confident_agreement']:.2f} % of them" in report
    _, plain = run(scarce("ce"), tmp_path / "ce", log=QUIET)
    assert "unlabelled_agreement" not in plain["student"]


def test_the_sign_test_by_hand():
    from pskd.training.student import sign_test

    assert sign_test(5, 0) == pytest.approx(1 / 32)  # five clips, all won: the least a clear win needs
    assert sign_test(4, 0) == pytest.approx(1 / 16)
    assert sign_test(6, 1) == pytest.approx((1 + 7) / 128)
    assert sign_test(0, 0) == 1.0 and sign_test(2, 5) > 0.5


def _rigged(original, distilled_right: int, plain_right: int):
    """`original` training, with the first `n` validation clips right and the others wrong, for the distilled and
    the plain student."""
    def train(role, *args, **kwargs):
        trained = original(role, *args, **kwargs)
        right = np.zeros(len(trained.val_correct), dtype=bool)
        right[: distilled_right if role == "student" else plain_right] = True
        trained.val_correct = right
        trained.summary["val"] = {"accuracy": float(right.mean()), "macro_f1": 0.0}
        return trained
    return train


def test_the_clear_gate_needs_a_clear_win_and_skips_a_validation_too_small(tmp_path, monkeypatch):
    from pskd.training import recipe
    from pskd.training.student import sign_test

    original = recipe.train_and_evaluate
    rigged = functools.partial(_rigged, original)
    every_label = build_config({**TINY, "method": "kd", "distill": {"gate": "clear"}})
    roles = []
    monkeypatch.setattr(recipe, "train_and_evaluate", lambda role, *a, **k: roles.append(role) or rigged(1, 8)(role, *a, **k))
    out, metrics = run(every_label, tmp_path / "clear", log=QUIET)
    gate = metrics["student"]["gate"]
    assert gate["validation_clips"] >= 8 and gate["plain_wins"] == 7 and gate["plain_losses"] == 0
    assert gate["p_value"] == pytest.approx(sign_test(7, 0)) and gate["delivered"] == "cross-entropy"
    assert metrics["student"]["test"]["accuracy"] == gate["test_cross_entropy"]
    assert "sign test p = " in (out / "report.md").read_text()
    monkeypatch.setattr(recipe, "train_and_evaluate", rigged(2, 4))  # ahead by two clips of two: not clear
    _, metrics = run(every_label, tmp_path / "close", log=QUIET)
    gate = metrics["student"]["gate"]
    assert gate["delivered"] == "distilled" and gate["val_cross_entropy"] > gate["val_distilled"]
    assert metrics["student"]["test"]["accuracy"] == gate["test_distilled"]
    any_lead = build_config({**TINY, "method": "kd", "distill": {"gate": "any"}})
    _, metrics = run(any_lead, tmp_path / "any", log=QUIET)
    assert metrics["student"]["gate"]["delivered"] == "cross-entropy"  # any lead decides under the former rule
    roles.clear()
    monkeypatch.setattr(recipe, "train_and_evaluate", lambda role, *a, **k: roles.append(role) or original(role, *a, **k))
    _, metrics = run(scarce("kd", gate="clear"), tmp_path / "small", log=QUIET)  # 4 labelled validation clips
    gate = metrics["student"]["gate"]
    assert gate["validation_clips"] < 5 and gate["delivered"] == "distilled"
    assert roles[-1] == "student" and "student without teachers (gate)" not in roles  # no plain student trained


def test_the_win_gate_delivers_the_distilled_student_only_on_its_clear_win(tmp_path, monkeypatch):
    from pskd.training import recipe
    from pskd.training.student import sign_test

    rigged = functools.partial(_rigged, recipe.train_and_evaluate)
    win = build_config({**TINY, "method": "kd", "distill": {"gate": "win"}})
    monkeypatch.setattr(recipe, "train_and_evaluate", rigged(4, 2))  # ahead by two clips of two: not clear
    out, metrics = run(win, tmp_path / "close", log=QUIET)
    gate = metrics["student"]["gate"]
    assert gate["rule"] == "win" and gate["delivered"] == "cross-entropy"
    assert gate["p_value"] == pytest.approx(sign_test(2, 0))
    assert metrics["student"]["test"]["accuracy"] == gate["test_cross_entropy"]
    assert "sign test for the distilled lead p = " in (out / "report.md").read_text()
    monkeypatch.setattr(recipe, "train_and_evaluate", rigged(8, 1))  # seven clips of seven: a clear win
    _, metrics = run(win, tmp_path / "clear", log=QUIET)
    gate = metrics["student"]["gate"]
    assert gate["delivered"] == "distilled" and gate["p_value"] == pytest.approx(sign_test(7, 0))
    assert metrics["student"]["test"]["accuracy"] == gate["test_distilled"]


def test_auto_filters_switch_on_only_where_teachers_rarely_agree():
    from pskd.training.student import filtered_settings

    low, high = {"confident_agreement": 0.2}, {"confident_agreement": 0.5}
    settings = DistillConfig()
    assert settings.unlabelled_filter == "auto"
    chosen = filtered_settings(settings, low)
    assert chosen.terms["acs"] == {"mode": "soft", "unlabelled_threshold": 0.9, "unlabelled_agree": True}
    assert filtered_settings(settings, high) is None and filtered_settings(settings, None) is None
    assert filtered_settings(DistillConfig(unlabelled_filter="off"), low) is None
    own = DistillConfig(unlabelled_threshold=0.5)
    assert filtered_settings(own, low) is None  # the user's own filters stand


def test_a_run_whose_teachers_rarely_agree_filters_and_says_so(tmp_path, monkeypatch):
    from pskd.training import student as student_module

    monkeypatch.setattr(student_module, "HINT_BELOW", 1.01)  # every agreement counts as low
    lines = []
    out, metrics = run(scarce("pskd"), tmp_path / "run", log=lambda message, *a, **k: lines.append(str(message)))
    assert metrics["student"]["unlabelled_agreement"]["filtered"] is True
    assert any("distill.unlabelled_filter: auto" in line for line in lines)
    assert "distill.unlabelled_filter: auto" in (out / "report.md").read_text()
    _, unfiltered = run(scarce("pskd", unlabelled_filter="off"), tmp_path / "off", log=QUIET)
    assert unfiltered["student"]["unlabelled_agreement"]["filtered"] is False
