import numpy as np
import pytest
import torch

from pskd.errors import ConfigError
from pskd.models.inertial import CompactCNN, GafResNet18
from pskd.models.zoo import build_inertial, count_parameters


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


def test_stream_model_standardises_with_its_own_buffers():
    mean, std = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0])
    model = build_inertial("compact_cnn", ["accelerometer"], {}, 4, 32, mean, std)
    batch = {"accelerometer": torch.tensor([1.0, 2.0, 3.0]).expand(2, 32, 3).clone()}
    torch.testing.assert_close(model.channels_first(batch), torch.zeros(2, 3, 32))
    assert set(model.state_dict()) >= {"mean", "std"}
    two = build_inertial("compact_cnn", ["accelerometer", "gyroscope"], {"widths": [8, 8]}, 4, 32,
                         np.zeros(6), np.ones(6))
    out = two({"accelerometer": torch.randn(2, 32, 3), "gyroscope": torch.randn(2, 32, 3)})
    assert out[1].shape == (2, 4)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("resnet50", {}, "unknown model 'resnet50'"),
        ("compact_cnn", {"width": 3}, "unknown option(s) ['width']"),
        ("compact_cnn", {"dropout": "high"}, "student.options.dropout: expected float"),
        ("compact_cnn", {"widths": 32}, "student.options.widths: expected tuple"),
    ],
)
def test_model_config_errors(name, options, message):
    with pytest.raises(ConfigError) as caught:
        build_inertial(name, ["accelerometer"], options, 4, 32, np.zeros(3), np.ones(3))
    assert message in str(caught.value)


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
