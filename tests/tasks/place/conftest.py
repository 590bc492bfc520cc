"""Fixtures of the place-embedding task tests: generated identities with several noisy views each."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def place_views(n_identities: int = 24, views: int = 4, side: int = 8, noise: float = 0.3, seed: int = 0):
    """A frame in index layout (identity, lat/lon on a small grid, yearly dates) and its ``(H, W, 4)`` uint8 images."""
    rng = np.random.default_rng(seed)
    bases = rng.uniform(40, 215, size=(n_identities, side, side, 4))
    rows, images = [], []
    for i in range(n_identities):
        for v in range(views):
            img = bases[i] * rng.uniform(0.8, 1.2) + rng.normal(0, noise * 40, size=bases[i].shape)
            images.append(np.clip(img, 1, 255).astype(np.uint8))
            rows.append({"image_id": f"s{v}_p{i}", "identity": f"p{i}", "lat": 47.0 + 0.004 * (i // 6),
                         "lon": -99.2 + 0.004 * (i % 6), "captured_at": pd.Timestamp(2010 + v, 7, 1), "group": f"s{v}"})
    return pd.DataFrame(rows).set_index("image_id"), images


@pytest.fixture
def views_and_images():
    return place_views()
