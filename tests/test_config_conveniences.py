"""Config conveniences: `_base_` inheritance (and its bounds), 'did you mean', torch optimizers and schedulers by
name, `*` in override keys, grid values that are lists, and `pskd config show`."""

from __future__ import annotations

import math
import os

import pytest
import torch
import yaml
from conftest import REPO, run_cli

from pskd import limits
from pskd.config import RunConfig, build_config, dump_config, load_config
from pskd.errors import ConfigError
from pskd.optim import EpochSchedule
from pskd.sweep import parse_grid, plan
from pskd.training.state import lr_factor, make_optimizer

SHIPPED = sorted(p for p in (REPO / "configs").rglob("*.yaml") if not p.name.startswith("_"))


def write(folder, name, text):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def refused(path, overrides=(), match=""):
    with pytest.raises(ConfigError) as caught:
        load_config(path, list(overrides))
    message = str(caught.value)
    assert "\n" not in message
    assert match in message, message
    return message


# ---- _base_ ------------------------------------------------------------------------------------------------------

def test_every_shipped_config_loads():
    assert len(SHIPPED) >= 9
    for path in SHIPPED:
        config = load_config(path)
        assert isinstance(config, RunConfig)
        assert "_base_" not in dump_config(config)


def test_shipped_configs_share_what_they_inherit():
    ce, pskd = load_config(REPO / "configs/utd_mhad/student_ce.yaml"), load_config(REPO / "configs/utd_mhad/pskd.yaml")
    for section in ("data", "augment", "student", "train", "seed"):
        assert getattr(ce, section) == getattr(pskd, section), section
    assert (pskd.method, pskd.preprocess.skeleton_length, list(pskd.teachers)) == ("pskd", 32, ["skeleton", "fusion"])
    scarce = load_config(REPO / "configs/utd_mhad/label_scarce.yaml")
    archive = load_config(REPO / "configs/utd_mhad/skeleton_archive.yaml")
    assert scarce.teachers == pskd.teachers and archive.teachers == pskd.teachers
    assert (scarce.train.epochs, scarce.train.select, scarce.train.lr) == (240, "last", 0.003)
    assert (archive.data.labels.fraction, archive.data.labels.teachers) == (0.25, "all")
    assert archive.distill.add_terms == ["contrastive"] and scarce.distill.add_terms == []


def test_a_base_is_merged_under_the_file(tmp_path):
    write(tmp_path, "common/a.yaml", "train: {epochs: 7, lr: 0.01}\nstudent: {streams: [accelerometer, gyroscope]}\n"
                                     "teachers: {t: {streams: [skeleton], train: {epochs: 5}}}\n")
    write(tmp_path, "common/b.yaml", "_base_: a.yaml\ntrain: {lr: 0.02}\nseed: 3\n")
    write(tmp_path, "other.yaml", "seed: 4\nname: other\n")
    top = write(tmp_path, "top.yaml", "_base_: [common/b.yaml, other.yaml]\nstudent: {streams: [accelerometer]}\n"
                                      "teachers: {t: {train: {lr: 0.5}}}\n")
    config = load_config(top, ["teachers.t.train.epochs=9"])
    assert (config.train.epochs, config.train.lr) == (7, 0.02)  # mappings merge key by key, nearest file wins
    assert config.student.streams == ["accelerometer"]  # a list is replaced, not merged
    assert (config.seed, config.name) == (4, "other")  # bases in order: a later one over an earlier one
    assert (config.teachers["t"].train.epochs, config.teachers["t"].train.lr) == (9, 0.5)
    assert config.teachers["t"].streams == ["skeleton"]


def test_a_base_below_may_name_a_file_back_up_in_the_config_folder(tmp_path):
    write(tmp_path, "shared.yaml", "seed: 11\n")
    write(tmp_path, "sub/mid.yaml", "_base_: ../shared.yaml\ntrain: {epochs: 2}\n")
    config = load_config(write(tmp_path, "top.yaml", "_base_: sub/mid.yaml\n"))
    assert (config.seed, config.train.epochs) == (11, 2)


def test_a_cycle_of_bases_is_refused(tmp_path):
    write(tmp_path, "a.yaml", "_base_: b.yaml\n")
    write(tmp_path, "b.yaml", "_base_: a.yaml\n")
    message = refused(tmp_path / "a.yaml", match="a cycle")
    assert "a.yaml -> " in message and "b.yaml -> " in message
    refused(write(tmp_path, "self.yaml", "_base_: self.yaml\n"), match="a cycle")


def test_a_chain_deeper_than_the_limit_is_refused(tmp_path):
    depth = limits.CONFIG_BASE_DEPTH
    for level in range(depth + 2):
        write(tmp_path, f"c{level}.yaml", f"_base_: c{level + 1}.yaml\n" if level <= depth else "seed: 1\n")
    refused(tmp_path / "c0.yaml", match=f"more than {depth} levels of bases")
    assert load_config(tmp_path / "c1.yaml").seed == 1  # exactly the limit is allowed


def test_a_base_tree_of_too_many_files_is_refused(tmp_path):
    for level in range(6):  # every file names the next one twice: 2**6 reads
        write(tmp_path, f"f{level}.yaml", f"_base_: [f{level + 1}.yaml, f{level + 1}.yaml]\n")
    write(tmp_path, "f6.yaml", "seed: 1\n")
    refused(tmp_path / "f0.yaml", match=f"more than {limits.CONFIG_BASE_FILES} files through _base_")


@pytest.mark.parametrize("base, match", [
    ("absent.yaml", "base file not found"),
    ("../outside.yaml", "leads outside"),
    ("/etc/hostname", "expected a path relative to"),
    ("~/x.yaml", "expected a path relative to"),
    ("sub", "base file not found"),
    ("[]", "expected a file name or a list of file names"),
    ("{a: 1}", "expected a file name or a list of file names"),
    ("[ok.yaml, 3]", "expected a file name or a list of file names"),
    ("list.yaml", "the top level must be a mapping"),
    ("broken.yaml", "not valid YAML"),
    ("big.yaml", "allowed"),
    ('"a\\0b"', "cannot be read"),
    ("x" * 5000, "cannot be read"),
])
def test_a_bad_base_is_one_line_naming_the_file(tmp_path, base, match):
    folder = tmp_path / "configs"
    write(tmp_path, "outside.yaml", "seed: 1\n")
    write(folder, "ok.yaml", "seed: 1\n")
    write(folder, "list.yaml", "- a\n")
    write(folder, "broken.yaml", "train: [\n")
    write(folder, "big.yaml", "# " + "x" * limits.CONFIG_BYTES + "\n")
    (folder / "sub").mkdir()
    message = refused(write(folder, "top.yaml", f"_base_: {base}\n"), match=match)
    assert str(folder) in message


def test_a_base_that_is_a_link_out_of_the_folder_is_refused(tmp_path):
    secret = write(tmp_path, "elsewhere/secret.yaml", "seed: 5\n")
    folder = tmp_path / "configs"
    folder.mkdir()
    os.symlink(secret, folder / "link.yaml")
    os.symlink(tmp_path / "elsewhere", folder / "dir")
    refused(write(folder, "top.yaml", "_base_: link.yaml\n"), match="leads outside")
    refused(write(folder, "top2.yaml", "_base_: dir/secret.yaml\n"), match="leads outside")
    os.symlink(folder / "loop1", folder / "loop2")
    os.symlink(folder / "loop2", folder / "loop1")
    refused(write(folder, "top4.yaml", "_base_: loop1\n"), match="cannot be read")
    os.symlink(write(folder, "sub/ok.yaml", "seed: 2\n"), folder / "inside.yaml")  # a link kept in the folder: fine
    assert load_config(write(folder, "top3.yaml", "_base_: inside.yaml\n")).seed == 2


# ---- did you mean ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, overrides, match", [
    ("train: {epoch: 3}\n", [], "train.epoch: unknown key (did you mean 'epochs'?)"),
    ("", ["trian.epochs=3"], "trian: unknown key (did you mean 'train'?)"),
    ("", ["train.select=lst"], "(got 'lst') (did you mean 'last'?)"),
    ("", ["distill.progressive=a"], "(did you mean 'A'?)"),
    ("", ["data.labels.teacher=all"], "data.labels.teacher: unknown key (did you mean 'teachers'?)"),
    ("teachers: {s: {train: {selct: last}}}\n", [], "teachers.s.train.selct: unknown key (did you mean 'select'?)"),
    ("", ["device=zzz"], "device: Input should be 'auto', 'cpu' or 'cuda' (got 'zzz')"),
])
def test_did_you_mean_on_keys_and_closed_choices(tmp_path, text, overrides, match):
    message = refused(write(tmp_path, "c.yaml", text), overrides, match)
    assert message.startswith(str(tmp_path / "c.yaml"))
    if "zzz" in match:
        assert "did you mean" not in message  # nothing close: no guess


def test_did_you_mean_on_registered_names(tmp_path, capsys):
    config = write(tmp_path, "c.yaml", "method: psdk\n")
    code, _, err = run_cli(["config", "show", str(config)], capsys)
    assert code == 2 and "unknown method 'psdk' (did you mean 'pskd'?)" in err and err.count("\n") == 1
    for override, match in [("student.name=compact_cn", "(did you mean 'compact_cnn'?)"),
                            ("data.protocol=cross_subjet", "(did you mean 'cross_subject'?)"),
                            ("data.dataset=synthetc", "(did you mean 'synthetic'?)"),
                            ("distill.add_terms=[contrastve]", "(did you mean 'contrastive'?)"),
                            ("distill.terms.fixmatch.treshold=0.5", "(did you mean 'threshold'?)")]:
        code, _, err = run_cli(["config", "show", str(REPO / "configs/utd_mhad/pskd.yaml"), "--set", override], capsys)
        assert code == 2 and match in err and err.count("\n") == 1, (override, err)


# ---- optimizers and schedules ------------------------------------------------------------------------------------

def params():
    return [torch.nn.Parameter(torch.ones(3, 3))]


def test_the_built_in_names_build_what_they_did():
    for name, cls, extra in [("adamw", torch.optim.AdamW, {}), ("adam", torch.optim.Adam, {}),
                             ("sgd", torch.optim.SGD, {"momentum": 0.9, "nesterov": True})]:
        config = build_config({"train": {"optimizer": name, "lr": 0.01, "weight_decay": 0.001}}).train
        optimizer = make_optimizer(params(), config)
        assert type(optimizer) is cls and config.optimizer == name
        group = optimizer.param_groups[0]
        assert (group["lr"], group["weight_decay"]) == (0.01, 0.001)
        assert all(group[key] == value for key, value in extra.items())
    assert build_config({"train": {"schedule": {"name": "cosine"}}}).train.schedule == "cosine"


def test_any_torch_optimizer_by_name_with_options():
    tree = {"train": {"optimizer": {"name": "RAdam", "options": {"betas": [0.8, 0.99], "eps": 1e-6}}, "lr": 0.02}}
    config = build_config(tree)
    assert yaml.safe_load(dump_config(config))["train"]["optimizer"] == tree["train"]["optimizer"]
    optimizer = make_optimizer(params(), config.train)
    group = optimizer.param_groups[0]
    assert type(optimizer) is torch.optim.RAdam
    assert (group["betas"], group["eps"], group["lr"], group["weight_decay"]) == ((0.8, 0.99), 1e-6, 0.02, 0.01)
    assert type(make_optimizer(params(), build_config({}, ["train.optimizer=NAdam"]).train)) is torch.optim.NAdam


@pytest.mark.parametrize("value, match", [
    ("RAdm", "train.optimizer: unknown optimizer 'RAdm' (did you mean 'RAdam'?)"),
    ("{name: RAdam, options: {beta: [0.9, 0.9]}}", "options.beta: not an option of RAdam (did you mean 'betas'?)"),
    ("{name: RAdam, options: {betas: [0.9, 2.0]}}", "RAdam: Invalid beta parameter"),
    ("{name: RAdam, options: {eps: .inf}}", "not a finite number"),
    ("{name: SGD, options: {lr: 0.1}}", "options.lr: set by train.lr"),
    ("{name: SGD, options: {weight_decay: 0.1}}", "set by train.weight_decay"),
    ("{nme: SGD}", "nme: unknown key (did you mean 'name'?)"),
    ("{options: {}}", "needs the optimizer's name"),
    ("{name: sgd, options: {momentum: 0.5}}", "sgd takes no options"),
    ("LBFGS", "LBFGS cannot be used (its step needs a closure)"),
    ("{name: Rprop}", "optimizer Rprop takes no weight decay; set weight_decay: 0"),
    ("[1, 2]", "expected a name, or {name: ..., options: ...}"),
])
def test_a_bad_optimizer_is_refused_at_config_time(value, match):
    with pytest.raises(ConfigError) as caught:
        build_config({}, [f"train.optimizer={value}"])
    assert match in str(caught.value) and "\n" not in str(caught.value)
    assert build_config({}, ["train.optimizer={name: Rprop}", "train.weight_decay=0"]).train.optimizer.name == "Rprop"


@pytest.mark.parametrize("value, match", [
    ("StepLRR", "unknown schedule 'StepLRR' (did you mean 'StepLR'?)"),
    ("StepLR", "StepLR needs options.step_size"),
    ("{name: StepLR, options: {step_size: 2, gama: 0.5}}", "(did you mean 'gamma'?)"),
    ("{name: StepLR, options: {step_size: 2, last_epoch: 4}}", "options.last_epoch: set by pskd"),
    ("ReduceLROnPlateau", "it steps on a metric"),
    ("LambdaLR", "it takes a function"),
    ("{name: ExponentialLR, options: {gamma: .nan}}", "not a finite number"),
])
def test_a_bad_schedule_is_refused_at_config_time(value, match):
    with pytest.raises(ConfigError) as caught:
        build_config({}, [f"train.schedule={value}"])
    assert "train.schedule: " in str(caught.value) and match in str(caught.value)


def test_a_torch_scheduler_steps_by_epoch_after_the_warm_up_and_resumes():
    config = build_config({"train": {"lr": 1.0, "schedule": {"name": "StepLR", "options": {"step_size": 1,
                                                                                          "gamma": 0.5}}}}).train
    optimizer = make_optimizer(params(), config)
    schedule = EpochSchedule(optimizer, config, steps_per_epoch=2, warmup_steps=3)
    rates = [optimizer.param_groups[0]["lr"]]
    for _ in range(6):
        optimizer.step()
        schedule.step()
        rates.append(optimizer.param_groups[0]["lr"])
    # epoch 1: 1/3, 2/3 (warm-up); epoch 2: halved, the warm-up's last step 3/3; then halved each epoch
    assert rates == pytest.approx([1 / 3, 2 / 3, 0.5, 0.5, 0.25, 0.25, 0.125])
    saved = torch.load(_saved(schedule.state_dict()), weights_only=True)
    again = make_optimizer(params(), config)
    resumed = EpochSchedule(again, config, steps_per_epoch=2, warmup_steps=3)
    resumed.load_state_dict(saved)
    again.step()
    resumed.step()
    schedule.step()
    assert again.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"] == pytest.approx(0.125)


def _saved(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("name, options", [("CosineAnnealingLR", {"T_max": 4}), ("OneCycleLR", {
    "max_lr": 0.1, "total_steps": 8}), ("CyclicLR", {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 2}),
    ("PolynomialLR", {"total_iters": 4}), ("LinearLR", {})])
def test_torch_schedulers_save_and_restore_within_weights_only(name, options):
    # epochs 7: a schedule is stepped at the end of every epoch, after the step its constructor takes (OneCycleLR
    # with total_steps 8 takes 7 epochs; more is refused when the config is read)
    config = build_config({"train": {"optimizer": "sgd", "epochs": 7,
                                     "schedule": {"name": name, "options": options}}}).train
    schedule = EpochSchedule(make_optimizer(params(), config), config, steps_per_epoch=1, warmup_steps=0)
    schedule.optimizer.step()
    schedule.step()
    state = torch.load(_saved(schedule.state_dict()), weights_only=True)
    EpochSchedule(make_optimizer(params(), config), config, 1, 0).load_state_dict(state)
    assert math.isfinite(schedule.optimizer.param_groups[0]["lr"])


def test_the_built_in_schedules_keep_their_warm_up():
    assert [lr_factor(s, 10, 2, "constant") for s in range(4)] == [0.5, 1.0, 1.0, 1.0]
    assert lr_factor(2, 10, 2, "cosine") == 1.0 and lr_factor(10, 10, 2, "cosine") == pytest.approx(0.0)


# ---- '*' in override keys, grid values -----------------------------------------------------------------------------

def test_a_star_sets_every_existing_key_at_its_level(tmp_path):
    path = REPO / "configs/utd_mhad/pskd.yaml"
    config = load_config(path, ["teachers.*.train.epochs=20", "teachers.*.options.embedding_dim=64"])
    assert [t.train.epochs for t in config.teachers.values()] == [20, 20]
    assert [t.options["embedding_dim"] for t in config.teachers.values()] == [64, 64]
    assert config.train.epochs == 120  # the student's own section is untouched
    augment = load_config(path, ["augment.*=0"]).augment  # the keys the file (with its bases) gives
    assert (augment.scale, augment.jitter, augment.rotation_deg, augment.time_crop, augment.enabled) == (0, 0, 0, 0, True)
    refused(path, ["teachers.*.trian.epochs=2"], "teachers.skeleton.trian: unknown key (did you mean 'train'?)")
    refused(REPO / "configs/utd_mhad/student_ce.yaml", ["teachers.*.train.epochs=2"],
            "--set teachers.*.train.epochs: '*' matches no key of teachers")
    refused(path, ["seed.*=2"], "'seed' is a value, not a section")
    many = {"teachers": {f"t{i}": {} for i in range(200)}}
    with pytest.raises(ConfigError, match=r"sets 200 keys, more than 20000 values in all"):
        build_config(many, [f"teachers.*.options.x=[{','.join(['1'] * 200)}]"])


def test_grid_values_split_at_top_level_commas_only():
    assert parse_grid(["preprocess.channels.accelerometer=[0,1],[0,1,2]", "a.b={x: 1, y: [2, 3]},{x: 4}",
                       "name='a,b',c,don't", "train.lr=1e-3, 2e-3"]) == {
        "preprocess.channels.accelerometer": [[0, 1], [0, 1, 2]], "a.b": [{"x": 1, "y": [2, 3]}, {"x": 4}],
        "name": ["a,b", "c", "don't"], "train.lr": [0.001, 0.002]}
    for item, match in [("a=[0,1", "a bracket is left open"), ("a=0],1", "']' closes nothing"),
                        ("a='x,y", "a quote is left open"), ("a=", "expected key=value1,value2")]:
        with pytest.raises(ConfigError, match=match):
            parse_grid([item])


def test_a_grid_of_lists_and_starred_keys_plans_its_runs(tmp_path):
    base = load_config(REPO / "configs/utd_mhad/pskd.yaml")
    grid = parse_grid(["preprocess.channels.accelerometer=[0],[0,1,2]", "teachers.*.train.epochs=5,6"])
    runs = plan(base, {"pskd": {"method": "pskd"}}, [0], grid, tmp_path)
    assert len(runs) == 4
    assert {tuple(r["config"].preprocess.channels["accelerometer"]) for r in runs} == {(0,), (0, 1, 2)}
    assert {tuple(t.train.epochs for t in r["config"].teachers.values()) for r in runs} == {(5, 5), (6, 6)}
    with pytest.raises(ConfigError, match=r"--grid teachers\.\*\.train\.epochs: '\*' matches no key"):
        plan(load_config(REPO / "configs/utd_mhad/student_ce.yaml"), {"ce": {}}, [0],
             parse_grid(["teachers.*.train.epochs=5"]), tmp_path)


# ---- pskd config show --------------------------------------------------------------------------------------------

def test_config_show_prints_the_resolved_config(tmp_path, capsys):
    path = REPO / "configs/utd_mhad/skeleton_archive.yaml"
    code, out, err = run_cli(["config", "show", str(path), "--set", "teachers.*.train.epochs=3",
                              "--data-dir", str(tmp_path)], capsys)
    assert code == 0, err
    shown = yaml.safe_load(out)
    expected = load_config(path, ["teachers.*.train.epochs=3", f"data.data_dir={tmp_path}"])
    assert build_config(shown) == expected
    assert shown["data"]["utd_mhad"] == {} and shown["train"]["optimizer"] == "adamw"  # every section, filled
    assert "_base_" not in out
    code, _, err = run_cli(["config", "show", str(tmp_path / "absent.yaml")], capsys)
    assert code == 2 and err.count("\n") == 1 and "config file not found" in err


def test_config_show_loads_the_plugins_the_config_names(tmp_path, capsys):
    plugin = write(tmp_path, "net.py", "import torch\nimport pskd\n\n\n@pskd.register_model('conveniences_net')\n"
                                       "class Net(torch.nn.Module):\n    pass\n")
    config = write(tmp_path, "c.yaml", f"plugins: [{plugin}]\nstudent: {{name: conveniences_net}}\n")
    code, out, err = run_cli(["config", "show", str(config)], capsys)
    assert code == 0, err
    assert yaml.safe_load(out)["student"]["name"] == "conveniences_net"


def test_a_tiny_run_trains_with_a_torch_optimizer_and_scheduler(tmp_path, capsys):
    from test_cli import TINY

    out = tmp_path / "run"
    code, _, err = run_cli(["train", str(REPO / "configs/utd_mhad/student_ce.yaml"), *TINY, "--out", str(out),
                            "--quiet", "--set", "train.optimizer={name: RAdam, options: {betas: [0.9, 0.99]}}",
                            "--set", "train.schedule={name: StepLR, options: {step_size: 1, gamma: 0.5}}",
                            "--set", "train.warmup_epochs=0", "--set", "train.refit=false"], capsys)
    assert code == 0, err
    rows = (out / "history" / "student.csv").read_text().splitlines()
    rates = [float(row.split(",")[1]) for row in rows[1:]]
    assert rates == pytest.approx([0.003 * 0.5 ** epoch for epoch in (1, 2, 3)])  # halved at each epoch's end
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["optimizer"]["name"] == "RAdam"
