import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pskd.evaluate.metrics import confusion_matrix, per_class, summarize


def test_figures_against_hand_computed_values():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 1, 2, 2])
    logits = np.eye(3)[predictions]
    confusion = confusion_matrix(labels, predictions, 3)
    assert confusion.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    figures = per_class(confusion)
    # class 0: P = 2/2, R = 2/3; class 1: P = 1/2, R = 1/2; class 2: P = 1/2, R = 1
    np.testing.assert_allclose(figures["precision"], [1.0, 0.5, 0.5])
    np.testing.assert_allclose(figures["recall"], [2 / 3, 0.5, 1.0])
    np.testing.assert_allclose(figures["f1"], [0.8, 0.5, 2 / 3])
    summary = summarize(labels, logits, ["a", "b", "c"])
    assert summary["accuracy"] == pytest.approx(4 / 6)
    assert summary["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert summary["per_class"][2] == {"class": "c", "precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3),
                                       "support": 1}


def test_classes_without_test_clips_do_not_count_in_macro_f1():
    labels = np.array([0, 0, 1])
    logits = np.eye(3)[[0, 0, 1]]
    summary = summarize(labels, logits, ["a", "b", "c"])
    assert summary["macro_f1"] == 1.0 and summary["per_class"][2]["support"] == 0


def test_a_class_predicted_but_never_true_counts_with_f1_zero():
    labels = np.array([0, 0, 1])
    logits = np.eye(3)[[0, 2, 1]]  # class 2 predicted once, never true
    # class 0: P 1, R 1/2, F1 2/3; class 1: 1; class 2: 0
    assert summarize(labels, logits, ["a", "b", "c"])["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 6).flatmap(lambda k: st.tuples(
    st.just(k), st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1, max_size=40))))
def test_macro_f1_agrees_with_scikit_learn(case):
    metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn (the dev extra) is not installed")
    classes, pairs = case
    labels, predictions = (np.array(column) for column in zip(*pairs))
    ours = summarize(labels, np.eye(classes)[predictions], [str(i) for i in range(classes)])
    assert ours["macro_f1"] == pytest.approx(metrics.f1_score(labels, predictions, average="macro", zero_division=0))
    assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predictions))
