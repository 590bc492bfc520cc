"""The concept-geolocation pyfunc reads pixels exactly as training does (8-bit and 16-bit imagery)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.mark.parametrize("bands", [None, (3, 0, 1)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_pyfunc_pixels_match_training(dtype, bands):
    from urbanrepml.models.encoders.preprocess import prepare
    from urbanrepml.tracking.concept_pyfunc import _prepare

    rng = np.random.default_rng(0)
    high = 255 if dtype == np.uint8 else 9000  # 16-bit: Sentinel-2 reflectance x 10,000
    image = rng.integers(0, high, size=(40, 52, 4)).astype(dtype)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    served, trained = _prepare(image, 32, mean, std, bands), prepare(image, 32, mean, std, bands)
    assert served.shape == trained.shape == (3, 32, 32)
    torch.testing.assert_close(served, trained, rtol=0, atol=1e-6)
    if bands is not None:  # not the first three bands
        assert not torch.equal(served, prepare(image, 32, mean, std))
        with pytest.raises(ValueError, match="has 3 band"):
            _prepare(image[..., :3], 32, mean, std, bands)
    if dtype == np.uint16:  # stretched to the unit range, not divided by 255
        unit = served * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
        assert 0.0 <= float(unit.min()) and float(unit.max()) <= 1.0 + 1e-6
