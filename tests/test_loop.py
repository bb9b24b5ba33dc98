import math

import numpy as np
import pytest
import torch
from torch import nn

from pskd.config import TrainConfig
from pskd.data.batches import PairedClips
from pskd.training.loop import FitOptions, WeightAverage, cross_entropy, fit, lr_factor, pick_device, predict


def test_learning_rate_warms_up_then_follows_a_cosine():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0)
    assert lr_factor(50, 100, 0, "constant") == 1.0


def test_weight_average_warms_up_and_tracks():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    average = WeightAverage(model, decay=0.99)
    with torch.no_grad():
        model.weight.fill_(1.0)
    average.update(model)  # first decay: min(0.99, 1/10) = 0.1, so the average moves 90 % of the way
    assert average.model.weight.item() == pytest.approx(0.9)
    for _ in range(2000):
        average.update(model)
    assert average.model.weight.item() == pytest.approx(1.0, abs=1e-6)
    assert not average.model.weight.requires_grad


class Separable(nn.Module):
    """A linear model over a single stream: enough to check what the loop does."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def forward(self, batch):
        x = batch["signal"].mean(dim=1)
        return x, self.layer(x)


def tiny_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    signal = (rng.normal(size=(n, 5, 4)) + labels[:, None, None] * 2.0).astype(np.float32)
    return {"signal": signal}, labels


def test_fit_learns_selects_on_validation_and_stops_early():
    streams, labels = tiny_data()
    train = PairedClips(streams, labels, np.arange(48))
    # validation labels that have nothing to do with the signal: it stops improving, so patience ends the run
    noise = np.random.default_rng(1).integers(0, 2, len(labels))
    val = PairedClips(streams, noise, np.arange(48, 64))
    config = TrainConfig(epochs=200, batch_size=16, lr=0.05, warmup_epochs=0, patience=3, ema=None)
    result = fit(Separable(), train, val, config, cross_entropy(), FitOptions(progress=False))
    assert result.stopped_early and len(result.history) < 200
    assert result.best_epoch == len(result.history) - 3
    best = result.history[result.best_epoch - 1]
    assert all((h["val_accuracy"], -h["val_loss"]) <= (best["val_accuracy"], -best["val_loss"]) for h in result.history)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert {"train_ce", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"} <= set(result.history[0])


def test_stop_after_keeps_the_schedule_of_the_full_run():
    streams, labels = tiny_data()
    data = PairedClips(streams, labels, np.arange(64))
    config = TrainConfig(epochs=10, batch_size=16, warmup_epochs=0)
    full = fit(Separable(), data, None, config, cross_entropy(), FitOptions(progress=False))
    torch.manual_seed(0)
    short = fit(Separable(), data, None, config, cross_entropy(), FitOptions(progress=False, stop_after=4))
    assert len(short.history) == 4 and len(full.history) == 10
    assert short.history[3]["lr"] == pytest.approx(full.history[3]["lr"])
    assert short.best_epoch == 4  # without validation the last epoch is the selected one


def test_select_last_delivers_the_last_epoch_and_refuses_patience():
    streams, labels = tiny_data()
    train = PairedClips(streams, labels, np.arange(48))
    val = PairedClips(streams, labels, np.arange(48, 64))
    config = TrainConfig(epochs=6, batch_size=16, lr=0.05, warmup_epochs=0, select="last", ema=None)
    result = fit(Separable(), train, val, config, cross_entropy(), FitOptions(progress=False))
    assert result.best_epoch == 6 and "val_accuracy" in result.history[-1]  # validation is still watched
    for key, value in result.best_state.items():
        torch.testing.assert_close(value, result.last_state[key])
    with pytest.raises(ValueError, match="select: last"):
        TrainConfig(select="last", patience=3)


def test_predict_keeps_order_and_device_choice():
    streams, labels = tiny_data(10)
    data = PairedClips(streams, labels, np.arange(10))
    model = Separable()
    embeddings, logits = predict(model, data, torch.device("cpu"), batch_size=3)
    assert logits.shape == (10, 2)
    np.testing.assert_allclose(embeddings, streams["signal"].mean(axis=1), atol=1e-6)
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda")
    assert math.isfinite(float(logits.sum()))
