"""Accuracy, macro-F1, per-class figures and the confusion matrix."""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(labels), np.asarray(predictions)), 1)
    return counts


def per_class(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class; 0 where a ratio has no denominator."""
    true_positive = np.diag(confusion).astype(float)
    predicted = confusion.sum(axis=0).astype(float)
    support = confusion.sum(axis=1).astype(float)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def summarize(labels: np.ndarray, logits: np.ndarray, class_names: list[str]) -> dict:
    """Every figure a report needs, as JSON-ready Python values. Macro-F1 averages the classes that occur among the
    labels or the predictions, as scikit-learn's f1_score(average="macro") does: a class never true nor predicted
    has no figure; one predicted but never true counts with F1 0."""
    predictions = np.asarray(logits).argmax(axis=1)
    labels = np.asarray(labels)
    confusion = confusion_matrix(labels, predictions, len(class_names))
    figures = per_class(confusion)
    present = (figures["support"] > 0) | (confusion.sum(axis=0) > 0)
    return {
        "accuracy": float((predictions == labels).mean()) if len(labels) else 0.0,
        "macro_f1": float(figures["f1"][present].mean()) if present.any() else 0.0,
        "clips": int(len(labels)),
        "per_class": [
            {
                "class": name,
                "precision": float(figures["precision"][i]),
                "recall": float(figures["recall"][i]),
                "f1": float(figures["f1"][i]),
                "support": int(figures["support"][i]),
            }
            for i, name in enumerate(class_names)
        ],
        "confusion_matrix": confusion.tolist(),
    }
