"""Place embeddings: views, fingerprints, bands, samplers, metrics, gallery and a short training on tiny generated data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from urbanrepml.errors import UrbanReprError
from urbanrepml.tasks.place.bands import brute_force_neighbours, difficulty_bands
from urbanrepml.tasks.place.data import pixel_inputs, query_gallery, split_identities, views_from_frame
from urbanrepml.tasks.place.fingerprints import duplicates_to_drop, fingerprints, near_duplicates
from urbanrepml.tasks.place.gallery import Gallery
from urbanrepml.tasks.place.metrics import retrieval_metrics, retrieval_metrics_loop
from urbanrepml.tasks.place.sampler import UCB1Sampler, UniformSampler


def test_identities_with_one_view_are_excluded_and_counted(views_and_images):
    frame, _ = views_and_images
    extra = frame.iloc[:2].copy()
    extra.index = ["lonely_a", "lonely_b"]
    extra["identity"] = ["solo1", "solo2"]
    views = views_from_frame(pd.concat([frame, extra]))
    assert views.excluded_single == 2 and len(views) == len(frame)
    with pytest.raises(UrbanReprError, match="no identity has two or more views"):
        views_from_frame(extra)


def test_one_group_is_one_identity_when_the_index_has_none():
    frame = pd.DataFrame({"group": ["berlin"] * 3, "lat": [52.5] * 3, "lon": [13.4] * 3,
                          "captured_at": pd.NaT}, index=["01", "02", "03"])
    views = views_from_frame(frame)
    assert len(views) == 3 and len(set(views.identity)) == 1


def test_split_keeps_identities_whole_and_queries_the_latest_view(views_and_images):
    frame, _ = views_and_images
    views = views_from_frame(frame)
    labels = split_identities(views, "blocks", 0.3, 0.2, block_resolution=9, seed=0)
    assert set(labels) == {"train", "val", "test"}
    per_view = labels.reindex(views.identity).to_numpy()
    q, g = query_gallery(views, per_view == "test")
    assert len(q) == (labels == "test").sum() and len(g) == 3 * len(q)
    assert set(views.frame.index[q].str[:2]) == {"s3"}  # 2013, the latest view


def test_pixel_inputs_are_normalised_per_image_with_ndvi(views_and_images):
    _, images = views_and_images
    x = pixel_inputs(images[:3], size=8)
    assert x.shape == (3, 5, 8, 8)
    np.testing.assert_allclose(x.mean((2, 3)), 0, atol=1e-4)
    brighter = pixel_inputs([np.clip(images[0].astype(float) * 1.0 + 0, 0, 255).astype(np.uint8) // 2 * 2], size=8)
    assert np.corrcoef(brighter.ravel(), x[0].ravel())[0, 1] > 0.99


def test_near_duplicates_are_found_and_removable(views_and_images):
    frame, images = views_and_images
    views = views_from_frame(frame)
    images = list(images)
    images[1] = images[0].copy()  # a repeated view of p0
    fp = fingerprints(images, pca_dim=8)
    pairs = near_duplicates(fp, list(views.ids), views.identity, max_bits=0)
    assert ((pairs["a"] == views.ids[0]) & (pairs["b"] == views.ids[1])).any()
    assert duplicates_to_drop(pairs, list(views.ids)) == [views.ids[1]]


def test_bands_order_neighbours_of_other_identities_and_match_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    ident = np.repeat(np.arange(100), 3).astype(str)
    bands = difficulty_bands(x, ident, n_bands=5, neighbours=20)
    assert (ident[bands.neighbours] != ident[:, None]).all()
    np.testing.assert_array_equal(bands.neighbours, brute_force_neighbours(x, ident, 20))
    d = bands.distances
    assert np.all(d[:, bands.band_of_rank == 0].max(1) <= d[:, bands.band_of_rank == 4].min(1))


def test_more_bands_than_neighbours_is_one_clear_error():
    x = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(UrbanReprError, match="more bands"):
        difficulty_bands(x, np.repeat(np.arange(10), 2).astype(str), n_bands=8, neighbours=5)
    with pytest.raises(UrbanReprError, match="only"):
        difficulty_bands(x, np.repeat(np.arange(10), 2).astype(str), n_bands=2, neighbours=19)
    with pytest.raises(UrbanReprError, match="NaN"):
        difficulty_bands(np.full((4, 2), np.nan), np.arange(4).astype(str), n_bands=1, neighbours=2)


def test_ucb_prefers_the_informative_band_and_uniform_does_not():
    np.random.seed(0)
    rewards = np.array([0.9, 0.2, 0.1, 0.05])
    ucb, uni = UCB1Sampler(4, c=0.3), UniformSampler(4)
    for sampler in (ucb, uni):
        for _ in range(400):
            b = sampler.choose()
            sampler.update(b, float(np.clip(rewards[b] + np.random.normal(0, 0.05), 0, 1)))
    assert ucb.pulls[0] > 0.7 * 400 and (ucb.pulls > 0).all()
    assert uni.pulls.min() > 60
    stats = ucb.epoch_stats()
    assert stats["band_0_pulls"] == ucb.pulls[0] and 0.8 < stats["band_0_reward"] < 1.0
    assert ucb.epoch_stats()["band_0_pulls"] == 0  # a new epoch


def test_vectorised_metrics_equal_the_loop_and_cap_k_at_the_gallery():
    rng = np.random.default_rng(1)
    q, g = rng.normal(size=(15, 4)), rng.normal(size=(40, 4))
    qi, gi = rng.integers(0, 10, 15).astype(str), rng.integers(0, 10, 40).astype(str)
    a = retrieval_metrics(q, qi, g, gi, ks=(1, 5, 100))
    b = retrieval_metrics_loop(q, qi, g, gi, ks=(1, 5, 100))
    assert a == pytest.approx(b)
    assert a["recall_100"] == 1.0  # k above the gallery size: the whole gallery
    with pytest.raises(UrbanReprError, match="NaN"):
        retrieval_metrics(np.full((1, 4), np.nan), ["a"], g, gi)


def test_gallery_answers_top_k_and_refuses_k_above_its_size():
    e = np.eye(4, dtype=np.float32)
    gallery = Gallery(e, ["a", "b", "c", "d"])
    ids, scores = gallery.search(np.array([[0.1, 0.9, 0.0, 0.2]]), k=2)
    assert list(ids[0]) == ["b", "d"] and scores[0, 0] > scores[0, 1]
    with pytest.raises(UrbanReprError, match="cannot answer top-5"):
        gallery.search(e[:1], k=5)


def test_training_beats_nothing_and_the_sampler_sees_every_batch(views_and_images):
    from urbanrepml.tasks.place.task import PlaceConfig, PlaceData, embed, train_place_embedder

    frame, images = views_and_images
    views = views_from_frame(frame)
    x = pixel_inputs(images, size=8)
    feats = x.reshape(len(x), -1)
    labels = split_identities(views, "identity", 0.25, 0.25, seed=0).reindex(views.identity).to_numpy()
    vq, vg = query_gallery(views, labels == "val")
    data = PlaceData(feats, views.codes, np.flatnonzero(labels == "train"), vq, vg, fingerprints(images, 8).pca)
    cfg = PlaceConfig(model="place_mlp", model_config={"hidden": "32", "out_dim": 16}, batch_size=16, epochs=3,
                      n_bands=3, neighbours=9, lr=3e-3)
    result = train_place_embedder(data, cfg, progress=False)
    batches = sum(int(np.ceil(len(data.train) / 16)) for _ in range(3))
    assert result.task.sampler.pulls.sum() == batches
    h = result.fit.history[-1]
    assert {"val_recall_1", "val_map", "band_0_reward", "band_2_pulls"} <= set(h)
    assert result.fit.best_value == max(r["val_recall_1"] for r in result.fit.history)
    e = embed(result.model, feats)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    with pytest.raises(UrbanReprError, match="NaN"):
        bad = feats.copy()
        bad[0, 0] = np.nan
        train_place_embedder(PlaceData(bad, *list(data.__dict__.values())[1:]), cfg, progress=False)


def test_a_resumed_run_continues_the_bandit_where_it_stopped(views_and_images):
    import io

    import torch

    from urbanrepml.tasks.place.task import PlaceConfig, PlaceData, train_place_embedder
    from urbanrepml.training import TrainHooks

    class Keep(TrainHooks):
        def __init__(self):
            self.saved = {}

        def checkpoint(self, state, epoch):
            buffer = io.BytesIO()
            torch.save(state, buffer)
            self.saved[epoch] = buffer.getvalue()

    frame, images = views_and_images
    views = views_from_frame(frame)
    feats = pixel_inputs(images, size=8).reshape(len(images), -1)
    labels = split_identities(views, "identity", 0.25, 0.25, seed=0).reindex(views.identity).to_numpy()
    vq, vg = query_gallery(views, labels == "val")
    data = PlaceData(feats, views.codes, np.flatnonzero(labels == "train"), vq, vg, fingerprints(images, 8).pca)
    cfg = PlaceConfig(model="place_mlp", model_config={"hidden": "32", "out_dim": 16}, batch_size=16, epochs=3,
                      n_bands=3, neighbours=9, lr=3e-3, checkpoint_every=1, device="cpu")
    hooks = Keep()
    whole = train_place_embedder(data, cfg, hooks, progress=False)
    at1 = torch.load(io.BytesIO(hooks.saved[1]), weights_only=True)
    per_epoch = int(np.ceil(len(data.train) / 16))
    assert sum(at1["task_state"]["sampler"]["pulls"]) == per_epoch
    resumed = train_place_embedder(data, cfg, progress=False, resume_state=at1)
    np.testing.assert_array_equal(resumed.task.sampler.pulls, whole.task.sampler.pulls)
    np.testing.assert_allclose(resumed.task.sampler.rewards, whole.task.sampler.rewards)
    assert resumed.task.sampler.pulls.sum() == 3 * per_epoch and resumed.fit.best_value == whole.fit.best_value
