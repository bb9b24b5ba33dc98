import pytest
from conftest import REPO

from pskd.config import RunConfig, build_config, dump_config, load_config
from pskd.config_files import parse_value
from pskd.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_shipped_config_loads_with_its_values():
    config = load_config(REPO / "configs/utd_mhad/student_ce.yaml")
    assert config.data.dataset == "utd_mhad"
    assert config.data.protocol == "cross_subject"
    assert config.method == "ce"
    assert config.student.name == "compact_cnn"
    assert config.student.streams == ["accelerometer"]


def test_dotted_overrides_are_typed(tmp_path):
    config = load_config(write(tmp_path, "train: {epochs: 5}\n"),
                         ["train.epochs=7", "train.lr=1e-3", "augment.enabled=false", "data.val_subjects=[3]"])
    assert config.train.epochs == 7
    assert config.train.lr == pytest.approx(1e-3)
    assert config.augment.enabled is False
    assert config.data.val_subjects == [3]


def test_override_creates_nested_options(tmp_path):
    config = load_config(write(tmp_path, ""), ["student.options.widths=[16,24]"])
    assert config.student.options == {"widths": [16, 24]}


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        ("train: {epochs: 5, epoch: 3}\n", [], "train.epoch: unknown key"),
        ("trian: {epochs: 5}\n", [], "trian: unknown key"),
        ("train: {epochs: ten}\n", [], "train.epochs"),
        ("train: {epochs: 0}\n", [], "greater than or equal to 1"),
        ("", ["train.epochs=abc"], "train.epochs"),
        ("", ["train.nope=1"], "train.nope: unknown key"),
        ("", ["train.epochs"], "expected key=value"),
        ("train: {epochs: 5}\n", ["train.epochs.x=1"], "'epochs' is a value, not a section"),
        ("", ["train..epochs=1"], "empty key"),
        ("", ["train.optimizer=lion"], "train.optimizer"),
        ("", ["data.val_subjects=[]"], "at least one subject"),
        ("- a\n- b\n", [], "top level must be a mapping"),
        ("train: [\n", [], "not valid YAML at line"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), overrides)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_resolved_config_round_trips():
    config = build_config({"train": {"epochs": 3}, "seed": 4})
    again = build_config(__import__("yaml").safe_load(dump_config(config)))
    assert again == config
    assert isinstance(again, RunConfig)


def test_parse_value():
    assert parse_value("1e-3") == pytest.approx(0.001)
    assert parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2]
    assert parse_value("synthetic") == "synthetic"
    assert parse_value("null") is None


def test_an_override_reaches_only_its_own_section():
    from pskd.demo import DEMO_CONFIG

    config = build_config(DEMO_CONFIG, ["teachers.skeleton.train.epochs=2"])
    assert config.teachers["skeleton"].train.epochs == 2
    assert config.teachers["fusion"].train.epochs == 40  # the demo's two teachers share one dict for train
    assert DEMO_CONFIG["teachers"]["skeleton"]["train"]["epochs"] == 40  # and the tree given is untouched


def test_the_former_name_of_sensor_length_is_still_read():
    assert build_config({"preprocess": {"accelerometer_length": 64}}).preprocess.sensor_length == 64
    with pytest.raises(ConfigError, match="give sensor_length only"):
        build_config({"preprocess": {"accelerometer_length": 64, "sensor_length": 32}})


def test_a_built_in_term_owns_its_settings_and_the_former_keys_still_read():
    from pskd.config import FORMER_TERM_KEYS, build_config
    from pskd.errors import ConfigError

    former = build_config({"distill": {"dkd_alpha": 2.0, "acs_mode": "soft", "relational_angle": 0.5,
                                       "terms": {"acs": {"unlabelled_agree": True}}}})
    assert former.distill.terms == {"dkd": {"alpha": 2.0}, "acs": {"unlabelled_agree": True, "mode": "soft"},
                                    "dask": {"angle": 0.5}}
    assert not any(hasattr(former.distill, key) for key in FORMER_TERM_KEYS)
    with pytest.raises(ConfigError, match="give terms.acs.mode only"):
        build_config({"distill": {"acs_mode": "soft", "terms": {"acs": {"mode": "hard"}}}})
    with pytest.raises(ConfigError, match="mode"):  # checked against the term's options, as a new key is
        from pskd.distill.methods import check_method

        check_method(build_config({"method": "pskd", "teachers": {"skeleton": {}}, "distill": {"acs_mode": "x"}}))
