"""The distance-aware soft target and the mixed loss, checked against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from urbanrepml.errors import UrbanReprError
from urbanrepml.geodesy import haversine_km
from urbanrepml.tasks.geoloc.losses import geoloc_loss, soft_targets


def test_soft_targets_by_hand():
    # centroids on the equator, 0, 0.01 and 0.02 degrees east: ~1.112 km apart
    c_lat, c_lon = np.zeros(3), np.array([0.0, 0.01, 0.02])
    step = float(haversine_km(0, 0, 0, 0.01))
    p = soft_targets([0.0], [0.0], c_lat, c_lon, tau_km=step)
    w = np.exp([0.0, -1.0, -2.0])
    np.testing.assert_allclose(p[0], w / w.sum(), rtol=1e-5)
    assert p[0].sum() == pytest.approx(1.0)
    sharp = soft_targets([0.0], [0.0], c_lat, c_lon, tau_km=1e-3)
    np.testing.assert_allclose(sharp[0], [1.0, 0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan")])
def test_tau_must_be_positive(tau):
    with pytest.raises(UrbanReprError, match="tau_km"):
        soft_targets([0.0], [0.0], [0.0, 1.0], [0.0, 1.0], tau)


def test_mixed_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    logp = np.log(np.exp([2.0, 0.0, -1.0]) / np.exp([2.0, 0.0, -1.0]).sum())
    soft = torch.tensor([[0.5, 0.3, 0.2]])
    label = torch.tensor([1])
    ce = -logp[1]
    h = -(0.5 * logp[0] + 0.3 * logp[1] + 0.2 * logp[2])
    assert float(geoloc_loss(logits, label, soft, 1.0)) == pytest.approx(ce, rel=1e-6)
    assert float(geoloc_loss(logits, label, soft, 0.0)) == pytest.approx(h, rel=1e-6)
    assert float(geoloc_loss(logits, label, soft, 0.25)) == pytest.approx(0.25 * ce + 0.75 * h, rel=1e-6)
    # parent term: classes 0 and 1 share parent 0, class 2 is parent 1; the true class 1 -> parent 0
    parent = torch.tensor([0, 0, 1])
    p = np.exp(logp)
    expected = ce + 0.5 * -math.log(p[0] + p[1])
    assert float(geoloc_loss(logits, label, soft, 1.0, parent, 2, 0.5)) == pytest.approx(expected, rel=1e-6)
