"""The ``geolocate_eval`` stage: a registered geolocator on an image dataset, scored in km and cells.

``model_uri`` (default ``models:/urbanrepml-geoloc-<dataset>@champion``, else ``@candidate``) must be a
geolocator (its logged metadata says family ``geoloc``; anything else is refused with one line before
any image is read). The images of ``split`` (``test`` by default; ``all`` for every image) of the
dataset's index, splits assigned as by ``geolocate`` (``split_method``), go through the pyfunc model
(paths and windows, exactly as a user would call it); metrics ``<split>_acc_top1/5/10``,
``<split>_mean_km``... as in ``geolocate``, the true cell being the model's class containing the image.
Logged: the metrics, ``predictions.parquet``, the error map and ``REPORT.md``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from urbanrepml.errors import UrbanReprError
from urbanrepml.params import logged, param
from urbanrepml.stages.base import Stage
from urbanrepml.stages.geolocate import SPLIT_METHODS


@dataclass
class Params:
    """Parameters of the ``geolocate_eval`` entry point."""

    dataset: str = param("naip_north_dakota", "an image index (name or parquet file)")
    model_uri: str | None = param(None, "the geolocator (default: urbanrepml-geoloc-<dataset> @champion, else @candidate)")
    split: str = param("test", "images scored: train, val, test or all", choices=("train", "val", "test", "all"))
    split_method: str = param("time", "how splits are assigned (as geolocate)", choices=SPLIT_METHODS)
    train_until: str = param("2016", "split time: last year/month/date of training")
    val_until: str = param("2018", "split time: last year/month/date of validation")
    ratios: str = param("0.6,0.2,0.2", "split group/blocks/segments: shares")
    segment_size: int = param(5, "split segments: images per segment")
    seed: int = param(0, "split hash salt")
    top_k: int = param(5, "cells returned per image")
    predict: str = param("top1", "predicted point: top1 or topk_mean", choices=("top1", "topk_mean"))


def run_geolocate_eval_stage(p: Params) -> dict:
    import json

    import mlflow
    import pandas as pd

    from urbanrepml.constants import DATASET, image_scope
    from urbanrepml.geodesy import scale_thresholds
    from urbanrepml.stages.geolocate import Params as TrainParams
    from urbanrepml.stages.geolocate import error_map, load_index
    from urbanrepml.tasks.geoloc.classes import CellClasses
    from urbanrepml.tasks.geoloc.predict import evaluate_scores
    from urbanrepml.tracking import configure_tracking, stage_run
    from urbanrepml.tracking.figure_png import write_png
    from urbanrepml.tracking.geoloc import require_geolocator, resolve_geoloc_uri

    if p.top_k < 1:
        raise UrbanReprError(f"parameter top_k must be >= 1, got {p.top_k}")
    configure_tracking()
    index, rows = load_index(TrainParams(dataset=p.dataset, split=p.split_method, train_until=p.train_until,
                                         val_until=p.val_until, ratios=p.ratios, segment_size=p.segment_size, seed=p.seed))
    name = index.meta.dataset
    uri, note = resolve_geoloc_uri(name, p.model_uri)
    meta = require_geolocator(uri)
    r = np.arange(len(index.frame)) if p.split == "all" else rows[p.split]
    frame = index.frame.iloc[r]
    model = mlflow.pyfunc.load_model(uri)
    classes = CellClasses.from_dict(json.loads(meta["classes_json"])) if "classes_json" in meta else None
    with stage_run("geolocate_eval", image_scope(name), params=logged(p), tags={DATASET: name},
                   run_name="geolocate-eval") as run:
        start = time.perf_counter()
        mlflow.set_tag("urbanrepml.model_uri", uri)
        query = pd.DataFrame({"path": index.image_paths()[r], "window": frame["window"].to_numpy()}, index=frame.index)
        out = model.predict(query, params={"k": p.top_k, "predict": p.predict})
        lat, lon = frame["lat"].to_numpy(np.float64), frame["lon"].to_numpy(np.float64)
        if classes is None:
            raise UrbanReprError(f"model {uri!r} carries no classes in its metadata; retrain it with geolocate")
        labels = classes.label(lat, lon)
        k = min(p.top_k, classes.n)
        pos = {c: i for i, c in enumerate(classes.cells)}
        scores = np.zeros((len(out), classes.n))
        for j in range(k):
            scores[np.arange(len(out)), [pos[c] for c in out[f"cell_{j + 1}"]]] = out[f"prob_{j + 1}"].to_numpy()
        thresholds = scale_thresholds(index.frame["lat"], index.frame["lon"])
        metrics, err = evaluate_scores(scores, labels, lat, lon, classes.lat, classes.lon, thresholds,
                                       points=(out["lat"].to_numpy(), out["lon"].to_numpy()))
        metrics = {f"{p.split}_{key}": v for key, v in metrics.items()}
        metrics["images"] = len(out)
        metrics["seconds"] = time.perf_counter() - start
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            out.assign(true_lat=lat, true_lon=lon, error_km=err).to_parquet(tmp / "predictions.parquet")
            fig = error_map(lat, lon, err, out["lat"].to_numpy(), out["lon"].to_numpy(),
                            f"{name} ({p.split}): errors of {uri}")
            fig.write_html(tmp / "geoloc_errors.html", include_plotlyjs=True, full_html=True)
            write_png(fig, tmp / "geoloc_errors.png")
            report = (f"# Geolocator {uri} on {name} ({p.split}, {len(out)} images)\n\n{note}\n\n| metric | value |\n|---|---|\n"
                      + "\n".join(f"| {key} | {v:.4g} |" for key, v in metrics.items()) + "\n")
            (tmp / "REPORT.md").write_text(report)
            mlflow.log_artifact(str(tmp / "predictions.parquet"))
            mlflow.log_artifact(str(tmp / "REPORT.md"))
            mlflow.log_artifact(str(tmp / "geoloc_errors.html"), artifact_path="figures")
            mlflow.log_artifact(str(tmp / "geoloc_errors.png"), artifact_path="figures")
        print(report)
        print(f"run {run.info.run_id}")
    return metrics


def run(p: Params):
    return run_geolocate_eval_stage(p)


STAGES = {"geolocate_eval": Stage("geolocate_eval", "score a registered image geolocator on a dataset (km and cell "
                                                    "accuracy, error map)", Params, run)}
