"""A model's outputs over a set of clips, in order, without gradients: what validation, testing and teacher
targets read."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pskd.data.batches import PairedClips


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def predict(model: nn.Module, data: PairedClips, device: torch.device,
            batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and logits of every clip of `data`, in order."""
    model.eval()
    embeddings, logits = [], []
    for batch in data.batches(batch_size):
        embedding, logit = model(to_device(batch, device))
        embeddings.append(embedding.float().cpu())
        logits.append(logit.float().cpu())
    return torch.cat(embeddings).numpy(), torch.cat(logits).numpy()


@torch.no_grad()
def evaluate_loss(model: nn.Module, data: PairedClips, device: torch.device,
                  batch_size: int = 256) -> tuple[float, float]:
    """Mean cross-entropy (no smoothing) and accuracy on `data`."""
    _, logits = predict(model, data, device, batch_size)
    labels = data.labels.numpy()
    loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    return loss, float((logits.argmax(1) == labels).mean())
