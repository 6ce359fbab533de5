"""Mask losses against values worked out by hand (issue 12: an alpha swap or a dropped term must fail).

Each expected value is written from the formula (Lin et al.'s sigmoid focal loss, soft Dice with
+1 smoothing, cosine distance) with `math`, never by calling the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from splatseg.train.losses import (dice_loss, focal_loss, focal_loss_to_zero, pairwise_cosine_cost, pairwise_dice_cost,
                                   pairwise_focal_cost)


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def focal_pos(x: float, alpha: float, gamma: float) -> float:
    """-alpha (1 - p)^gamma log p: an entry whose target is 1."""
    p = sig(x)
    return -alpha * (1 - p) ** gamma * math.log(p)


def focal_neg(x: float, alpha: float, gamma: float) -> float:
    """-(1 - alpha) p^gamma log(1 - p): an entry whose target is 0."""
    p = sig(x)
    return -(1 - alpha) * p**gamma * math.log(1 - p)


LOGITS = [[0.0, 2.0, -1.0], [1.5, -3.0, 0.5]]
TARGETS = [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (0.25, 1.0), (0.6, 3.0)])
def test_focal_loss_equals_the_formula(alpha, gamma):
    expected = sum(focal_pos(x, alpha, gamma) if t else focal_neg(x, alpha, gamma)
                   for row, trow in zip(LOGITS, TARGETS) for x, t in zip(row, trow)) / 6
    got = focal_loss(torch.tensor(LOGITS), torch.tensor(TARGETS), alpha, gamma).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_focal_loss_default_weights_positives_by_a_quarter():
    # at logit 0 (p = 1/2) both terms are w * 1/4 * ln 2: alpha = 0.25 on a positive, 0.75 on a negative
    assert focal_loss(torch.zeros(1, 1), torch.ones(1, 1)).item() == pytest.approx(0.25 * 0.25 * math.log(2), rel=1e-6)
    assert focal_loss(torch.zeros(1, 1), torch.zeros(1, 1)).item() == pytest.approx(0.75 * 0.25 * math.log(2), rel=1e-6)


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (0.4, 1.5)])
def test_focal_loss_to_zero_equals_the_formula(alpha, gamma):
    expected = sum(focal_neg(x, alpha, gamma) for row in LOGITS for x in row) / 6
    got = focal_loss_to_zero(torch.tensor(LOGITS), alpha, gamma).item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert focal_loss_to_zero(torch.zeros(1, 1)).item() == pytest.approx(0.75 * 0.25 * math.log(2), rel=1e-6)


def test_dice_loss_equals_the_formula():
    expected = 0.0
    for row, trow in zip(LOGITS, TARGETS):
        p = [sig(x) for x in row]
        inter = sum(a * b for a, b in zip(p, trow))
        expected += 1 - (2 * inter + 1) / (sum(p) + sum(trow) + 1)
    got = dice_loss(torch.tensor(LOGITS), torch.tensor(TARGETS)).item()
    assert got == pytest.approx(expected / 2, rel=1e-5)


def test_pairwise_costs_equal_the_formula_for_every_pair():
    targets = [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    focal = pairwise_focal_cost(torch.tensor(LOGITS), torch.tensor(targets), 0.25, 2.0)
    dice = pairwise_dice_cost(torch.tensor(LOGITS), torch.tensor(targets))
    assert focal.shape == dice.shape == (2, 4)
    for k, row in enumerate(LOGITS):
        p = [sig(x) for x in row]
        for m, t in enumerate(targets):
            f = sum(focal_pos(x, 0.25, 2.0) if ti else focal_neg(x, 0.25, 2.0) for x, ti in zip(row, t)) / 3
            d = 1 - (2 * sum(a * b for a, b in zip(p, t)) + 1) / (sum(p) + sum(t) + 1)
            assert focal[k, m].item() == pytest.approx(f, rel=1e-5), (k, m)
            assert dice[k, m].item() == pytest.approx(d, rel=1e-5), (k, m)


def test_pairwise_cosine_cost_equals_one_minus_the_cosine():
    pred = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    target = torch.tensor([[0.0, 2.0], [-1.0, 0.0], [4.0, 3.0]])
    expected = [[1 - 0.8, 1 + 0.6, 1 - 0.96], [1 - 0.0, 2.0, 1 - 0.8]]
    np.testing.assert_allclose(pairwise_cosine_cost(pred, target).numpy(), expected, atol=1e-6)


# ----------------------------------------------------------------------------- the training step


class _IdentityRenderer:
    """A 'view' whose P pixels show one Gaussian each: the rendered feature map is the features."""

    def features(self, per_gaussian):
        return per_gaussian


def test_step_loss_matches_one_query_and_pushes_the_unmatched_one_to_zero():
    from splatseg.train import TrainConfig
    from splatseg.train.trainer import FeatureField, TrainView, step_loss

    model = FeatureField(4, 2, 2, None, torch.Generator().manual_seed(0))
    with torch.no_grad():  # logits = queries @ features.T + bias, worked out below
        model.features.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]))
        model.queries.copy_(torch.tensor([[3.0, -1.0], [0.0, 2.0]]))
        model.query_bias.copy_(torch.tensor([-1.0, -0.5]))
    target = [1.0, 1.0, 0.0, 0.0]  # query 0 (logits 2, 2, -2, -2) fits it; query 1 (-0.5, -0.5, 1.5, 1.5) does not
    view = TrainView("v", _IdentityRenderer(), torch.tensor([target]), None)
    cfg = TrainConfig(out="unused", pixels_per_step=0)
    loss = step_loss(model, view, cfg)

    l0, l1 = [2.0, 2.0, -2.0, -2.0], [-0.5, -0.5, 1.5, 1.5]
    focal0 = sum(focal_pos(x, 0.25, 2.0) if t else focal_neg(x, 0.25, 2.0) for x, t in zip(l0, target)) / 4
    p0 = [sig(x) for x in l0]
    dice0 = 1 - (2 * sum(a * b for a, b in zip(p0, target)) + 1) / (sum(p0) + sum(target) + 1)
    to_zero1 = sum(focal_neg(x, 0.25, 2.0) for x in l1) / 4
    expected = cfg.focal_weight * focal0 / 2 + cfg.dice_weight * dice0 + cfg.focal_weight * to_zero1 / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)

    loss.backward()
    assert model.query_bias.grad[1].item() > 0  # descending lowers the unmatched query's logits
    assert model.query_bias.grad[1].item() == pytest.approx(
        cfg.focal_weight / 2 / 4 * sum(_d_focal_neg(x) for x in l1), rel=1e-4)


def _d_focal_neg(x: float, alpha: float = 0.25) -> float:
    """d/dx of -(1 - alpha) p^2 log(1 - p), p = sigmoid(x)."""
    p = sig(x)
    return -(1 - alpha) * (2 * p * p * (1 - p) * math.log(1 - p) - p * p * p)
