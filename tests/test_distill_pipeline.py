"""Teachers, then the distilled student, end to end on a tiny synthetic dataset."""

import json

import pytest
import torch
import yaml
from conftest import run_cli

from pskd.config import build_config
from pskd.pipeline import run

SMALL_GCN = {"widths": [8, 16], "strides": [1, 2], "embedding_dim": 16}
TINY = {
    "name": "tiny",
    "data": {"dataset": "synthetic", "synthetic": {"subjects": 4, "trials": 2, "classes": 4}},
    "preprocess": {"sensor_length": 32, "skeleton_length": 16},
    "student": {"name": "compact_cnn", "options": {"widths": [8, 16], "embedding_dim": 16}},
    "train": {"epochs": 3, "batch_size": 8},
    "progress": False,
    "teachers": {
        "skeleton": {"name": "skeleton_gcn", "options": SMALL_GCN, "train": {"epochs": 3, "batch_size": 8}},
        "fusion": {
            "name": "fusion", "streams": ["skeleton", "accelerometer"], "distill_from": "skeleton",
            "options": {"embedding_dim": 16, "skeleton": SMALL_GCN, "inertial": {"widths": [8, 8], "embedding_dim": 8}},
            "train": {"epochs": 3, "batch_size": 8},
        },
    },
}


def tiny(method, **distill):
    return build_config({**TINY, "method": method, "distill": distill})


@pytest.mark.parametrize("method, terms", [
    ("kd", {"train_ce", "train_kd"}), ("dkd", {"train_dkd"}), ("avg_kd", {"train_avg_kd"}), ("camkd", {"train_camkd"}),
    ("takd", {"train_kd"}), ("dask", {"train_dask_relational", "train_dask_semantic"}),
    ("pskd", {"train_acs_kd", "train_acs_semantic"}),
])
def test_every_method_trains_teachers_then_distils(tmp_path, method, terms):
    out, metrics = run(tiny(method), tmp_path / method, log=lambda *a, **k: None)
    assert set(metrics["teachers"]) == {"skeleton", "fusion"}
    for teacher in metrics["teachers"].values():
        assert 0 <= teacher["test"]["accuracy"] <= 1
    assert metrics["stages"] and metrics["method"] == method
    history = (out / "history.csv").read_text().splitlines()[0].split(",")
    assert terms <= set(history)
    assert (out / "teachers" / "skeleton.pt").is_file() and (out / "teachers" / "fusion.pt").is_file()
    state = torch.load(out / "teachers" / "fusion.pt", weights_only=True)
    assert state["meta"]["streams"] == ["skeleton", "accelerometer"]
    assert "## Teachers" in (out / "report.md").read_text()


def test_progressive_curriculum_and_spelt_out_stages(tmp_path):
    config = tiny("pskd", progressive="B", switch_epoch=2)
    _, metrics = run(config, tmp_path / "b", log=lambda *a, **k: None)
    assert metrics["stages"] == [{"start": 1, "teachers": ["fusion"], "loss": "acs"},
                                 {"start": 2, "teachers": ["skeleton", "fusion"], "loss": "acs"}]
    spelt = tiny("pskd", stages=[{"start": 1, "teachers": ["skeleton"], "loss": "kd"},
                                 {"start": 3, "teachers": ["fusion"], "loss": "acs"}])
    _, metrics = run(spelt, tmp_path / "spelt", log=lambda *a, **k: None)
    assert [s["loss"] for s in metrics["stages"]] == ["kd", "acs"]


def test_teachers_train_after_the_teacher_they_distil_from():
    listed = build_config({**TINY, "teachers": {"fusion": TINY["teachers"]["fusion"],
                                                "skeleton": TINY["teachers"]["skeleton"]}})
    assert list(listed.teachers) == ["fusion", "skeleton"] and listed.teacher_order() == ["skeleton", "fusion"]


def test_ce_ignores_teachers_and_teacher_chain_is_off_without_pl(tmp_path):
    plain = build_config({**TINY, "method": "ce"})  # teachers configured, but ce uses none: none is trained
    _, metrics = run(plain, tmp_path / "ce", log=lambda *a, **k: None)
    assert metrics["teachers"] == {} and metrics["stages"] == []
    from pskd.distill.methods import teacher_chain_used

    assert not teacher_chain_used(tiny("pskd", progressive="none"))
    assert teacher_chain_used(tiny("pskd")) and teacher_chain_used(tiny("kd"))


@pytest.mark.parametrize("tree, message", [
    ({"method": "kd", "teachers": {}}, "needs at least 1 teacher(s); 0 configured"),
    ({"method": "camkd", "teachers": {"skeleton": {}}}, "needs at least 2 teacher(s)"),
    ({"method": "magic"}, "unknown method 'magic'"),
    ({"method": "pskd", "distill": {"add_terms": ["crd"]}}, "distill.add_terms: unknown loss 'crd'"),
    ({"method": "pskd", "distill": {"terms": {"fixmatch": {"treshold": 0.5}}}}, "distill.terms.fixmatch.treshold"),
    ({"method": "pskd", "distill": {"stages": [{"start": 1, "teachers": ["skeleton"], "loss": ["acs", "x"]}]}},
     "distill.stages.0.loss: unknown loss 'x'"),
    ({"method": "pskd", "distill": {"teacher": "depth"}}, "distill.teacher: 'depth'"),
    ({"method": "pskd", "distill": {"stages": [{"start": 2, "teachers": ["skeleton"]}]}}, "must start at epoch 1"),
    ({"method": "kd", "teachers": {"a": {"distill_from": "b"}, "b": {"distill_from": "a"}}}, "makes a cycle"),
    ({"method": "kd", "teachers": {"a": {"distill_from": "z"}}}, "'z' is not one of"),
])
def test_distillation_config_errors(tree, message):
    from pskd.distill.methods import check_method
    from pskd.errors import ConfigError

    with pytest.raises(ConfigError) as caught:  # the tree's own checks, then the method's (before any data is read)
        check_method(build_config({**TINY, **tree}))
    assert message in str(caught.value)


def test_sweep_shares_teachers_and_tabulates_methods_over_seeds(tmp_path, monkeypatch):
    from pskd import sweep as sweep_module

    calls = []
    original = sweep_module.train_teachers

    def counting(session, ready=None):
        calls.append(session.config.seed)
        return original(session, ready)

    monkeypatch.setattr(sweep_module, "train_teachers", counting)
    base = tiny("pskd")
    results = sweep_module.sweep(base, ["ce", "kd", "pskd"], [0, 1], tmp_path / "sweep", log=lambda *a, **k: None)
    assert calls == [0, 1]  # teachers trained once per seed, reused by kd and pskd
    assert set(results["methods"]) == {"ce", "kd", "pskd"}
    for figures in results["methods"].values():
        assert len(figures["accuracy"]["values"]) == 2 and 0 <= figures["accuracy"]["mean"] <= 1
    assert set(results["teachers"]) == {"skeleton", "fusion"}
    table = (tmp_path / "sweep" / "results.md").read_text()
    assert "| kd |" in table and "| skeleton |" in table
    saved = json.loads((tmp_path / "sweep" / "results.json").read_text())
    assert saved["seeds"] == [0, 1]
    # the kd and pskd runs of a seed used the very same teachers
    kd = json.loads((tmp_path / "sweep" / "seed0" / "kd" / "metrics.json").read_text())
    pskd = json.loads((tmp_path / "sweep" / "seed0" / "pskd" / "metrics.json").read_text())
    assert kd["teachers"]["skeleton"]["test"]["accuracy"] == pskd["teachers"]["skeleton"]["test"]["accuracy"]


def test_a_sweep_loads_the_teachers_an_earlier_sweep_trained(tmp_path, monkeypatch):
    from pskd import sweep as sweep_module
    from pskd.training import recipe

    quiet = lambda *a, **k: None  # noqa: E731
    first = sweep_module.sweep(tiny("pskd"), ["kd", "pskd"], [0], tmp_path / "first", log=quiet)
    trained, said = [], []
    original = recipe.train_and_evaluate
    monkeypatch.setattr(recipe, "train_and_evaluate", lambda role, *a, **k: trained.append(role) or original(role, *a, **k))
    # seed 1 was not in the first sweep: its teachers are trained
    again = sweep_module.sweep(tiny("pskd"), ["kd", "pskd"], [0, 1], tmp_path / "again", log=lambda *a, **k: said.append(a[0]),
                               teachers_from=tmp_path / "first")
    gate = "student without teachers (gate)"  # distill.gate: clear trains the plain student beside each one
    assert trained == ["student", gate, "student", gate, "teachers.skeleton", "teachers.fusion", "student", gate,
                       "student", gate]
    assert "sweep: 2 of 4 runs load their teachers from earlier runs" in said
    for method in ("kd", "pskd"):  # the same teachers, so the same students
        assert again["methods"][method]["accuracy"]["values"][0] == first["methods"][method]["accuracy"]["values"][0]
    loaded = json.loads((tmp_path / "again" / "seed0" / "pskd" / "metrics.json").read_text())
    assert loaded["teachers"]["skeleton"]["loaded_from"].startswith(str(tmp_path / "first" / "seed0"))


def test_sweep_ablation_variants_and_errors(tmp_path):
    from pskd.errors import ConfigError
    from pskd.sweep import ablations, sweep

    variants = ablations(tiny("pskd"))
    assert {"pskd without PL", "pskd without ACS", "pskd single teacher", "pskd soft ACS", "pskd schedule B"} <= set(variants)
    with pytest.raises(ConfigError, match="unknown method"):
        sweep(tiny("pskd"), ["ce", "magic"], [0], tmp_path / "x")


def test_sweep_without_the_chain_reuses_the_teachers_that_distil_from_none(tmp_path, monkeypatch):
    from pskd.sweep import sweep
    from pskd.training import recipe

    trained = []
    original = recipe.train_and_evaluate

    def recording(role, *args, **kwargs):
        trained.append(role)
        return original(role, *args, **kwargs)

    monkeypatch.setattr(recipe, "train_and_evaluate", recording)
    base = tiny("pskd")
    results = sweep(base, ["pskd"], [0], tmp_path / "s", ablation=False, log=lambda *a, **k: None)
    gate = "student without teachers (gate)"
    assert trained == ["teachers.skeleton", "teachers.fusion", "student", gate]
    trained.clear()
    variant = build_config({**TINY, "method": "pskd", "distill": {"progressive": "none"}})
    sweep(variant, ["pskd"], [0], tmp_path / "t", log=lambda *a, **k: None)
    assert trained == ["teachers.skeleton", "teachers.fusion", "student", gate]
    # both in one sweep: the skeleton teacher (no distill_from) is trained once, the fusion teacher twice
    trained.clear()
    from pskd import sweep as sweep_module

    monkeypatch.setattr(sweep_module, "ablations", lambda base: {"pskd without PL": {
        "method": "pskd", "distill": {"progressive": "none"}}})
    sweep_module.sweep(base, ["pskd"], [0], tmp_path / "u", ablation=True, log=lambda *a, **k: None)
    assert trained == ["teachers.skeleton", "teachers.fusion", "student", gate, "teachers.fusion", "student", gate]
    assert results["methods"]["pskd"]["accuracy"]["values"]


def test_sweeps_over_disjoint_seeds_merge(tmp_path):
    from pskd.errors import ConfigError
    from pskd.sweep import merge, sweep

    quiet = lambda *a, **k: None  # noqa: E731
    a = sweep(tiny("pskd"), ["ce", "kd"], [0], tmp_path / "a", log=quiet)
    b = sweep(tiny("pskd"), ["ce", "kd"], [1], tmp_path / "b", log=quiet)
    both = sweep(tiny("pskd"), ["ce", "kd"], [0, 1], tmp_path / "both", log=quiet)
    merged = merge([a, b])
    assert merged["seeds"] == [0, 1]
    for name in ("ce", "kd"):
        assert merged["methods"][name]["accuracy"]["values"] == both["methods"][name]["accuracy"]["values"]
        assert merged["methods"][name]["accuracy"]["mean"] == pytest.approx(both["methods"][name]["accuracy"]["mean"])
    assert merged["teachers"]["skeleton"]["accuracy"]["values"] == both["teachers"]["skeleton"]["accuracy"]["values"]
    with pytest.raises(ConfigError, match="share seeds"):
        merge([a, a])


def test_cross_fitted_targets_come_from_teachers_that_did_not_see_the_clip(tmp_path):
    from pskd.training.session import open_session
    from pskd.training.teachers import train_teachers

    quiet = lambda *a, **k: None  # noqa: E731
    plain = train_teachers(open_session(tiny("kd"), quiet))
    crossed = train_teachers(open_session(tiny("kd", cross_fit_folds=2), quiet))
    session = open_session(tiny("kd"), quiet)
    clips = session.training_clips
    test = session.split.test
    a, b = plain["skeleton"].outputs, crossed["skeleton"].outputs
    # the same teacher on the test clips, other (out-of-fold) models on the training clips
    torch.testing.assert_close(a.logits[test], b.logits[test])
    assert not torch.allclose(a.logits[clips], b.logits[clips])
    assert crossed["skeleton"].trained.summary["test"] == plain["skeleton"].trained.summary["test"]
    # the fusion teacher distils from the skeleton teacher's (now out-of-fold) targets, so it differs as a whole
    assert not torch.allclose(plain["fusion"].outputs.logits[clips], crossed["fusion"].outputs.logits[clips])
    with pytest.raises(Exception, match="only 2 training subjects"):
        train_teachers(open_session(tiny("kd", cross_fit_folds=3), quiet))


def test_sweep_command_writes_the_results_table(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "method": "pskd"}))  # sorted keys: fusion is listed first
    code, out, err = run_cli(["sweep", str(config), "--methods", "ce,avg_kd", "--seeds", "1",
                              "--out", str(tmp_path / "s"), "--quiet"], capsys)
    assert code == 0, err
    assert "| avg_kd |" in out and (tmp_path / "s" / "results.md").is_file()
    code, _, err = run_cli(["sweep", str(config), "--methods", "ce,nonsense", "--out", str(tmp_path / "t")], capsys)
    assert code == 2 and "unknown method" in err


def test_seeds_option_takes_a_count_or_a_list():
    from pskd.cli import parse_seeds
    from pskd.errors import UserError

    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("3,4") == [3, 4] and parse_seeds("7,") == [7]
    for bad in ("0", "x", "1,1", ""):
        with pytest.raises(UserError, match="--seeds"):
            parse_seeds(bad)
