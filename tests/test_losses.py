"""Every distillation loss against values computed by hand on small tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from pskd.distill.losses.acs import acs_soft_target, acs_terms, acs_weights
from pskd.distill.losses.camkd import camkd_loss, confidence_weights
from pskd.distill.losses.dkd import dkd_loss
from pskd.distill.losses.kd import kd_loss, soft_target_kl
from pskd.distill.losses.relational import angle_loss, distance_loss, relational_loss
from pskd.distill.losses.semantic import Projection, semantic_mse

LN3 = math.log(3.0)


def test_kd_by_hand():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[LN3, 0.0]])  # softmax = (0.75, 0.25)
    # KL((.75, .25) || (.5, .5)) = .75 ln 1.5 + .25 ln .5
    assert kd_loss(student, teacher, temperature=1.0).item() == pytest.approx(0.130812036, abs=1e-6)
    # at T = 2 the teacher is (sqrt3, 1) / (sqrt3 + 1); times T^2 = 4
    assert kd_loss(student, teacher, temperature=2.0).item() == pytest.approx(0.145363131, abs=1e-6)
    assert kd_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)


def test_soft_target_kl_accepts_one_hot_targets_and_weights():
    student = torch.tensor([[LN3, 0.0], [0.0, 0.0]])
    one_hot = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # -ln .75 and -ln .5, averaged: cross-entropy, since a one-hot target has zero entropy
    assert soft_target_kl(student, one_hot, 1.0).item() == pytest.approx((-math.log(0.75) - math.log(0.5)) / 2)
    weighted = soft_target_kl(student, one_hot, 1.0, weights=torch.tensor([0.0, 1.0]))
    assert weighted.item() == pytest.approx(-math.log(0.5) / 2)


def test_dkd_by_hand_and_its_identity_with_kd():
    student = torch.zeros(1, 3)  # uniform
    teacher = torch.tensor([[math.log(2.0), 0.0, 0.0]])  # (.5, .25, .25)
    labels = torch.tensor([0])
    # TCKD: KL((.5, .5) || (1/3, 2/3)) = .5 ln 1.5 + .5 ln .75; NCKD: both uniform over the rest, 0
    assert dkd_loss(student, teacher, labels, alpha=1.0, beta=8.0, temperature=1.0).item() == pytest.approx(
        0.058891518, abs=1e-6)
    # Zhao et al.: KD = TCKD + (1 - p_t[target]) * NCKD, sample by sample
    torch.manual_seed(0)
    s, t = torch.randn(1, 5), torch.randn(1, 5)
    y = torch.tensor([2])
    p_target = F.softmax(t / 3.0, dim=1)[0, 2].item()
    decoupled = dkd_loss(s, t, y, alpha=1.0, beta=1 - p_target, temperature=3.0)
    assert decoupled.item() == pytest.approx(kd_loss(s, t, 3.0).item(), rel=1e-4)


def test_camkd_weights_and_loss_by_hand():
    labels = torch.tensor([0])
    right = torch.tensor([[LN3, 0.0]])  # p(y) = .75, CE = ln(4/3)
    wrong = torch.tensor([[0.0, LN3]])  # p(y) = .25, CE = ln 4
    weights = confidence_weights([right, wrong], labels)
    # softmax(ln 4/3, ln 4) = (1/4, 3/4); weights = 1 - that, over K - 1 = 1
    torch.testing.assert_close(weights, torch.tensor([[0.75, 0.25]]))
    student = torch.zeros(1, 2)
    expected = 0.75 * kd_loss(student, right, 1.0) + 0.25 * kd_loss(student, wrong, 1.0)
    assert camkd_loss(student, [right, wrong], labels, temperature=1.0).item() == pytest.approx(expected.item())
    torch.testing.assert_close(confidence_weights([right], labels), torch.ones(1, 1))


def test_relational_losses_by_hand():
    teacher = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    student = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    # distances normalised by their mean, compared with smooth L1 over the 3 x 3 matrix
    assert distance_loss(student, teacher).item() == pytest.approx(0.018484453, abs=1e-6)
    # a scaled and shifted copy keeps every normalised distance and every angle
    moved = teacher * 3.0 + 1.5
    assert distance_loss(moved, teacher).item() == pytest.approx(0.0, abs=1e-6)
    assert angle_loss(moved, teacher).item() == pytest.approx(0.0, abs=1e-6)
    # the right angle at the origin becomes 45 degrees when the third point moves to (1, 1)
    skewed = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    assert angle_loss(skewed, teacher).item() > 0
    combined = relational_loss(student, teacher, distance_weight=1.0, angle_weight=2.0)
    assert combined.item() == pytest.approx(distance_loss(student, teacher).item() + 2 * angle_loss(student, teacher).item())


def test_semantic_mse_and_projection():
    projected = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # per sample: (0 + 4) / 2 = 2 and (1 + 1) / 2 = 1
    assert semantic_mse(projected, target).item() == pytest.approx(1.5)
    assert semantic_mse(projected, target, torch.tensor([1.0, 0.0])).item() == pytest.approx(1.0)
    assert Projection(3, 5)(torch.randn(2, 3)).shape == (2, 5)


def logits_with(probabilities):
    return torch.log(torch.tensor(probabilities))


def test_acs_weights_by_hand():
    labels = torch.tensor([0, 1])
    # sample 0 (y = 0): teacher A predicts 0 with .6, teacher B predicts 0 with .8
    # sample 1 (y = 1): A predicts 0 (p(y) = .1), B predicts 2 (p(y) = .2): nobody is right
    teacher_a = logits_with([[0.6, 0.3, 0.1], [0.8, 0.1, 0.1]])
    teacher_b = logits_with([[0.8, 0.1, 0.1], [0.3, 0.2, 0.5]])
    hard = acs_weights([teacher_a, teacher_b], labels, "hard")
    torch.testing.assert_close(hard, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    soft = acs_weights([teacher_a, teacher_b], labels, "soft")
    # sample 0: (.6, .8, 1 - .8) / 1.6; sample 1: (.1, .2, 1 - .2) / 1.1
    torch.testing.assert_close(soft, torch.tensor([[0.375, 0.5, 0.125], [0.1 / 1.1, 0.2 / 1.1, 0.8 / 1.1]]))
    with pytest.raises(ValueError):
        acs_weights([teacher_a], labels, "medium")


def test_acs_filters_doubtful_teachers_on_unlabelled_clips_by_hand():
    labels = torch.tensor([-1, -1, -1, 0])
    # clip 0: A says 0 (.6), B says 0 (.8); clip 1: A says 0 (.9), B says 2 (.5); clip 2: A .4, B .5, both 1;
    # clip 3 is labelled (y = 0) and no filter touches it: B is right and more confident than A
    teacher_a = logits_with([[0.6, 0.3, 0.1], [0.9, 0.05, 0.05], [0.3, 0.4, 0.3], [0.5, 0.3, 0.2]])
    teacher_b = logits_with([[0.8, 0.1, 0.1], [0.3, 0.2, 0.5], [0.25, 0.5, 0.25], [0.6, 0.2, 0.2]])
    teachers = [teacher_a, teacher_b]
    unfiltered = acs_weights(teachers, labels, "hard")
    torch.testing.assert_close(unfiltered[:, :2], torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]))
    # threshold .7: clip 0 keeps B (.8), clip 1 keeps A (.9), clip 2 loses both: an all-zero row
    hard = acs_weights(teachers, labels, "hard", threshold=0.7)
    torch.testing.assert_close(hard, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0],
                                                   [0.0, 1.0, 0.0]]))
    # agree: clip 1's teachers disagree (0 against 2), so it gets no weight; clips 0 and 2 keep their teacher
    agreed = acs_weights(teachers, labels, "hard", agree=True)
    torch.testing.assert_close(agreed, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0],
                                                     [0.0, 1.0, 0.0]]))
    # soft, threshold .55: clip 0 weights A .6 and B .8 -> (.6, .8) / 1.4; clip 1 only A; clip 2 nothing;
    # clip 3 (labelled) as without a filter: (.5, .6, 1 - .6) / 1.5
    soft = acs_weights(teachers, labels, "soft", threshold=0.55)
    torch.testing.assert_close(soft, torch.tensor([[0.6 / 1.4, 0.8 / 1.4, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0],
                                                   [0.5 / 1.5, 0.6 / 1.5, 0.4 / 1.5]]))
    # an all-zero row adds nothing to either term, and still counts in the batch mean
    student, emb, classes = torch.zeros(4, 3), [torch.zeros(4, 1)] * 2, [torch.ones(3, 1)] * 2
    both = [torch.ones(4, 1) * 2, torch.ones(4, 1) * 3]
    terms = acs_terms(student, emb, teachers, both, classes, labels, mode="hard", temperature=1.0, threshold=0.7)
    kl = [float((t * torch.log(3 * t)).sum()) for t in (torch.tensor([0.8, 0.1, 0.1]),
                                                        torch.tensor([0.9, 0.05, 0.05]),
                                                        torch.tensor([0.6, 0.2, 0.2]))]
    assert terms["acs_kd"].item() == pytest.approx(sum(kl) / 4, abs=1e-6)
    # semantic: B's embedding 3 (clips 0 and 3) -> 9 each, A's 2 (clip 1) -> 4; clip 2 nothing
    assert terms["acs_semantic"].item() == pytest.approx((9 + 4 + 9) / 4)


def test_acs_target_and_terms_by_hand():
    labels = torch.tensor([0, 1])
    teacher_a = logits_with([[0.6, 0.3, 0.1], [0.8, 0.1, 0.1]])
    teacher_b = logits_with([[0.8, 0.1, 0.1], [0.3, 0.2, 0.5]])
    hard = acs_weights([teacher_a, teacher_b], labels, "hard")
    target = acs_soft_target([teacher_a, teacher_b], labels, hard, temperature=1.0)
    # sample 0 copies teacher B; sample 1 is the one-hot label
    torch.testing.assert_close(target, torch.tensor([[0.8, 0.1, 0.1], [0.0, 1.0, 0.0]]))

    student = torch.zeros(2, 3)
    emb_a, emb_b = torch.tensor([[1.0, 1.0], [2.0, 2.0]]), torch.tensor([[3.0], [4.0]])
    classes_a = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 0.0]])
    classes_b = torch.tensor([[0.0], [6.0], [0.0]])
    projected = [torch.zeros(2, 2), torch.zeros(2, 1)]
    terms = acs_terms(student, projected, [teacher_a, teacher_b], [emb_a, emb_b], [classes_a, classes_b], labels,
                      mode="hard", temperature=1.0)
    # kd: sample 0 KL((.8,.1,.1) || uniform) = sum p ln(3p); sample 1 -ln(1/3); averaged
    kl0 = sum(p * math.log(3 * p) for p in (0.8, 0.1, 0.1))
    assert terms["acs_kd"].item() == pytest.approx((kl0 + LN3) / 2, abs=1e-6)
    # semantic: sample 0 matches teacher B's embedding 3 -> (0 - 3)^2 = 9; sample 1 matches the class
    # embeddings of y = 1 in both spaces: A (10, 0) -> 50, B 6 -> 36, each divided by the 2 spaces
    # batch means: 9 / 2 from teacher B, (50 / 2 + 36 / 2) / 2 from the ground truth
    assert terms["acs_semantic"].item() == pytest.approx(9 / 2 + (50 + 36) / 2 / 2)

def test_acs_without_the_one_hot_share_by_hand():
    labels = torch.tensor([0, 1])
    teacher_a = logits_with([[0.6, 0.3, 0.1], [0.8, 0.1, 0.1]])
    teacher_b = logits_with([[0.8, 0.1, 0.1], [0.3, 0.2, 0.5]])
    student = torch.zeros(2, 3)
    emb = [torch.zeros(2, 1), torch.zeros(2, 1)]
    classes = [torch.zeros(3, 1), torch.zeros(3, 1)]
    kl0 = sum(p * math.log(3 * p) for p in (0.8, 0.1, 0.1))
    # hard: sample 0 copies teacher B (weight 1); sample 1 has no right teacher, so no soft-label term at all
    hard = acs_terms(student, emb, [teacher_a, teacher_b], emb, classes, labels, mode="hard", temperature=1.0,
                     ground_truth="none")
    assert hard["acs_kd"].item() == pytest.approx(kl0 / 2, abs=1e-6)
    # soft: sample 0 weights (.375, .5) of the teachers: target (.375 A + .5 B) / .875, counted with .875;
    # sample 1: (.1 A + .2 B) / .3, counted with .3 / 1.1
    a, b = torch.tensor([[0.6, 0.3, 0.1], [0.8, 0.1, 0.1]]), torch.tensor([[0.8, 0.1, 0.1], [0.3, 0.2, 0.5]])
    t0, t1 = (0.375 * a[0] + 0.5 * b[0]) / 0.875, (0.1 * a[1] + 0.2 * b[1]) / 0.3
    kl = [float((t * torch.log(3 * t)).sum()) for t in (t0, t1)]
    soft = acs_terms(student, emb, [teacher_a, teacher_b], emb, classes, labels, mode="soft", temperature=1.0,
                     ground_truth="none")
    assert soft["acs_kd"].item() == pytest.approx((0.875 * kl[0] + 0.3 / 1.1 * kl[1]) / 2, abs=1e-5)
    with pytest.raises(ValueError):
        acs_terms(student, emb, [teacher_a], emb[:1], classes[:1], labels, ground_truth="smoothed")


def test_dkd_stays_exact_when_the_student_is_very_sure_and_ramps_in():
    """27 classes, the student sure of the target (logit 80, the rest 0), a uniform teacher, alpha 1, beta 0, T 4:
    TCKD by hand in float64 is about 255.4; the former 1 - p_target rounded to 0 and gave 423.2 with no gradient."""
    classes, temperature = 27, 4.0
    student = torch.zeros(1, classes)
    student[0, 0] = 80.0
    teacher = torch.zeros(1, classes)
    labels = torch.tensor([0])
    z = student.double()[0] / temperature
    log_all = torch.logsumexp(z, 0)
    log_s = torch.stack([z[0] - log_all, torch.logsumexp(z[1:], 0) - log_all])
    t = torch.tensor([1 / classes, (classes - 1) / classes], dtype=torch.float64)
    expected = float((t * (t.log() - log_s)).sum() * temperature**2)
    assert expected == pytest.approx(255.4, abs=0.1)
    sure = student.clone().requires_grad_(True)
    value = dkd_loss(sure, teacher, labels, alpha=1.0, beta=0.0, temperature=temperature)
    assert value.item() == pytest.approx(expected, rel=1e-5)
    value.backward()
    assert sure.grad.abs().sum() > 0  # a gradient pulls the student back towards the teacher
    from pskd.config import DistillConfig
    from pskd.distill.losses.dkd import DKD
    from pskd.distill.terms import TermContext

    term = DKD(TermContext(4, [], DistillConfig(), options={}))
    assert term.options.warmup == 20
    term.set_epoch(5)
    assert term.ramp == 0.25
    term.set_epoch(40)
    assert term.ramp == 1.0
