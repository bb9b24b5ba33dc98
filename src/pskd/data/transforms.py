"""Preprocessing as small composable pieces.

Per-clip (numpy, cached): resampling each stream to a fixed length, skeleton centring and scale.
Fitted on training clips only: per-channel standardisation (carried inside the model as buffers, so an exported
model takes raw sensor units). Per-batch (torch, training only): augmentation. Encoding: the Gramian Angular
Summation Field image of a clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.interpolate
import scipy.signal
import torch

from pskd import numeric
from pskd.data.clip import SKELETON, WATCH_DEVICES
from pskd.data.layouts import Layout

# ---------------------------------------------------------------- per clip


def resample(x: np.ndarray, length: int, method: str = "linear", antialias: bool = True) -> np.ndarray:
    """Resample a stream [T, ...] to [length, ...] over its own duration (first and last samples kept).

    Down-sampling first applies a zero-phase Butterworth low-pass at the new Nyquist frequency, so that motion
    faster than the new rate does not fold back as spurious slow motion.
    """
    if x.shape[0] < 2:
        raise ValueError(f"cannot resample a stream of {x.shape[0]} samples")
    if length < 2:
        raise ValueError(f"cannot resample to {length} samples")
    steps = x.shape[0]
    flat = x.reshape(steps, -1).astype(np.float64)
    if antialias:
        flat = numeric.antialias(flat, length)
    if method == "linear":
        out = numeric.linear(flat, length)
    elif method == "cubic":
        out = scipy.interpolate.CubicSpline(np.linspace(0.0, 1.0, steps), flat, axis=0)(np.linspace(0.0, 1.0, length))
    else:
        raise ValueError(f"unknown resampling method '{method}'")
    return out.reshape((length,) + x.shape[1:]).astype(np.float32)


def center_skeleton(skeleton: np.ndarray, layout: Layout, joint: str = "hip") -> np.ndarray:
    """Subtract the clip's mean position of a body-centre joint: keeps motion, removes where the person stood."""
    if joint == "none":
        return skeleton
    index = layout.role(joint)
    # a layout that names no such joint is centred on the mean of all its joints
    origin = (skeleton[:, index, :] if index is not None else skeleton.mean(axis=1)).mean(axis=0)
    return (skeleton - origin).astype(np.float32)


def scale_skeleton(skeleton: np.ndarray, layout: Layout) -> np.ndarray:
    """Divide by the clip's mean torso length (shoulder centre to hip centre), so body size does not matter; for a
    layout without those joints, by the mean distance of the joints from their centroid."""
    top, bottom = layout.role("shoulder"), layout.role("hip")
    if top is not None and bottom is not None:
        torso = np.linalg.norm(skeleton[:, top] - skeleton[:, bottom], axis=-1).mean()
    else:
        torso = np.linalg.norm(skeleton - skeleton.mean(axis=1, keepdims=True), axis=-1).mean()
    if not np.isfinite(torso) or torso < 1e-6:
        return skeleton
    return (skeleton / torso).astype(np.float32)


# ---------------------------------------------------------------- fitted on training clips


@dataclass
class Standardizer:
    """Per-channel mean and standard deviation of a stream, fitted on training clips only."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, samples: np.ndarray) -> "Standardizer":
        """samples: [clips, T, ...channels]; one mean and deviation per channel, over clips and time."""
        flat = samples.reshape(samples.shape[0] * samples.shape[1], -1)
        mean = flat.mean(axis=0)
        std = flat.std(axis=0)
        std = np.where(std < 1e-6, 1.0, std)
        return cls(mean=mean.astype(np.float32), std=std.astype(np.float32))

    def apply(self, samples: np.ndarray) -> np.ndarray:
        shape = samples.shape
        flat = samples.reshape(shape[0], shape[1], -1)
        return ((flat - self.mean) / self.std).reshape(shape).astype(np.float32)


# ---------------------------------------------------------------- encoding


def gasf(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Gramian Angular Summation Field of each channel: [B, C, T] -> [B, C, T, T] in [0, 1].

    Each channel is min-max scaled to [-1, 1] over the clip, phi = arccos(x), G[m, n] = cos(phi_m + phi_n),
    then (G + 1) / 2. cos(phi_m + phi_n) = x_m x_n - sqrt(1 - x_m^2) sqrt(1 - x_n^2) is the same value without
    arccos, which has an unbounded gradient at +-1 and exports to fewer runtimes.
    """
    low = x.amin(dim=-1, keepdim=True)
    high = x.amax(dim=-1, keepdim=True)
    scaled = (2.0 * (x - low) / (high - low).clamp_min(eps) - 1.0).clamp(-1.0, 1.0)
    sine = torch.sqrt((1.0 - scaled * scaled).clamp_min(0.0))
    field = scaled.unsqueeze(-1) * scaled.unsqueeze(-2) - sine.unsqueeze(-1) * sine.unsqueeze(-2)
    return (field + 1.0) / 2.0


# ---------------------------------------------------------------- per batch, training only


def random_rotations(count: int, max_degrees: float, generator: torch.Generator) -> torch.Tensor:
    """[count, 3, 3] rotations about uniformly random axes by angles uniform in [-max, max] degrees."""
    axis = torch.randn(count, 3, generator=generator)
    axis = axis / axis.norm(dim=1, keepdim=True).clamp_min(1e-8)
    angle = (torch.rand(count, generator=generator) * 2 - 1) * math.radians(max_degrees)
    return axis_angle(axis, angle)


def axis_angle(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula for a batch of unit axes [N, 3] and angles [N]."""
    x, y, z = axis.unbind(dim=1)
    zero = torch.zeros_like(x)
    cross = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=1).view(-1, 3, 3)
    eye = torch.eye(3).expand_as(cross)
    sin, cos = angle.sin()[:, None, None], angle.cos()[:, None, None]
    return eye + sin * cross + (1 - cos) * (cross @ cross)


def crop_resize(x: torch.Tensor, min_fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Keep a random window of each sequence ([B, T, ...]) of at least min_fraction of T; stretch it back to T."""
    batch, steps = x.shape[0], x.shape[1]
    fraction = min_fraction + (1 - min_fraction) * torch.rand(batch, generator=generator)
    start = (1 - fraction) * torch.rand(batch, generator=generator)
    grid = torch.linspace(0, 1, steps)
    position = (start[:, None] + fraction[:, None] * grid[None, :]) * (steps - 1)
    left = position.floor().long().clamp(0, steps - 2)
    weight = (position - left).view(batch, steps, *([1] * (x.dim() - 2))).to(x.dtype)
    flat_index = left.view(batch, steps, *([1] * (x.dim() - 2))).expand_as(x)
    lower = torch.gather(x, 1, flat_index)
    upper = torch.gather(x, 1, flat_index + 1)
    return lower * (1 - weight) + upper * weight


class Augmenter:
    """Random perturbations of a training batch, stream by stream, in physical units and time-major layout.

    Inertial streams ([B, T, 3k]): one random rotation of the sensor frame per clip and body-worn unit (the
    same for every xyz triple of that unit, as an accelerometer and gyroscope share the watch's frame; `devices`
    maps each stream to its unit, by default the watch's accelerometer and gyroscope), amplitude scaling,
    Gaussian jitter, random crop and stretch in time. Skeleton ([B, T, J, 3]): rotation about the vertical axis,
    scaling, the same crop. Streams on no unit pass unchanged.
    """

    def __init__(
        self,
        scale: float = 0.1,
        jitter: float = 0.02,
        rotation_deg: float = 15.0,
        time_crop: float = 0.1,
        seed: int = 0,
        devices: dict[str, str] | None = None,
    ):
        self.devices = dict(devices) if devices else dict(WATCH_DEVICES)
        self.scale = scale
        self.jitter = jitter
        self.rotation_deg = rotation_deg
        self.time_crop = time_crop
        self.generator = torch.Generator().manual_seed(seed)

    def _factor(self, count: int) -> torch.Tensor:
        return 1 + (torch.rand(count, generator=self.generator) * 2 - 1) * self.scale

    def inertial(self, x: torch.Tensor, rotation: torch.Tensor | None = None) -> torch.Tensor:
        batch, steps, channels = x.shape
        out = x
        if self.rotation_deg > 0 and channels % 3 == 0:  # a stream of single axes (preprocess.channels) is not turned
            if rotation is None:
                rotation = random_rotations(batch, self.rotation_deg, self.generator)
            triples = out.reshape(batch, steps, channels // 3, 3)
            out = torch.einsum("bij,btkj->btki", rotation, triples).reshape(batch, steps, channels)
        if self.scale > 0:
            out = out * self._factor(batch)[:, None, None]
        if self.jitter > 0:
            out = out + self.jitter * torch.randn(out.shape, generator=self.generator)
        if self.time_crop > 0:
            out = crop_resize(out, 1 - self.time_crop, self.generator)
        return out

    def skeleton(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        out = x
        if self.rotation_deg > 0:
            vertical = torch.tensor([0.0, 1.0, 0.0]).expand(batch, 3)
            angle = (torch.rand(batch, generator=self.generator) * 2 - 1) * math.radians(self.rotation_deg)
            rotation = axis_angle(vertical, angle)
            out = torch.einsum("bij,btkj->btki", rotation, out)
        if self.scale > 0:
            out = out * self._factor(batch)[:, None, None, None]
        if self.time_crop > 0:
            out = crop_resize(out, 1 - self.time_crop, self.generator)
        return out

    def __call__(self, streams: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        rotations: dict[str, torch.Tensor | None] = {}
        # one frame per clip and unit, all drawn before any other randomness (the order streams first name them)
        for name in streams:
            unit = self.devices.get(name)
            if unit is not None and unit not in rotations:
                batch = streams[name].shape[0]
                rotations[unit] = (random_rotations(batch, self.rotation_deg, self.generator)
                                   if self.rotation_deg > 0 else None)
        for name, value in streams.items():
            if name in self.devices:
                out[name] = self.inertial(value, rotations[self.devices[name]])
            elif name == SKELETON:
                out[name] = self.skeleton(value)
            else:
                out[name] = value
        return out
