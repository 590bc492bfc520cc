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


@pytest.mark.parametrize("cache_bytes", [1 << 30, 0])  # the scene read once and kept, or read window by window
def test_windows_with_context_match_between_training_and_pyfunc(tmp_path, cache_bytes):
    import rasterio
    from rasterio.transform import from_origin

    from urbanrepml.sources.imagery.decode import ImageLoader
    from urbanrepml.tracking.concept_pyfunc import _load_pixels

    scene = np.random.default_rng(1).integers(1, 255, size=(4, 40, 50)).astype(np.uint8)
    path = tmp_path / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", width=50, height=40, count=4, dtype="uint8", crs="EPSG:4326",
                       transform=from_origin(10.0, 50.0, 1e-4, 1e-4)) as dst:
        dst.write(scene)
    loader = ImageLoader(max_cache_bytes=cache_bytes)
    for window in [(0, 0, 16, 16), (20, 10, 16, 16), (34, 24, 16, 16)]:  # corner, inside, the far corner
        trained = loader.load(str(path), window, context=8)
        served = _load_pixels(str(path), ",".join(map(str, window)), 8)
        assert trained.shape == served.shape == (32, 32, 4)
        np.testing.assert_array_equal(trained, served)
        c, r, w, h = window
        np.testing.assert_array_equal(trained[8:24, 8:24], scene[:, r:r + h, c:c + w].transpose(1, 2, 0))
    corner = loader.load(str(path), (0, 0, 16, 16), context=8)
    assert (corner[:8] == 0).all() and (corner[:, :8] == 0).all()  # zeros beyond the scene's edge
    np.testing.assert_array_equal(corner[8:, 8:], scene[:, :24, :24].transpose(1, 2, 0))
