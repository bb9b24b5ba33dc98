"""numpy-only helpers shared by data loading and the torch-free deploy path: reading a number from text, and
resampling a stream the way every training clip is resampled (a zero-phase low-pass when shortening, then linear
interpolation), along any axis."""

from __future__ import annotations

import numpy as np
import scipy.signal


def is_number(text: str) -> bool:
    """Whether float() reads `text` (surrounding spaces allowed; nan and inf count)."""
    try:
        float(text)
        return True
    except ValueError:
        return False


def antialias(x: np.ndarray, length: int, axis: int = 0) -> np.ndarray:
    """A zero-phase Butterworth low-pass at the Nyquist frequency of `length` samples along `axis`, when that
    shortens a stream of more than 15 samples (x unchanged otherwise), so fast motion does not fold back."""
    steps = x.shape[axis]
    if not (length < steps and steps > 15):
        return x
    b, a = scipy.signal.butter(4, 0.9 * (length - 1) / (steps - 1))
    return scipy.signal.filtfilt(b, a, x, axis=axis, padlen=min(15, steps - 1))


def linear(x: np.ndarray, length: int, axis: int = 0) -> np.ndarray:
    """`length` samples along `axis`, linearly interpolated over the stream's own duration (ends kept)."""
    steps = x.shape[axis]
    position = np.linspace(0.0, 1.0, length) * (steps - 1)
    left = np.minimum(np.floor(position).astype(np.int64), steps - 2)
    shape = [1] * x.ndim
    shape[axis] = length
    weight = (position - left).reshape(shape)
    return np.take(x, left, axis=axis) * (1.0 - weight) + np.take(x, left + 1, axis=axis) * weight
