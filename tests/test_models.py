import numpy as np
import pytest
import torch

from pskd.data.layouts import UTD_KINECT_V1
from pskd.errors import ConfigError
from pskd.models.inertial import CompactCNN, GafResNet18
from pskd.models.zoo import InputSpec, build_model, count_parameters


def test_compact_cnn_signature_shapes_and_size():
    model = CompactCNN(3, 27, 128)
    embedding, logits = model(torch.randn(4, 3, 128))
    assert embedding.shape == (4, model.embedding_dim) and logits.shape == (4, 27)
    assert count_parameters(model) <= 100_000  # a watch-sized student
    assert CompactCNN(6, 5, 77)(torch.randn(2, 6, 77))[1].shape == (2, 5)  # any length, any channel count


def test_gaf_resnet18_is_the_vskd_student():
    model = GafResNet18(3, 27, 64, image_size=32)
    embedding, logits = model(torch.randn(2, 3, 64))
    assert embedding.shape == (2, 300) and logits.shape == (2, 27)
    assert 11.2e6 < count_parameters(GafResNet18(3, 27, 128)) < 11.4e6
    image = model.encode(torch.randn(2, 3, 64))
    assert image.shape == (2, 3, 32, 32) and 0 <= image.min() and image.max() <= 1


def spec(num_classes=4, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
    return InputSpec(
        num_classes=num_classes,
        lengths={"accelerometer": 32, "gyroscope": 32, "skeleton": 16},
        channels={"accelerometer": 3, "gyroscope": 3},
        layout=UTD_KINECT_V1,
        mean={"accelerometer": np.array(mean), "gyroscope": np.zeros(3)},
        std={"accelerometer": np.array(std), "gyroscope": np.ones(3)},
    )


def test_stream_model_standardises_with_its_own_buffers():
    model = build_model("compact_cnn", ["accelerometer"], {}, spec(mean=(1.0, 2.0, 3.0), std=(2.0, 2.0, 2.0)))
    batch = {"accelerometer": torch.tensor([1.0, 2.0, 3.0]).expand(2, 32, 3).clone()}
    torch.testing.assert_close(model.channels_first(batch), torch.zeros(2, 3, 32))
    assert set(model.state_dict()) >= {"mean", "std"}
    two = build_model("compact_cnn", ["accelerometer", "gyroscope"], {"widths": [8, 8]}, spec())
    out = two({"accelerometer": torch.randn(2, 32, 3), "gyroscope": torch.randn(2, 32, 3)})
    assert out[1].shape == (2, 4)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("resnet50", {}, "unknown model 'resnet50'"),
        ("skeleton_gcn", {"widths": [8]}, "widths and strides must have the same length"),
        ("fusion", {"fusion": "sum"}, "options.fusion: one of"),
        ("fusion", {"colour": 1}, "unknown option(s) ['colour'] for fusion"),
        ("compact_cnn", {"width": 3}, "unknown option(s) ['width']"),
        ("compact_cnn", {"dropout": "high"}, "student.options.dropout: expected float"),
        ("compact_cnn", {"widths": 32}, "student.options: widths: expected a list of integers"),
        ("compact_cnn", {"preset": "huge"}, "student.options: preset 'huge' is not one of tiny, small, default"),
        ("compact_cnn", {"kernel": 0}, "student.options: widths, kernel and embedding_dim must be at least 1"),
    ],
)
def test_model_config_errors(name, options, message):
    streams = {"skeleton_gcn": ["skeleton"], "fusion": ["skeleton", "accelerometer"]}.get(name, ["accelerometer"])
    with pytest.raises(ConfigError) as caught:
        build_model(name, streams, options, spec())
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "name, streams, message",
    [
        ("compact_cnn", ["skeleton"], "reads inertial streams only"),
        ("skeleton_gcn", ["skeleton", "accelerometer"], "reads the skeleton stream only"),
        ("fusion", ["accelerometer"], "needs the skeleton and at least one inertial stream"),
        ("compact_cnn", ["magnetometer"], "['magnetometer'] not in this dataset"),
    ],
)
def test_streams_must_fit_the_model(name, streams, message):
    with pytest.raises(ConfigError) as caught:
        build_model(name, streams, {}, spec())
    assert message in str(caught.value)


def test_teachers_read_their_streams_from_one_paired_batch():
    batch = {"skeleton": torch.randn(3, 16, 20, 3), "accelerometer": torch.randn(3, 32, 3),
             "gyroscope": torch.randn(3, 32, 3)}
    small = {"widths": [8, 8], "strides": [1, 2], "embedding_dim": 12}
    skeleton = build_model("skeleton_gcn", ["skeleton"], small, spec(), "teachers.skeleton")
    embedding, logits = skeleton(batch)
    assert embedding.shape == (3, 12) and logits.shape == (3, 4)
    for mode in ("concat", "gated", "attention"):
        fusion = build_model("fusion", ["skeleton", "accelerometer", "gyroscope"],
                             {"fusion": mode, "embedding_dim": 24, "skeleton": small,
                              "inertial": {"widths": [8, 8], "embedding_dim": 10}}, spec())
        embedding, logits = fusion(batch)
        assert embedding.shape == (3, 24) and logits.shape == (3, 4)
        assert fusion.mean.shape == (1, 6, 1)


def test_models_train_deterministically():
    def one_step():
        torch.manual_seed(0)
        model = CompactCNN(3, 4, 32)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = torch.randn(8, 3, 32, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 4
        loss = torch.nn.functional.cross_entropy(model(x)[1], y)
        loss.backward()
        optimizer.step()
        return model(x)[1].detach()

    torch.testing.assert_close(one_step(), one_step(), rtol=0, atol=0)


def test_the_tiny_student_fits_a_microcontroller_budget():
    """compact_cnn preset tiny: at most 10 k parameters and about 0.5 MFLOPs per UTD-MHAD clip (27 classes)."""
    from torch.utils.flop_counter import FlopCounterMode

    from pskd.models.inertial import CompactCNN

    model = CompactCNN(3, 27, 128, preset="tiny").eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 128))
    assert sum(p.numel() for p in model.parameters()) <= 10_000 and counter.get_total_flops() <= 0.5e6
    assert model.dropout.p == 0.1 and CompactCNN(3, 27, 128, preset="tiny", dropout=0.2).dropout.p == 0.2
