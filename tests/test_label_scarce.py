"""Scarce labels: which clips keep their label, who sees which label, unlabelled clips in a folder, and the terms
that learn from unlabelled clips (self-training, cross-modal contrastive)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from conftest import run_cli
from test_distill_pipeline import TINY
from test_folder_dataset import write_folder

from pskd.config import DistillConfig, build_config
from pskd.data.labels import UNLABELLED, hide_labels, keep_labels
from pskd.data.protocols import make_split
from pskd.distill.losses.contrastive import info_nce
from pskd.distill.losses.fixmatch import FixMatch, mask_time
from pskd.distill.terms import TermContext, TermInputs
from pskd.errors import ConfigError
from pskd.pipeline import run
from pskd.training.session import open_session

QUIET = lambda *a, **k: None  # noqa: E731


def utd_like(classes=27, subjects=8, trials=4):
    grid = np.array([(c, s, t) for c in range(classes) for s in range(1, subjects + 1) for t in range(1, trials + 1)])
    return grid[:, 0], grid[:, 1], grid[:, 2]


def test_a_quarter_keeps_one_trial_per_class_and_training_subject():
    labels, subjects, trials = utd_like()
    rows = np.flatnonzero(subjects % 2 == 1)
    keep = keep_labels(labels, subjects, rows, 0.25, seed=0)
    assert keep[subjects % 2 == 0].all()  # test subjects are never touched
    kept = np.flatnonzero(keep & (subjects % 2 == 1))
    pairs = {(labels[i], subjects[i]) for i in kept}
    assert len(kept) == 27 * 4 == len(pairs)  # exactly one per class and subject
    assert not (keep_labels(labels, subjects, rows, 0.25, seed=1) == keep).all()  # its own seed picks the trials
    assert (keep_labels(labels, subjects, rows, 0.25, seed=0) == keep).all()  # and fixes them


def test_every_class_keeps_a_label_and_fraction_one_keeps_all():
    labels, subjects, _ = utd_like()
    rows = np.flatnonzero(subjects % 2 == 1)
    keep = keep_labels(labels, subjects, rows, 0.05, seed=3)
    assert set(labels[rows][keep[rows]]) == set(range(27))
    assert keep_labels(labels, subjects, rows, 1.0, seed=0).all()


def test_labelled_subjects_only_and_clips_that_came_unlabelled():
    labels, subjects, _ = utd_like(classes=3, subjects=4)
    labels = labels.copy()
    labels[0] = UNLABELLED  # a clip without a label stays without one
    rows = np.arange(len(labels))
    keep = keep_labels(labels, subjects, rows, 1.0, seed=0, only_subjects=[1, 2])
    assert not keep[0] and not keep[np.isin(subjects, [3, 4])].any()
    assert keep[np.isin(subjects, [1, 2])].sum() == np.isin(subjects, [1, 2]).sum() - 1
    hidden = hide_labels(labels, keep)
    assert (hidden[~keep] == UNLABELLED).all() and (hidden[keep] == labels[keep]).all()


def test_split_as_labels_see_it():
    labels, subjects, trials = utd_like(classes=3, subjects=4)
    split = make_split("utd_mhad", "cross_subject", subjects, trials)
    keep = keep_labels(labels, subjects, np.concatenate([split.train, split.val]), 0.5, seed=0)
    seen = split.labelled_by(hide_labels(labels, keep))
    assert len(seen.train) + len(seen.unlabelled) == len(split.train)
    assert len(seen.val) + len(seen.unlabelled_val) == len(split.val)
    assert (keep[seen.train]).all() and (keep[seen.val]).all() and not keep[seen.unlabelled].any()
    assert (seen.test == split.test).all()
    nothing_in_val = np.where(np.isin(subjects, split.val_subjects), UNLABELLED, labels)
    with pytest.raises(ConfigError, match="validation subjects \\[3\\] have no labelled clip"):
        split.labelled_by(nothing_in_val)


def scarce(method="pskd", teachers="same", **distill):
    data = {**TINY["data"], "labels": {"fraction": 0.5, "teachers": teachers}}
    return build_config({**TINY, "method": method, "data": data, "distill": distill})


def test_hidden_labels_never_reach_the_student_and_teachers_see_them_only_with_all():
    same = open_session(scarce(), QUIET)
    hidden = np.concatenate([same.split.unlabelled, same.split.unlabelled_val])
    assert len(hidden) and (same.prepared.labels[hidden] == UNLABELLED).all()
    assert (same.teacher_prepared.labels[hidden] == UNLABELLED).all()
    every = open_session(scarce(teachers="all"), QUIET)
    assert (every.prepared.labels[hidden] == UNLABELLED).all()
    assert (every.teacher_prepared.labels[hidden] >= 0).all() and not len(every.teacher_split.unlabelled)
    assert (every.prepared.labels[every.split.test] >= 0).all()


@pytest.mark.parametrize("method, unlabelled_in_batches", [("ce", False), ("self_train", True), ("kd", True),
                                                           ("dkd", False)])
def test_unlabelled_clips_join_training_only_for_terms_that_use_them(tmp_path, monkeypatch, method,
                                                                     unlabelled_in_batches):
    from pskd.training import recipe

    sizes = {}
    original = recipe.fit

    def recording_fit(model, train, *args, **kwargs):
        sizes.setdefault(args[-1].description, (len(train), int((train.labels < 0).sum())))
        return original(model, train, *args, **kwargs)

    monkeypatch.setattr(recipe, "fit", recording_fit)
    _, metrics = run(scarce(method), tmp_path / method, log=QUIET)
    size, unlabelled = sizes["student"]
    counts = metrics["labels"]
    assert counts["fraction"] == 0.5 and counts["unlabelled"] > 0
    assert (unlabelled > 0) == unlabelled_in_batches
    assert size == metrics["split"]["train"] + (unlabelled if unlabelled_in_batches else 0)
    if method in ("kd", "dkd"):  # teachers with `same` learn from the labelled clips only
        assert sizes["teachers.skeleton"][1] == 0
    report = (tmp_path / method / "report.md").read_text()
    assert f"{counts['unlabelled']} are unlabelled paired clips" in report


def test_folder_clips_without_a_label(tmp_path, capsys):
    root = write_folder(tmp_path / "own")
    manifest = root / "manifest.csv"
    rows = list(csv.DictReader(manifest.open()))
    for row in rows:
        if row["trial"] == "2" and row["subject"] in ("person1", "person2"):
            row["label"] = ""
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    code, out, err = run_cli(["data", "check", "folder", "--data-dir", str(root)], capsys)
    assert code == 0, err
    assert "subject 1: 3 labelled + 3 unlabelled" in out and "subject 3: 6 labelled + 0 unlabelled" in out
    config = build_config({**TINY, "method": "kd", "data": {"dataset": "folder", "data_dir": str(root),
                                                            "protocol": "leave_subjects_out",
                                                            "folder": {"test_subjects": [4]}}})
    _, metrics = run(config, tmp_path / "run", log=QUIET)
    assert metrics["labels"]["unlabelled"] == 6 and metrics["split"]["test"] == 6


def test_info_nce_by_hand():
    student = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    teacher = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    # normalised: s = [1,0], [0,1]; t = [1,0], [.7071,.7071]; similarity / 0.5
    c = 1 / math.sqrt(2)
    sim = [[2.0, 2 * c], [0.0, 2 * c]]
    rows = -(sim[0][0] - math.log(math.exp(sim[0][0]) + math.exp(sim[0][1]))) \
        - (sim[1][1] - math.log(math.exp(sim[1][0]) + math.exp(sim[1][1])))
    cols = -(sim[0][0] - math.log(math.exp(sim[0][0]) + math.exp(sim[1][0]))) \
        - (sim[1][1] - math.log(math.exp(sim[0][1]) + math.exp(sim[1][1])))
    expected = 0.5 * (rows / 2 + cols / 2)
    assert info_nce(student, teacher, 0.5).item() == pytest.approx(expected, rel=1e-6)
    assert info_nce(student[:1], teacher[:1], 0.5).item() == pytest.approx(0.0, abs=1e-7)


def test_mask_time_replaces_a_span_by_the_mean():
    x = torch.arange(20, dtype=torch.float32).view(1, 10, 2)
    out = mask_time(x, 0.3, torch.Generator().manual_seed(0))
    changed = (out != x).any(dim=2)[0]
    assert int(changed.sum()) == 3 and torch.allclose(out[0, changed], x.mean(dim=1).expand(3, 2))
    run_ = torch.nonzero(changed).flatten()
    assert (run_[1:] - run_[:-1] == 1).all()  # one contiguous span


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3, 2)

    def forward(self, batch):
        logits = self.layer(batch["accelerometer"].mean(dim=1))
        return logits, logits


def test_fixmatch_learns_only_from_confident_unlabelled_clips():
    term = FixMatch(TermContext(2, [], DistillConfig(), options={"threshold": 0.9}))
    model = Linear()
    batch = {"accelerometer": torch.randn(4, 8, 3), "label": torch.tensor([0, -1, -1, -1]),
             "index": torch.arange(4)}
    logits = torch.tensor([[5.0, 0.0], [5.0, 0.0], [0.1, 0.0], [0.0, 4.0]])  # clip 2 is not confident
    inputs = TermInputs(logits, logits, batch["label"], [], [], [], batch, model)
    torch.manual_seed(0)
    loss = term(inputs)["self"]
    torch.manual_seed(0)  # the strong view is drawn from the global generator: the same view again
    strong = term.strong({k: v[[1, 3]] for k, v in batch.items()})
    _, strong_logits = model(strong)
    expected = torch.nn.functional.cross_entropy(strong_logits, torch.tensor([0, 1]), reduction="sum") / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert model.layer.weight.grad.abs().sum() > 0
    unsure = TermInputs(logits[2:3], logits[2:3], torch.tensor([-1]), [], [], [],
                        {k: v[2:3] for k, v in batch.items()}, model)
    assert term(unsure)["self"].item() == 0.0


def test_sweep_grid_shares_teachers_runs_identical_configs_once_and_jobs_change_nothing(tmp_path, monkeypatch):
    from pskd import sweep as sweep_module

    calls = []
    original = sweep_module.train_teachers

    def counting(session, ready=None):
        calls.append((session.config.data.labels.fraction, session.config.data.labels.teachers))
        return original(session, ready)

    monkeypatch.setattr(sweep_module, "train_teachers", counting)
    grid = sweep_module.parse_grid(["data.labels.fraction=0.5,1.0", "data.labels.teachers=same,all"])
    base = build_config({**TINY, "method": "kd"})
    one = sweep_module.sweep(base, ["ce", "kd"], [0], tmp_path / "one", log=QUIET, grid=grid, jobs=1)
    # teachers per labelled set: at fraction 1 'same' and 'all' are one and the same
    assert sorted(calls) == [(0.5, "all"), (0.5, "same"), (1.0, "same")]
    rows = {(r["point"]["data.labels.fraction"], r["point"]["data.labels.teachers"], r["variant"]): r
            for r in one["rows"]}
    assert len(rows) == 8 and sum(r["shared"] for r in one["rows"]) == 3  # ce twice at 0.5 and 1.0, kd at 1.0
    assert rows[(0.5, "same", "ce")]["accuracy"] == rows[(0.5, "all", "ce")]["accuracy"]
    gain = one["methods"]["kd (fraction=0.5, teachers=all)"]["gain_over_ce"]
    assert gain["values"] == [rows[(0.5, "all", "kd")]["accuracy"] - rows[(0.5, "all", "ce")]["accuracy"]]
    assert (tmp_path / "one" / "gain_map.png").stat().st_size > 10_000
    assert len((tmp_path / "one" / "rows.jsonl").read_text().splitlines()) == 8  # written as groups end
    assert "| kd (fraction=0.5, teachers=same) |" in (tmp_path / "one" / "results.md").read_text()
    two = sweep_module.sweep(base, ["ce", "kd"], [0], tmp_path / "two", log=QUIET, grid=grid, jobs=2)
    assert [r["accuracy"] for r in two["rows"]] == [r["accuracy"] for r in one["rows"]]


def test_an_interrupted_sweep_resumes_where_it_stopped(tmp_path, monkeypatch):
    from pskd import sweep as sweep_module

    base = build_config({**TINY, "method": "kd"})
    grid = sweep_module.parse_grid(["data.labels.fraction=0.5,1.0"])
    original, trained = sweep_module.run, []

    def dies_at_the_third(config, folder, **kwargs):
        if len(trained) == 2:
            raise RuntimeError("killed")
        trained.append(folder)
        return original(config, folder, **kwargs)

    monkeypatch.setattr(sweep_module, "run", dies_at_the_third)
    out = tmp_path / "sweep"
    with pytest.raises(RuntimeError, match="killed"):
        sweep_module.sweep(base, ["ce", "kd"], [0], out, log=QUIET, grid=grid)
    assert len((out / "rows.jsonl").read_text().splitlines()) == 2  # one row per run, as each ends
    with pytest.raises(ConfigError, match="--resume"):
        sweep_module.sweep(base, ["ce", "kd"], [0], out, log=QUIET, grid=grid)
    with pytest.raises(ConfigError, match="does not plan"):
        sweep_module.sweep(base, ["kd"], [0], out, log=QUIET, grid=grid, resume=True)
    # the second run finished, but its row was lost (killed between the two): read back from its folder
    first, second = (out / "rows.jsonl").read_text().splitlines()
    (out / "rows.jsonl").write_text(first + "\n" + second[:20])
    monkeypatch.setattr(sweep_module, "run", lambda config, folder, **kwargs: (trained.append(folder),
                                                                                original(config, folder, **kwargs))[1])
    resumed = sweep_module.sweep(base, ["ce", "kd"], [0], out, log=QUIET, grid=grid, resume=True)
    assert len(trained) == 4 and len(set(trained)) == 4  # nothing trained twice
    assert len(resumed["rows"]) == 4
    lines = (out / "rows.jsonl").read_text().splitlines()
    assert len(lines) == 4 and {json.loads(line)["variant"] for line in lines} == {"ce", "kd"}  # the cut line gone
    invocations = [json.loads(line) for line in (out / "invocations.jsonl").read_text().splitlines()]
    assert [i["runs_trained"] for i in invocations] == [2]  # the killed invocation recorded nothing
    assert resumed["wall_time_s"] == pytest.approx(invocations[0]["seconds"], abs=0.1)
    monkeypatch.setattr(sweep_module, "run", original)
    fresh = sweep_module.sweep(base, ["ce", "kd"], [0], tmp_path / "fresh", log=QUIET, grid=grid)
    assert [r["accuracy"] for r in resumed["rows"]] == [r["accuracy"] for r in fresh["rows"]]


@pytest.mark.parametrize("items, message", [
    (["data.labels.fraction"], "expected key=value1,value2"), (["a=1", "a=2"], "given twice"), (["=1,2"], "expected"),
])
def test_bad_grids(items, message):
    from pskd.sweep import parse_grid

    with pytest.raises(ConfigError, match=message):
        parse_grid(items)


def test_teachers_load_from_an_earlier_run_and_teach_the_same_student(tmp_path):
    import time

    first_config = scarce("pskd")
    tic = time.perf_counter()
    first_dir, first = run(first_config, tmp_path / "first", log=QUIET)
    first_seconds = time.perf_counter() - tic
    tree = first_config.model_dump(mode="json")
    for name in tree["teachers"]:
        tree["teachers"][name]["checkpoint"] = str(first_dir)
    tic = time.perf_counter()
    _, second = run(build_config(tree), tmp_path / "second", log=QUIET)
    assert time.perf_counter() - tic < first_seconds
    assert second["student"]["test"] == first["student"]["test"]
    for name in ("skeleton", "fusion"):
        assert second["teachers"][name]["loaded_from"] == str(first_dir / "teachers" / f"{name}.pt")
        assert second["teachers"][name]["test"]["accuracy"] == first["teachers"][name]["test"]["accuracy"]


@pytest.mark.parametrize("changes, message", [
    ({"data": {"labels": {"fraction": 0.5, "teachers": "all"}}}, "its labels"),  # it saw fewer labels than 'all'
    ({"data": {"protocol": "trial_split", "synthetic": {"trials": 4}}}, "which this run tests on"),
    ({"data": {"labels": {"fraction": 0.5, "seed": 7}}}, "its labels"),
])
def test_a_teacher_that_does_not_fit_the_run_is_refused(tmp_path, changes, message):
    from pskd.sweep import merge_tree

    first_dir, _ = run(scarce("kd"), tmp_path / "first", log=QUIET)
    tree = merge_tree(scarce("kd").model_dump(mode="json"), changes)
    for name in tree["teachers"]:
        tree["teachers"][name]["checkpoint"] = str(first_dir)
    with pytest.raises(ConfigError, match=message):
        run(build_config(tree), tmp_path / "second", log=QUIET)
    assert not (tmp_path / "second").exists() and not (tmp_path / "second.incomplete").exists()
    missing = merge_tree(tree, {"teachers": {"skeleton": {"checkpoint": str(tmp_path / "nowhere")}}})
    with pytest.raises(ConfigError, match="no such teacher checkpoint"):
        run(build_config(missing), tmp_path / "third", log=QUIET)


def test_runs_differing_only_in_what_they_do_not_use_are_trained_once(tmp_path):
    from pskd.sweep import _groups, parse_grid, plan

    base = build_config({**TINY, "method": "kd"})
    grid = parse_grid(["distill.add_terms=[],[contrastive]", "distill.terms.fixmatch.threshold=0.5,0.9"])
    runs = plan(base, {"ce": {"method": "ce"}, "self_train": {"method": "self_train"}}, [0], grid, tmp_path)
    distinct = [item for group in _groups(runs) for item in group]
    # ce uses neither: one run; self_train uses the fixmatch options, not add_terms: two runs
    assert sorted(item["variant"] for item in distinct) == ["ce", "self_train", "self_train"]


def test_a_student_starts_from_an_earlier_student(tmp_path):
    first_dir, first = run(scarce("ce"), tmp_path / "first", log=QUIET)
    tree = scarce("ce").model_dump(mode="json")
    tree["student"]["init_from"] = str(first_dir)
    tree["train"]["epochs"] = 1
    tree["train"]["lr"] = 1e-9  # a step too small to move it: the student stays the one it started from
    tree["train"]["refit"] = False
    tree["train"]["ema"] = None
    second_dir, second = run(build_config(tree), tmp_path / "second", log=QUIET)
    before = torch.load(first_dir / "checkpoints" / "best.pt", weights_only=True)["state_dict"]
    after = torch.load(second_dir / "checkpoints" / "last.pt", weights_only=True)["state_dict"]
    weights = [k for k in before if k.endswith("weight") and "bn" not in k and before[k].dim() > 1]
    assert weights and all(torch.allclose(before[k], after[k], atol=1e-6) for k in weights)
    tree["student"]["options"] = {"widths": [8, 8], "embedding_dim": 16}
    with pytest.raises(ConfigError, match="student.init_from .*its options"):
        run(build_config(tree), tmp_path / "third", log=QUIET)


def test_sweep_resume_needs_the_folder_of_an_earlier_sweep(tmp_path, capsys):
    config = "configs/synthetic/blind_wrist.yaml"
    code, _, err = run_cli(["sweep", config, "--methods", "ce", "--resume"], capsys)
    assert code == 2 and "name the interrupted sweep's folder with --out" in err
    code, _, err = run_cli(["sweep", config, "--methods", "ce", "--resume", "--out", str(tmp_path / "none")], capsys)
    assert code == 2 and "is not the folder of an earlier sweep" in err
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "rows.jsonl").write_text('{"point": {}, "seed": 0, "variant": "ce"}\nnot json\n{"x"')
    code, _, err = run_cli(["sweep", config, "--methods", "ce", "--seeds", "1", "--resume", "--out",
                            str(tmp_path / "old")], capsys)
    assert code == 2 and "rows.jsonl: line 1 is not a result row of a sweep" in err
