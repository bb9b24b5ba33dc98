"""A user's own recordings in the folder format: loading, checking every row, protocols, and training on it."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_cli

from pskd.config import build_config
from pskd.data import folder, synthetic
from pskd.data.clip import DatasetInfo
from pskd.data.layouts import UTD_KINECT_V1
from pskd.data.protocols import make_split
from pskd.errors import ConfigError, DataError
from pskd.pipeline import run


def write_folder(root: Path, subjects=(1, 2, 3, 4), classes=3, trials=2, layout=True) -> Path:
    """Synthetic clips written the way a user would: skeleton as .npy, accelerometer as header-less CSV."""
    root.mkdir(parents=True)
    rows = []
    for subject in subjects:
        for action in range(classes):
            for trial in range(1, trials + 1):
                clip = synthetic.generate_clip(0, subject, action, trial)
                cid = f"p{subject}_{action}_{trial}"
                (root / "skel").mkdir(exist_ok=True)
                (root / "acc").mkdir(exist_ok=True)
                np.save(root / "skel" / f"{cid}.npy", clip.streams["skeleton"])
                np.savetxt(root / "acc" / f"{cid}.csv", clip.streams["accelerometer"], delimiter=",")
                rows.append({"clip_id": cid, "label": synthetic.CLASS_NAMES[action], "subject": f"person{subject}",
                             "trial": trial, "skeleton": f"skel/{cid}.npy", "skeleton_rate": 30,
                             "accelerometer": f"acc/{cid}.csv", "accelerometer_rate": 50})
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if layout:
        joints = list(UTD_KINECT_V1.joints)
        (root / "layout.json").write_text(json.dumps({
            "joints": joints, "edges": [[joints[a], joints[b]] for a, b in UTD_KINECT_V1.bones],
            "center": "spine", "hip": "hip_center", "spine": "spine", "shoulder": "shoulder_center"}))
    return root


@pytest.fixture(scope="module")
def users_folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("own") / "recordings")


def test_folder_loads_with_its_layout(users_folder):
    info, clips = folder.load(users_folder)
    assert len(clips) == 24 and info.class_names == sorted(synthetic.CLASS_NAMES[:3])
    assert info.streams == ["skeleton", "accelerometer"] and info.rates == {"skeleton": 30.0, "accelerometer": 50.0}
    assert sorted({c.subject for c in clips}) == [1, 2, 3, 4]  # person1..person4, numbered by name
    assert any("person1=1" in note for note in info.notes)
    assert info.layout_spec["bones"] and len(info.layout_spec["joints"]) == 20
    assert info.layout_spec["roles"] == {"hip": 3, "spine": 2, "shoulder": 1}
    assert clips[0].streams["skeleton"].shape[1:] == (20, 3) and clips[0].streams["accelerometer"].shape[1] == 3


def test_protocols_for_a_folder(users_folder):
    _, clips = folder.load(users_folder)
    subjects, trials = np.array([c.subject for c in clips]), np.array([c.trial for c in clips])
    split = make_split("folder", "leave_subjects_out", subjects, trials, "auto", {"test_subjects": [4]})
    assert split.test_subjects == [4] and split.val_subjects == [3] and split.train_subjects == [1, 2]
    split = make_split("folder", "kfold", subjects, trials, "auto", {"folds": 2, "fold": 1})
    assert split.test_subjects == [3, 4]
    with pytest.raises(ConfigError, match="needs data.folder.test_subjects"):
        make_split("folder", "leave_subjects_out", subjects, trials, "auto", {"test_subjects": []})
    with pytest.raises(ConfigError, match="data.folder.fold 2"):
        make_split("folder", "kfold", subjects, trials, "auto", {"folds": 2, "fold": 2})


def test_pskd_trains_on_a_folder_without_a_layout(tmp_path):
    """No layout.json: the skeleton teacher learns an adaptive graph."""
    root = write_folder(tmp_path / "noskel", layout=False)
    config = build_config({
        "method": "pskd", "progress": False, "threads": 1,
        "data": {"dataset": "folder", "data_dir": str(root), "protocol": "kfold", "folder": {"folds": 2, "fold": 1}},
        "preprocess": {"sensor_length": 32, "skeleton_length": 16},
        "student": {"name": "compact_cnn", "options": {"widths": [8, 16], "embedding_dim": 16}},
        "train": {"epochs": 3, "batch_size": 8},
        "teachers": {"skeleton": {"name": "skeleton_gcn", "options": {"widths": [8, 16], "strides": [1, 2],
                                                                      "embedding_dim": 16},
                                  "train": {"epochs": 3, "batch_size": 8}}},
    })
    out, metrics = run(config, tmp_path / "run", log=lambda *a, **k: None)
    assert metrics["dataset"] == "folder" and metrics["split"]["test_subjects"] == [3, 4]
    assert "skeleton" in metrics["teachers"] and (out / "metrics.json").is_file()


def test_data_check_folder(users_folder, capsys):
    code, out, err = run_cli(["data", "check", "folder", "--data-dir", str(users_folder)], capsys)
    assert code == 0, err
    assert "clips     24" in out and "skeleton layout: custom (20 joints, 19 bones)" in out


def test_data_check_reports_every_problem_with_its_row(tmp_path, capsys):
    root = write_folder(tmp_path / "broken", subjects=(1, 2), classes=2, trials=1)
    lines = (root / "manifest.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [line.split(",") for line in lines[1:]]
    rows[0][header.index("accelerometer_rate")] = "0"                       # row 2: a rate of zero
    rows[1][header.index("skeleton")] = "skel/nowhere.npy"                   # row 3: a missing file
    rows[2][header.index("clip_id")] = rows[0][header.index("clip_id")]      # row 4: a repeated clip id
    np.savetxt(root / rows[3][header.index("accelerometer")], np.zeros((9, 2)), delimiter=",")  # row 5: 2 channels
    (root / "manifest.csv").write_text("\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n")
    code, _, err = run_cli(["data", "check", "folder", "--data-dir", str(root)], capsys)
    assert code == 2
    listed = err.strip().splitlines()
    assert listed[-1].startswith("pskd: error:") and "4 problem(s)" in listed[-1]
    assert any(line.strip().startswith("row 2: accelerometer_rate '0'") for line in listed)
    assert any("row 3: skeleton file 'skel/nowhere.npy' not found" in line for line in listed)
    assert any("row 4: clip_id 'p1_0_1' repeats row 2" in line for line in listed)
    assert any(line.strip().startswith("row 5:") and "x y z per sensor" in line for line in listed)


@pytest.mark.parametrize("header, message", [
    ("clip_id,label,accelerometer,accelerometer_rate", "missing column 'subject'"),
    ("clip_id,label,subject,accelerometer", "missing column 'accelerometer_rate'"),
    ("clip_id,label,subject,gyro_rate", "column 'gyro_rate' has no stream column"),
])
def test_manifest_header_problems(tmp_path, header, message):
    root = tmp_path / "h"
    root.mkdir()
    (root / "manifest.csv").write_text(header + "\n")
    with pytest.raises(DataError, match=message):
        folder.load(root)


def test_layout_json_problems_and_paths_outside(tmp_path):
    root = write_folder(tmp_path / "l", subjects=(1, 2), classes=2, trials=1)
    (root / "layout.json").write_text(json.dumps({"joints": ["a", "b"], "edges": [["a", "c"]]}))
    with pytest.raises(DataError, match="edge end 'c' is not one of the 2 joints"):
        folder.load(root)
    (root / "layout.json").write_text(json.dumps({"joints": ["a", "b"], "edges": [["a", "b"]]}))
    with pytest.raises(DataError, match="20 joints, layout.json has 2"):
        folder.load(root)
    (root / "layout.json").unlink()
    text = (root / "manifest.csv").read_text().replace("acc/p1_0_1.csv", "../../etc/passwd")
    (root / "manifest.csv").write_text(text)
    with pytest.raises(DataError, match="is outside the folder"):
        folder.load(root)


def test_identical_recordings_under_other_clip_ids_are_reported(tmp_path, capsys):
    import shutil

    root = write_folder(tmp_path / "own", subjects=(1, 2), classes=2, trials=2)
    shutil.copy(root / "acc" / "p1_0_1.csv", root / "acc" / "p1_0_2.csv")  # a watch file copied over another
    info, _ = folder.load(root)
    assert any("2 clips share an identical accelerometer recording" in n and "p1_0_1 = p1_0_2" in n
               for n in info.notes)
    code, out, err = run_cli(["data", "check", "folder", "--data-dir", str(root)], capsys)
    assert code == 0 and "p1_0_1 = p1_0_2" in out


def test_a_class_only_test_subjects_have_is_named_before_training(tmp_path):
    from pskd.training.session import open_session

    root = write_folder(tmp_path / "own", subjects=(1, 2, 3, 4), classes=2, trials=2)
    manifest = root / "manifest.csv"
    rows = list(csv.DictReader(manifest.open()))
    for row in rows:
        if row["subject"] == "person4" and row["trial"] == "1":
            row["label"] = "only in the test"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    said = []
    config = build_config({"data": {"dataset": "folder", "data_dir": str(root), "protocol": "leave_subjects_out",
                                    "folder": {"test_subjects": [4]}}, "progress": False})
    open_session(config, lambda *args, **kwargs: said.append(" ".join(map(str, args))))
    assert any(line.startswith("warning: no labelled training clip of 1 class(es)") and "only in the test" in line
               for line in said)


def test_subjects_are_named_as_the_user_named_them(users_folder, tmp_path):
    config = build_config({"method": "ce", "progress": False, "data": {
        "dataset": "folder", "data_dir": str(users_folder), "protocol": "leave_subjects_out",
        "folder": {"test_subjects": ["person4"]}}, "train": {"epochs": 2, "batch_size": 8},
        "preprocess": {"sensor_length": 32}})
    out, metrics = run(config, tmp_path / "named", log=lambda *a, **k: None)
    assert metrics["split"]["test_subjects"] == [4] and metrics["split"]["subject_names"]["4"] == "person4"
    assert list(metrics["student"]["test_per_subject"]) == ["person4"]
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert {row["subject"] for row in rows} == {"person4"}
    wrong = build_config({**config.model_dump(mode="json"), "data": {
        **config.data.model_dump(mode="json"), "folder": {"test_subjects": ["anna"]}}})
    with pytest.raises(ConfigError, match=r"\['anna'\] are not subjects of this dataset \(names: person1"):
        run(wrong, tmp_path / "wrong", log=lambda *a, **k: None)


def test_links_inside_the_folder_are_followed_and_links_out_are_refused(tmp_path):
    root = write_folder(tmp_path / "own", subjects=(1, 2), classes=2, trials=2)
    (root / "acc").rename(root / "real_acc")
    (root / "acc").symlink_to(root / "real_acc")  # a subfolder linked to another inside the folder: fine
    _, clips = folder.load(root)
    assert len(clips) == 8
    outside = tmp_path / "elsewhere"
    (root / "real_acc").rename(outside)
    (root / "acc").unlink()
    (root / "acc").symlink_to(outside)  # now the link leaves the folder
    with pytest.raises(DataError, match="resolves outside the folder \\(through a symbolic link\\)"):
        folder.load(root)


def test_data_check_counts_clips_per_class_and_subject_and_gives_durations(users_folder, capsys):
    code, out, err = run_cli(["data", "check", "folder", "--data-dir", str(users_folder), "--json"], capsys)
    summary = json.loads(out)
    assert code == 0 and sum(summary["clips_per_class"].values()) == 24
    assert summary["clips_per_subject"] == {"person1": 6, "person2": 6, "person3": 6, "person4": 6}
    seconds = summary["modalities"]["accelerometer"]["duration_s"]
    assert 0 < seconds["min"] <= seconds["median"] <= seconds["max"]


def _rewrite_manifest(root: Path, column: str, values: dict[int, str]) -> None:
    """Set `column` of the manifest's data rows (0-based) to the given texts."""
    with (root / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for index, text in values.items():
        rows[index][column] = text
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_identifiers_are_integers_only_in_plain_ascii_digits(tmp_path):
    root = write_folder(tmp_path / "ids", subjects=(1, 2), classes=2, trials=2, layout=False)
    # subjects '1' and '2' (numbers), then one spelt with a superscript digit: every subject is a name
    _rewrite_manifest(root, "subject", {i: s for i, s in enumerate(["1"] * 4 + ["2", "2", "2", "²"])})
    info, clips = folder.load(root)
    assert info.subject_names == {"1": "1", "2": "2", "3": "²"} and sorted({c.subject for c in clips}) == [1, 2, 3]
    for bad in ("٣", "²", "1e3", "12345678901", "+4"):
        _rewrite_manifest(root, "trial", {0: bad})
        with pytest.raises(DataError, match=re.escape(f"row 2: trial '{bad}' is not an integer")):
            folder.load(root)


def test_subjects_that_are_the_same_number_are_refused(tmp_path):
    root = write_folder(tmp_path / "same", subjects=(7, 8), classes=2, trials=2, layout=False)
    _rewrite_manifest(root, "subject", {i: s for i, s in enumerate(["7", "7", "007", "007", "8", "8", "8", "8"])})
    with pytest.raises(DataError, match="subjects '007', '7' are the same number 7; spell each subject one way"):
        folder.load(root)


def test_streams_of_one_clip_that_last_too_differently_are_a_problem(tmp_path):
    root = write_folder(tmp_path / "long", subjects=(1, 2), classes=2, trials=2, layout=False)
    _rewrite_manifest(root, "accelerometer_rate", {0: "5"})  # ten times too slow: the watch would last 10x longer
    with pytest.raises(DataError, match=r"row 2: skeleton lasts \d+\.\d+ s and accelerometer \d+\.\d+ s \(15\.\d+x; "
                                        r"data.folder.max_duration_ratio is 5\): likely a wrong file or rate"):
        folder.load(root)


def _durations(root: Path) -> list[float]:
    """accelerometer / skeleton duration of each row, in the manifest's order."""
    ratios = []
    for row in csv.DictReader((root / "manifest.csv").open()):
        skeleton = len(np.load(root / row["skeleton"])) / float(row["skeleton_rate"])
        watch = len(np.loadtxt(root / row["accelerometer"], delimiter=",")) / float(row["accelerometer_rate"])
        ratios.append(watch / skeleton)
    return ratios


def test_independently_cropped_streams_load_with_the_default_ratio_and_the_rule_is_a_setting(tmp_path):
    root = write_folder(tmp_path / "cropped", subjects=(1, 2), classes=2, trials=2, layout=False)
    before = _durations(root)
    # the watch kept running: its files last 3x (row 2) and 7x (row 3) as long as the skeleton's, at the same rate
    for index, factor in ((0, 3), (1, 7)):
        row = list(csv.DictReader((root / "manifest.csv").open()))[index]
        watch = np.loadtxt(root / row["accelerometer"], delimiter=",")
        length = round(len(watch) * factor / before[index])
        np.savetxt(root / row["accelerometer"], np.tile(watch, (length // len(watch) + 1, 1))[:length], delimiter=",")
    ratios = _durations(root)
    assert 2.5 < ratios[0] < 3.5 and 5.5 < ratios[1] < 8
    with pytest.raises(folder.ManifestError) as caught:
        folder.load(root)  # 3x loads by default (up to 5x); 7x is the user's call
    assert len(caught.value.problems) == 1 and caught.value.problems[0].startswith("row 3: ")
    assert "streams cropped separately: then raise the ratio" in str(caught.value)
    needed = math.ceil(ratios[1] * 100) / 100
    assert f"data.folder.max_duration_ratio: {needed:g} accepts every row" in str(caught.value)
    info, clips = folder.load(root, folder.FolderOptions(max_duration_ratio=needed))
    assert len(clips) == 8 and not info.left_out
    info, clips = folder.load(root, folder.FolderOptions(on_problem="skip"))
    assert len(clips) == 7 and len(info.left_out) == 1 and info.left_out[0].startswith("row 3: ")


def test_crop_columns_cut_each_stream_and_a_crop_outside_the_recording_is_a_problem(tmp_path):
    root = write_folder(tmp_path / "crop", subjects=(1, 2), classes=2, trials=2, layout=False)
    rows = list(csv.DictReader((root / "manifest.csv").open()))
    full = np.loadtxt(root / rows[0]["accelerometer"], delimiter=",")
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0], "accelerometer_start", "accelerometer_stop"])
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({**row, "accelerometer_start": "0.5" if i == 0 else "",
                             "accelerometer_stop": "1.5" if i == 0 else ""})
    _, clips = folder.load(root)
    assert len(clips[0].streams["accelerometer"]) == 51  # 0.5 s to 1.5 s at 50 Hz, both ends included
    np.testing.assert_array_equal(clips[0].streams["accelerometer"], full[25:76].astype(np.float32))
    assert len(clips[1].streams["accelerometer"]) == len(np.loadtxt(root / rows[1]["accelerometer"], delimiter=","))
    for start, stop, message in (("1.5", "0.5", "accelerometer_start 1.5 s is not before accelerometer_stop 0.5 s"),
                                 ("0", "999", "accelerometer crop 0-999 s is outside the recording"),
                                 ("-1", "", "accelerometer crop -1-"), ("x", "", "accelerometer_start 'x' is not")):
        _rewrite_manifest(root, "accelerometer_start", {0: start})
        _rewrite_manifest(root, "accelerometer_stop", {0: stop})
        with pytest.raises(DataError, match=re.escape(f"row 2: {message}")):
            folder.load(root)
    _rewrite_manifest(root, "accelerometer_start", {0: ""})
    with (root / "manifest.csv").open() as handle:
        text = handle.read().replace("accelerometer_stop", "gyro_stop")
    (root / "manifest.csv").write_text(text)
    with pytest.raises(DataError, match="column 'gyro_stop' has no stream column"):
        folder.load(root)


def test_skip_leaves_problem_rows_out_and_the_run_lists_them(tmp_path):
    root = write_folder(tmp_path / "skip", subjects=(1, 2, 3, 4), classes=2, trials=3, layout=False)
    _rewrite_manifest(root, "accelerometer_rate", {0: "5", 7: "0"})  # 10x too slow; no rate at all
    _rewrite_manifest(root, "skeleton", {13: "skel/missing.npy"})
    config = {"method": "ce", "progress": False, "threads": 1, "preprocess": {"sensor_length": 32},
              "data": {"dataset": "folder", "data_dir": str(root), "protocol": "leave_subjects_out",
                       "folder": {"test_subjects": ["person4"], "on_problem": "skip"}},
              "student": {"options": {"widths": [8], "embedding_dim": 8}}, "train": {"epochs": 2, "batch_size": 8}}
    said = []
    out, metrics = run(build_config(config), tmp_path / "run", log=lambda *a, **k: said.append(" ".join(map(str, a))))
    assert [line.split(":")[0] for line in metrics["left_out"]] == ["row 2", "row 9", "row 15"]
    assert metrics["split"]["train"] + metrics["split"]["val"] + metrics["split"]["test"] == 21
    assert sum(line.startswith("left out row ") for line in said) == 3
    report = (out / "report.md").read_text()
    assert "## Rows left out (3)" in report and "row 9: accelerometer_rate '0' is not a positive number" in report
    assert sum(" left out row " in line for line in (out / "train.log").read_text().splitlines()) == 3
    # a class whose every training clip is refused: still an error, naming the class
    bad = {i: "0" for i, row in enumerate(csv.DictReader((root / "manifest.csv").open()))
           if row["label"] == synthetic.CLASS_NAMES[0] and row["subject"] != "person4"}
    _rewrite_manifest(root, "accelerometer_rate", bad)
    with pytest.raises(DataError, match=f"too few labelled training clips .*'{synthetic.CLASS_NAMES[0]}': 0"):
        run(build_config(config), tmp_path / "run2", log=lambda *a, **k: None)


def test_data_check_lists_every_problem_counts_what_skip_leaves_and_takes_settings(tmp_path, capsys):
    root = write_folder(tmp_path / "check", subjects=(1, 2, 3), classes=2, trials=12, layout=False)
    _rewrite_manifest(root, "accelerometer_rate", {i: "0" for i in range(30)})  # 30 problem rows of 72
    code, out, err = run_cli(["data", "check", "folder", "--data-dir", str(root)], capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1].startswith("pskd: error:") and "30 problem(s) in 30 of 72 rows" in err
    assert "with data.folder.on_problem: skip, 42 of 72 rows load" in err and "10 more (--json lists every one)" in err
    code, out, _ = run_cli(["data", "check", "folder", "--data-dir", str(root), "--json"], capsys)
    summary = json.loads(out)
    assert code == 2 and len(summary["problems"]) == 30 and summary["clips"] == 42 and summary["refused"]
    assert summary["problems"][0] == {"row": 2, "clip_id": "p1_0_1", "problem": "accelerometer_rate '0' is not a "
                                      "positive number of Hz", "duration_ratio": None}
    code, out, err = run_cli(["data", "check", "folder", "--data-dir", str(root), "--set",
                              "data.folder.on_problem=skip"], capsys)
    assert code == 0, err
    assert "OK (30 of 72 rows left out)" in out and "clips     42" in out
    rows = list(csv.DictReader((root / "manifest.csv").open()))
    _rewrite_manifest(root, "accelerometer_rate", {i: ("50" if i == 0 else "0") for i, row in enumerate(rows)
                                                   if row["label"] == synthetic.CLASS_NAMES[0]
                                                   and row["subject"] != "person3"})
    config = tmp_path / "own.yaml"
    config.write_text(yaml.safe_dump({"data": {"dataset": "folder", "data_dir": str(root),
                                               "protocol": "leave_subjects_out",
                                               "folder": {"on_problem": "skip", "test_subjects": ["person3"]}}}))
    code, out, err = run_cli(["data", "check", "--config", str(config)], capsys)
    assert code == 2 and "too few labelled training clips (at least 2 per class)" in err  # one of class 0 is left
    assert f"'{synthetic.CLASS_NAMES[0]}': 1" in err.splitlines()[-1]
    code, _, err = run_cli(["data", "check", "folder", "--data-dir", str(root), "--set",
                            "data.folder.on_problem=skipp"], capsys)
    assert code == 2 and "data.folder.on_problem" in err and len(err.strip().splitlines()) == 1


def test_a_manifest_whose_every_row_is_bad_is_one_error(tmp_path, capsys):
    root = write_folder(tmp_path / "bad", subjects=(1, 2), classes=2, trials=1, layout=False)
    _rewrite_manifest(root, "accelerometer_rate", {i: "-1" for i in range(4)})
    for setting in ("error", "skip"):
        code, _, err = run_cli(["data", "check", "folder", "--data-dir", str(root), "--set",
                                f"data.folder.on_problem={setting}"], capsys)
        assert code == 2 and err.strip().splitlines()[-1].startswith("pskd: error:")
    with pytest.raises(DataError, match="every one of its 4 rows has a problem"):
        folder.load(root, folder.FolderOptions(on_problem="skip"))


def test_test_subjects_given_in_other_digits_are_names_not_numbers():
    info = DatasetInfo(name="folder", class_names=["a", "b"], streams=[], rates={}, subject_names={"1": "anna"})
    assert folder.subject_numbers(["anna", "7", 3], info) == [1, 7, 3]
    with pytest.raises(ConfigError, match=r"\['²'\] are not subjects of this dataset \(names: anna\)"):
        folder.subject_numbers(["²"], info)
