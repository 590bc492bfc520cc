"""The ``difficulty`` stage: fingerprints, near-duplicates and difficulty bands of an image index, logged.

For the views of every identity with two or more views (:mod:`urbanrepml.tasks.place.data`):

- fingerprints (:mod:`urbanrepml.tasks.place.fingerprints`): 64-bit perceptual hash and a PCA of
  per-image z-scored thumbnails -> ``difficulty/fingerprints.parquet`` (``image_id``, ``identity``,
  ``phash``, ``pca_*``);
- near-duplicates: pairs whose hashes differ in at most ``dup_bits`` bits ->
  ``difficulty/near_duplicates.csv`` (``a``, ``b``, ``bits``, ``same_identity``) and counts;
- difficulty bands (:mod:`urbanrepml.tasks.place.bands`): a BallTree over the fingerprints (or the
  frozen ``encoder``'s features, ``space=features``); each view's ``neighbours`` nearest views of
  other identities cut into ``n_bands`` percentile bands, hardest first ->
  ``difficulty/bands.parquet`` (``anchor``, ``band``, ``rank``, ``neighbour``, ``distance``) and the
  median distance per band (``band_<b>_distance``).

Runs go to experiment ``urbanrepml-images-<dataset>``. The ``placeemb`` stage recomputes the bands over
its training identities only (held-out identities never give negatives).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.errors import UrbanReprError
from urbanrepml.params import logged, param
from urbanrepml.stages.base import Stage


@dataclass
class Params:
    """Parameters of the ``difficulty`` entry point."""

    dataset: str = param("naip_north_dakota", "an image index (name built by the images stage, or a parquet path)")
    space: str = param("fingerprint", "vectors of the BallTree: fingerprint (thumbnail PCA) or features (frozen encoder)",
                       choices=("fingerprint", "features"))
    encoder: str = param("efficientnet_lite0", "frozen encoder for space=features")
    weights: str | None = param(None, "weights file or model folder of the encoder")
    n_bands: int = param(7, "difficulty bands (hardest to easiest)")
    neighbours: int = param(70, "neighbours of other identities per view")
    dup_bits: int = param(4, "near-duplicate: largest Hamming distance of the 64-bit perceptual hashes")


def run_difficulty_stage(p: Params) -> dict:
    """Compute, write and log fingerprints, near-duplicates and bands; return the metrics."""
    import mlflow

    from urbanrepml.constants import DATASET, image_scope
    from urbanrepml.stages.placeemb import frozen_features, load_views
    from urbanrepml.tasks.place.bands import _check, band_summary, bands_frame, difficulty_bands
    from urbanrepml.tracking import configure_tracking, stage_run

    if p.n_bands < 1 or p.neighbours < 1:
        raise UrbanReprError(f"n_bands and neighbours must be >= 1, got {p.n_bands}, {p.neighbours}")
    if p.n_bands > p.neighbours:
        raise UrbanReprError(f"more bands ({p.n_bands}) than neighbours per anchor ({p.neighbours}); "
                             "lower n_bands or raise neighbours")
    configure_tracking()
    inputs = load_views(p.dataset, False, p.dup_bits, 8)
    views = inputs.views
    largest = int(np.bincount(views.codes).max())
    _check(p.n_bands, p.neighbours, len(views) - largest)  # before any run exists
    name = inputs.index.meta.dataset
    with stage_run("difficulty", image_scope(name), params=logged(p), tags={DATASET: name, "space": p.space},
                   run_name=f"difficulty-{p.space}") as run:
        start = time.perf_counter()
        x = inputs.fingerprints.pca if p.space == "fingerprint" else frozen_features(inputs, p.encoder, p.weights, None)
        bands = difficulty_bands(x, views.identity, p.n_bands, p.neighbours)
        dups = inputs.duplicates
        metrics = {"views": len(views), "identities": int(len(np.unique(views.codes))),
                   "excluded_single": views.excluded_single, "near_duplicate_pairs": len(dups),
                   "near_duplicate_pairs_same_identity": int(dups["same_identity"].sum()),
                   "near_duplicate_pairs_other_identity": int((~dups["same_identity"]).sum()), **band_summary(bands)}
        with tempfile.TemporaryDirectory() as tmp:
            fp = pd.DataFrame(inputs.fingerprints.pca, columns=[f"pca_{i}" for i in range(x.shape[1] if p.space == "fingerprint"
                                                                                           else inputs.fingerprints.pca.shape[1])])
            fp.insert(0, "phash", inputs.fingerprints.phash.view(np.int64))
            fp.insert(0, "identity", views.identity)
            fp.insert(0, "image_id", views.ids)
            fp.to_parquet(Path(tmp) / "fingerprints.parquet", index=False)
            dups.to_csv(Path(tmp) / "near_duplicates.csv", index=False)
            bands_frame(bands, views.ids).to_parquet(Path(tmp) / "bands.parquet", index=False)
            for f in ("fingerprints.parquet", "near_duplicates.csv", "bands.parquet"):
                mlflow.log_artifact(str(Path(tmp) / f), artifact_path="difficulty")
        metrics["seconds"] = time.perf_counter() - start
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        note = (f"{name}: {len(views)} views of {metrics['identities']} identities ({views.excluded_single} with one view "
                f"excluded); {len(dups)} near-duplicate pairs ({metrics['near_duplicate_pairs_same_identity']} within an "
                f"identity); {p.n_bands} bands of {p.neighbours} neighbours in {p.space} space, median distance "
                + " < ".join(f"{metrics[f'band_{b}_distance']:.2f}" for b in range(p.n_bands)))
        mlflow.set_tag("mlflow.note.content", note)
        print(note)
        print(f"run {run.info.run_id}")
    return metrics


def run(p: Params) -> dict:
    return run_difficulty_stage(p)


STAGES = {"difficulty": Stage("difficulty", "fingerprints (perceptual hash, thumbnail PCA), near-duplicates and "
                                            "difficulty bands of visual neighbours (BallTree), logged", Params, run)}
