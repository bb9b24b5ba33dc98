"""Hostile input corpus: malformed data, configs and command lines through the `pskd` command itself.

Every case must end with one line on stderr naming the problem, exit code 2, no traceback, and no run directory
(finished or half-written) left behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from conftest import REPO, run_cli
from test_utd_mhad import clone, make_copy

CE = str(REPO / "configs/utd_mhad/student_ce.yaml")
NO_CACHE = ["--set", "data.cache=false", "--set", "train.epochs=1", "--quiet"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return make_copy(tmp_path_factory.mktemp("hostile") / "utd_mhad")


def savemat(path: Path, **variables) -> None:
    scipy.io.savemat(path, variables)


# Each case: (prepare(root, tmp_path) -> command line, text the error must contain). `root` is a fresh copy of a
# complete made-up UTD-MHAD folder; a case breaks it, or breaks something else.
def _truncated(root, tmp):
    path = root / "Inertial" / "a3_s2_t1_inertial.mat"
    path.write_bytes(path.read_bytes()[:60])
    return ["train", CE, "--data-dir", str(root), "--out", str(tmp / "run"), *NO_CACHE]


def _text_as_mat(root, tmp):
    (root / "Skeleton" / "a5_s5_t2_skeleton.mat").write_text("this is not a MAT file\n")
    return ["data", "check", "utd_mhad", "--data-dir", str(root)]


def _wrong_variable(root, tmp):
    savemat(root / "Inertial" / "a2_s1_t1_inertial.mat", acc=np.zeros((9, 6)))
    return ["data", "check", "utd_mhad", "--data-dir", str(root)]


def _nan(root, tmp):
    values = np.zeros((9, 6))
    values[4, 2] = np.nan
    savemat(root / "Inertial" / "a9_s3_t3_inertial.mat", d_iner=values)
    return ["train", CE, "--data-dir", str(root), "--out", str(tmp / "run"), *NO_CACHE]


def _infinite(root, tmp):
    values = np.zeros((20, 3, 5))
    values[0, 0, 0] = np.inf
    savemat(root / "Skeleton" / "a9_s3_t3_skeleton.mat", d_skel=values)
    return ["data", "check", "utd_mhad", "--data-dir", str(root)]


def _wrong_shape(root, tmp):
    savemat(root / "Skeleton" / "a1_s1_t1_skeleton.mat", d_skel=np.zeros((20, 2, 5)))
    return ["data", "check", "utd_mhad", "--data-dir", str(root)]


def _zero_length(root, tmp):
    savemat(root / "Inertial" / "a1_s2_t1_inertial.mat", d_iner=np.zeros((0, 6)))
    return ["data", "check", "utd_mhad", "--data-dir", str(root)]


def _mismatched_pair(root, tmp):
    # 10 s of skeleton for an inertial recording of 0.18 s: not one recording
    savemat(root / "Skeleton" / "a4_s4_t4_skeleton.mat", d_skel=np.zeros((20, 3, 300)))
    return ["data", "check", "utd_mhad", "--data-dir", str(root)]


def _duplicate(root, tmp):
    shutil.copy(root / "Inertial" / "a7_s1_t1_inertial.mat", root / "Inertial" / "a07_s1_t1_inertial.mat")
    return ["data", "check", "utd_mhad", "--data-dir", str(root)]


def _missing_file(root, tmp):
    (root / "Inertial" / "a6_s6_t2_inertial.mat").unlink()
    return ["train", CE, "--data-dir", str(root), "--out", str(tmp / "run"), *NO_CACHE]


def _data_dir_is_a_file(root, tmp):
    (tmp / "file").write_text("x")
    return ["data", "check", "utd_mhad", "--data-dir", str(tmp / "file")]


def _data_dir_absent(root, tmp):
    return ["train", CE, "--data-dir", str(tmp / "nowhere"), "--out", str(tmp / "run"), *NO_CACHE]


def _config(text: str, *extra):
    def prepare(root, tmp):
        (tmp / "c.yaml").write_text(text)
        return ["train", str(tmp / "c.yaml"), "--data-dir", str(root), "--out", str(tmp / "run"), *extra]

    return prepare


def _set(*overrides):
    def prepare(root, tmp):
        return ["train", CE, "--data-dir", str(root), "--out", str(tmp / "run"),
                *[x for o in overrides for x in ("--set", o)]]

    return prepare


def _out_under_a_file(root, tmp):
    (tmp / "taken").write_text("x")
    return ["train", CE, "--data-dir", str(root), "--out", str(tmp / "taken" / "run"), *NO_CACHE]


def _out_not_empty(root, tmp):
    (tmp / "run").mkdir()
    (tmp / "run" / "keep.txt").write_text("mine")
    return ["train", CE, "--data-dir", str(root), "--out", str(tmp / "run"), *NO_CACHE]


def _export_not_a_run(root, tmp):
    (tmp / "run").mkdir()
    return ["export", str(tmp / "run")]


def _predict_foreign_checkpoint(root, tmp):
    torch.save({"weights": torch.zeros(2)}, tmp / "model.pt")  # a valid torch file, but not a pskd checkpoint
    (tmp / "rec.csv").write_text("0,0,1\n" * 400)
    return ["predict", str(tmp / "model.pt"), "--input", str(tmp / "rec.csv")]


def _predict_output_over_its_input(root, tmp):
    torch.save({"weights": torch.zeros(2)}, tmp / "model.pt")
    (tmp / "rec.csv").write_text("0,0,1\n" * 400)
    return ["predict", str(tmp / "model.pt"), "--input", str(tmp / "rec.csv"), "--out", str(tmp / "rec.csv")]


def _npy_folder(tmp, header_shape: tuple, body: bytes) -> list[str]:
    """A folder dataset whose one .npy file has a header that says `header_shape` and a body of `body`."""
    folder = tmp / "own"
    (folder / "acc").mkdir(parents=True)
    with open(folder / "acc" / "a.npy", "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": header_shape})
        handle.write(body)
    np.save(folder / "acc" / "b.npy", np.zeros((50, 3), dtype=np.float32))
    (folder / "manifest.csv").write_text("clip_id,label,subject,accelerometer,accelerometer_rate\n"
                                         "a,walk,1,acc/a.npy,50\nb,sit,2,acc/b.npy,50\n")
    return ["data", "check", "folder", "--data-dir", str(folder)]


def _npy_header_larger_than_the_file(root, tmp):
    return _npy_folder(tmp, (10**6, 3), np.zeros((50, 3), dtype=np.float32).tobytes())


def _npy_header_asking_for_terabytes(root, tmp):
    return _npy_folder(tmp, (10**12, 3), b"")


def _command(*args):
    def prepare(root, tmp):
        return [a.replace("{root}", str(root)).replace("{tmp}", str(tmp)) for a in args]

    return prepare


def _manifest(text: str, with_file: bool = True):
    """A folder dataset of one manifest (and one 40-sample accelerometer file), checked by `pskd data check`."""
    def prepare(root, tmp):
        folder = tmp / "own"
        (folder / "acc").mkdir(parents=True)
        if with_file:
            np.savetxt(folder / "acc" / "x.csv", np.zeros((40, 3)), delimiter=",")
        (folder / "manifest.csv").write_text(text)
        return ["data", "check", "folder", "--data-dir", str(folder)]

    return prepare


def _failing_plugin(root, tmp):
    (tmp / "plugin.py").write_text("import this_module_does_not_exist\n")
    return ["train", CE, "--data-dir", str(root), "--out", str(tmp / "run"), "--set", f"plugins=[{tmp / 'plugin.py'}]"]


def _a_file_as_data_root(root, tmp):
    (tmp / "notes.txt").write_text("not a folder")
    return ["data", "check", "folder", "--data-dir", str(tmp / "notes.txt")]


HEADER = "clip_id,label,subject,accelerometer,accelerometer_rate\n"

CASES = {
    "truncated MAT file": (_truncated, "not a readable MAT file"),
    "text file named .mat": (_text_as_mat, "not a readable MAT file"),
    "wrong variable name": (_wrong_variable, "no variable 'd_iner'"),
    "NaN in the accelerometer": (_nan, "NaN or infinite"),
    "infinite skeleton value": (_infinite, "NaN or infinite"),
    "wrong skeleton shape": (_wrong_shape, "expected (20, 3, T)"),
    "zero-length clip": (_zero_length, "expected at least 2"),
    "mismatched skeleton/inertial pair": (_mismatched_pair, "not the same recording"),
    "duplicate clip": (_duplicate, "the same clip as"),
    "missing file": (_missing_file, "incomplete UTD-MHAD copy"),
    "data dir is a file": (_data_dir_is_a_file, "not a folder"),
    "data dir absent": (_data_dir_absent, "UTD-MHAD folder not found"),
    "unknown dataset": (_set("data.dataset=kinetics"), "unknown dataset 'kinetics'"),
    "unknown method": (_set("method=magic"), "method"),
    "unknown model": (_set("student.name=transformer9000"), "transformer9000"),
    "unknown protocol": (_set("protocol=leave_one_out", "data.protocol=leave_one_out"), "protocol"),
    "wrong type in the config": (_config("train: {epochs: many}\n"), "train.epochs"),
    "negative learning rate": (_set("train.lr=-0.1"), "train.lr"),
    "unknown config key": (_config("trian: {epochs: 5}\n"), "trian: unknown key"),
    "config is not YAML": (_config("train: [\n"), "not valid YAML"),
    "config is a list": (_config("- a\n- b\n"), "top level must be a mapping"),
    "override without =": (_set("train.epochs"), "expected key=value"),
    "validation subject not a training subject": (_set("data.val_subjects=[2]"), "val"),
    "output inside a regular file": (_out_under_a_file, "taken"),
    "output folder not empty": (_out_not_empty, "already exists and is not empty"),
    "export of a folder that is no run": (_export_not_a_run, "no such checkpoint"),
    "foreign checkpoint": (_predict_foreign_checkpoint, "not a pskd checkpoint"),
    "run name that climbs out of runs/": (_set("name=../../outside"), "name: String should match pattern"),
    "negative seed": (_set("seed=-3"), "seed: Input should be greater than or equal to 0"),
    "seed beyond the generators": (_set("seed=18446744073709551616"), "seed: Input should be less than"),
    "label fraction of zero": (_set("data.labels.fraction=0"), "data.labels.fraction"),
    "unknown label regime": (_set("data.labels.teachers=some"), "data.labels.teachers"),
    "unknown student preset": (_set("student.options.preset=huge"), "preset 'huge' is not one of"),
    "unknown term in add_terms": (_set("distill.add_terms=[crd]"), "unknown loss 'crd'"),
    "misspelt term option": (_set("method=self_train", "distill.terms.fixmatch.treshold=0.5"),
                             "distill.terms.fixmatch.treshold: unknown key"),
    "labelled share of one": (_set("train.labelled_share=1.0"), "train.labelled_share"),
    "plugin that is not a file": (_set("plugins=[nowhere.py]"), "plugins: nowhere.py: not a Python file"),
    "predict output over its own input": (_predict_output_over_its_input, "--out"),
    ".npy header larger than its file": (_npy_header_larger_than_the_file, "its header says shape (1000000, 3)"),
    ".npy header asking for terabytes": (_npy_header_asking_for_terabytes, "needs 12000.0 GB"),
    "labels kept only for a stranger": (_set("data.labels.subjects=[99]"), "no labelled training clip is left"),
    "empty validation list": (_set("data.val_subjects=[]"), "data.val_subjects must name at least one subject"),
    "patience with a fixed schedule": (_set("train.select=last", "train.patience=5"), "patience stops early"),
    "zero-width student": (_set("student.options.widths=[0]"), "must be at least 1"),
    "teacher checkpoint that is not there": (_set("method=kd", "teachers.skeleton.name=skeleton_gcn",
                                                  "teachers.skeleton.checkpoint=/nowhere/run"),
                                             "no such teacher checkpoint"),
    "student init_from that is not there": (_set("student.init_from=/nowhere/at/all"), "student.init_from"),
    "too many blind classes": (_set("data.synthetic.blind=9"), "data.synthetic.blind"),
    "zero threads": (_set("threads=0"), "threads"),
    "batch of zero clips": (_set("train.batch_size=0"), "train.batch_size"),
    "label seed beyond its generator": (_set("data.labels.seed=4294967296"), "data.labels.seed"),
    "stage naming an unknown teacher": (_set("method=pskd", "teachers.skeleton.name=skeleton_gcn",
                                             "distill.stages=[{start: 1, teachers: [depth]}]"),
                                        "distill.stages.0.teachers"),
    "resume of nothing": (_command("train", "--resume", "{tmp}/never-ran"), "no interrupted run here"),
    "resume with --out": (_command("train", "--resume", "{tmp}/a", "--out", "{tmp}/b"), "leave out --out"),
    "evaluate a folder that is no run": (_command("evaluate", "{root}", "--out", "{tmp}/e"), "no such checkpoint"),
    "predict with a model that is not there": (_command("predict", "{tmp}/missing.onnx", "--input", "{tmp}/x.csv"),
                                               "no such model file"),
    "data check of the generated dataset": (_command("data", "check", "synthetic"), "generated by pskd"),
    "sweep with a grid without values": (_command("sweep", CE, "--grid", "train.lr", "--out", "{tmp}/s"),
                                         "expected key=value1,value2"),
    "sweep with a repeated seed": (_command("sweep", CE, "--seeds", "1,1", "--out", "{tmp}/s"), "a seed is repeated"),
    "sweep with an unknown method": (_command("sweep", CE, "--methods", "ce,magic", "--out", "{tmp}/s"),
                                     "unknown method(s) ['magic']"),
    "sweep with seeds that are not numbers": (_command("sweep", CE, "--seeds", "a,b", "--out", "{tmp}/s"), "--seeds"),
    "config override of a value as a section": (_set("seed.value=3"), "'seed' is a value, not a section"),
    "label fraction above one": (_set("data.labels.fraction=1.5"), "data.labels.fraction"),
    "labelled share of zero": (_set("train.labelled_share=0"), "train.labelled_share"),
    "term option out of range": (_set("distill.terms.contrastive.dim=0"), "distill.terms.contrastive.dim"),
    "options for a term that does not exist": (_set("distill.terms.nonexistent={a: 1}"), "unknown loss 'nonexistent'"),
    "gate that is not a yes or no": (_set("distill.gate=maybe"), "distill.gate"),
    "empty run name": (_set("name="), "name: String should match pattern"),
    "hidden run name": (_set("name=.secret"), "name: String should match pattern"),
    "kernel of zero": (_set("student.options.kernel=0"), "must be at least 1"),
    "no widths at all": (_set("student.options.widths=[]"), "must be at least 1"),
    "plugin whose import fails": (_failing_plugin, "ModuleNotFoundError"),
    "folder data root that is absent": (_command("data", "check", "folder", "--data-dir", "{tmp}/absent"),
                                        "folder not found"),
    "folder data root that is a file": (_a_file_as_data_root, "not a folder"),
    "manifest with a header only": (_manifest(HEADER), "no clips"),
    "manifest without any label": (_manifest(HEADER + "a,,1,acc/x.csv,50\nb,,2,acc/x.csv,50\n"),
                                   "no labelled clip; at least two classes are needed"),
    "manifest with a single class": (_manifest(HEADER + "a,walk,1,acc/x.csv,50\nb,walk,2,acc/x.csv,50\n"),
                                     "a single class 'walk'"),
    "manifest pointing outside its folder": (_manifest(HEADER + "a,walk,1,../../etc/passwd,50\n"
                                                       "b,sit,2,acc/x.csv,50\n"), "is outside the folder"),
    "manifest with an empty subject": (_manifest(HEADER + "a,walk,,acc/x.csv,50\nb,sit,2,acc/x.csv,50\n"),
                                       "empty subject"),
    "export of a dataset folder": (_command("export", "{root}"), "no such checkpoint"),
    "bench of a folder that is no run": (_command("bench", "{tmp}"), "no such checkpoint"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_is_one_line_exit_2_and_leaves_nothing(name, pristine, tmp_path, capsys):
    prepare, message = CASES[name]
    root = clone(pristine, tmp_path / "data")
    args = prepare(root, tmp_path)
    before = set(tmp_path.iterdir())
    code, _, err = run_cli(args, capsys)
    assert code == 2, f"{name}: exit {code}, stderr {err!r}"
    # progress lines may come first; the error is one line, the last
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    assert errors[0].startswith("pskd: error: ") and message in errors[0], err
    assert "Traceback" not in err
    # no run directory or half-written one appeared
    assert not [p.name for p in set(tmp_path.iterdir()) - before]
    assert not list(tmp_path.rglob("*.incomplete"))


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 80
