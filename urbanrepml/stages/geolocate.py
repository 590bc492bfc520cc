"""The ``geolocate`` stage: train an image geolocator over H3 cells, evaluate it against baselines, register it.

Steps (one MLflow run, stage ``geolocate``, experiment ``urbanrepml-images-<dataset>``; bad input fails
with one line before anything is trained or registered):

1. Images: the index of ``dataset`` (built first by the ``images`` stage when a registered dataset has
   none: chips of ``chip_px`` for rasters, EXIF photos otherwise), splits by ``split``: ``index`` (as
   built), ``time`` (``train_until`` / ``val_until``), ``group``, ``blocks``, or ``segments`` (each
   sequence cut in capture order into runs of ``segment_size`` images, whole runs split by hash).
   Train, val and test must each hold images.
2. Classes (:mod:`urbanrepml.tasks.geoloc.classes`): H3 cells at ``resolution`` over the training
   images; cells with fewer than ``min_cell_samples`` merge into their parents, recursively.
3. Model on the generic loop (:mod:`urbanrepml.tasks.geoloc.task`): ``geoloc_cnn`` on pixels (from
   scratch; jittered windows) or ``geoloc_head`` on pooled features of the frozen ``encoder`` (cached
   once per dataset, the ``embed_images`` cache). Loss: CE mixed with the distance-aware soft target
   (``tau_km``, ``mix_ce``), optional parent-cell term (``hier_weight``). The checkpoint kept is the epoch
   with the lowest validation median error (``val_median_km``), the metric promotion reads. With
   ``tune`` > 0, an Optuna study (nested runs, per-epoch pruning) over lr, tau_km, mix_ce, resolution and
   dropout first; the best trial's model is kept.
4. Evaluation: validation metrics of the kept epoch, then the test split once: ``test_acc_top1/5/10``,
   ``test_mean_km``/``median``/``p90``/``p95``, ``test_acc_<t>km``. Baselines on the same split and
   classes, always: ``knn1``, ``knn<knn_k>`` (frozen features), ``pixels_knn1`` (the nearest training image
   by the very pixels ``geoloc_cnn`` sees: ``input_px``, ``bands``, ``normalise``, ``context``) and
   ``majority`` (``<name>_val_*``, ``<name>_test_*``). Error map (``figures/geoloc_errors.html``, self-contained, and ``.png``) and
   ``REPORT.md``.
5. Model: ``model/geoloc.pt`` (weights, classes, configuration) and the pyfunc ``geoloc_model``; once
   the run has FINISHED, version of ``urbanrepml-geoloc-<dataset>`` (alias ``candidate``) with the test
   metrics as tags, and the promotion policy (:mod:`urbanrepml.tracking.geoloc`: ``val_median_km``,
   ``min_gain_km``).
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from urbanrepml.errors import UrbanReprError
from urbanrepml.params import logged, param
from urbanrepml.stages.base import Stage

SPLIT_METHODS = ("index", "time", "group", "blocks", "segments")
MODELS = ("geoloc_cnn", "geoloc_head")


@dataclass
class Params:
    """Parameters of the ``geolocate`` entry point."""

    dataset: str = param("naip_north_dakota", "an image index (built by the images stage, or a registered dataset), "
                                              "or an index parquet file")
    kind: str = param("chips", "when the index must be built: chips (raster scenes) or photos (EXIF)")
    chip_px: int = param(32, "when the index must be built: chip side in pixels")
    split: str = param("time", "train/val/test: index (as built), time, group, blocks or segments", choices=SPLIT_METHODS)
    train_until: str = param("2016", "split time: last year/month/date of training")
    val_until: str = param("2018", "split time: last year/month/date of validation")
    ratios: str = param("0.6,0.2,0.2", "split group/blocks/segments: train,val,test shares")
    block_resolution: int = param(6, "split blocks: H3 resolution of the blocks")
    segment_size: int = param(5, "split segments: images per sequence segment")
    resolution: int = param(9, "H3 resolution of the classes")
    min_cell_samples: int = param(1, "cells with fewer training images merge into their parent (recursively)")
    centroid: str = param("mean", "a class's point: mean (spherical mean of its training images) or center (H3 centre)",
                          choices=("mean", "center"))
    model: str = param("geoloc_cnn", "geoloc_cnn (pixels, from scratch) or geoloc_head (frozen encoder features)",
                       choices=MODELS)
    encoder: str = param("efficientnet_lite0", "frozen encoder of geoloc_head and of the kNN baselines")
    encoder_input_size: int = param(64, "input side of the frozen encoder (0: its default)")
    input_px: int = param(32, "geoloc_cnn: input side in pixels")
    bands: int = param(4, "geoloc_cnn: bands used (NAIP: R, G, B, NIR); fewer when the images have fewer")
    normalise: str = param("chip", "geoloc_cnn: chip (standardise each band of each chip) or unit (/255)",
                           choices=("chip", "unit"))
    jitter_px: int = param(6, "geoloc_cnn: training windows shifted by up to this many pixels (orientation kept)")
    context: int = param(32, "pixels of surroundings added on each side of a raster window before it is resized to "
                             "input_px (geoloc_cnn and the pixel baseline; 0: the chip alone; photos are used whole)")
    width: int = param(32, "geoloc_cnn: channels of the first conv block (doubling per block)")
    hidden: int = param(512, "geoloc_head: hidden width (0: linear)")
    dropout: float = param(0.3, "dropout before the classifier")
    tau_km: float = param(0.25, "soft target: p_j ∝ exp(-d(image, centroid_j) / tau_km)")
    mix_ce: float = param(0.5, "weight of plain cross-entropy (1 - mix_ce: the soft target)")
    hier_weight: float = param(0.0, "weight of the parent-cell cross-entropy (0: off)")
    top_k: int = param(5, "cells returned per image; topk_mean averages their centroids")
    predict: str = param("top1", "predicted point: top1 (top cell's centroid) or topk_mean", choices=("top1", "topk_mean"))
    knn_k: int = param(10, "distance-weighted kNN baseline: neighbours")
    batch_size: int = param(64, "images per batch")
    lr: float = param(2e-3, "peak learning rate (AdamW, warm-up + cosine)")
    epochs: int = param(20, "epochs")
    patience: int = param(0, "early stopping: epochs without a lower val_median_km (0: off)")
    seed: int = param(0, "training seed (and the split hash)")
    tune: int = param(0, "Optuna trials (nested runs, pruning on val_median_km; 0: train the given configuration)")
    register: bool = param(True, "register the model as urbanrepml-geoloc-<dataset> (alias candidate)")
    min_gain_km: float = param(0.0, "promotion: val_median_km improvement over the champion needed to move it")

    def check(self) -> None:
        """Every parameter that can be checked before reading data (one clear line each)."""
        if not (math.isfinite(self.tau_km) and self.tau_km > 0):
            raise UrbanReprError(f"parameter tau_km must be a positive number of kilometres, got {self.tau_km}")
        if not 0 <= self.mix_ce <= 1:
            raise UrbanReprError(f"parameter mix_ce must be in [0, 1], got {self.mix_ce}")
        if not 0 <= self.resolution <= 15:
            raise UrbanReprError(f"parameter resolution must be an H3 resolution (0-15), got {self.resolution}")
        for name in ("epochs", "top_k", "knn_k", "min_cell_samples", "width", "bands"):
            if getattr(self, name) < 1:
                raise UrbanReprError(f"parameter {name} must be >= 1, got {getattr(self, name)}")
        if self.context < 0:
            raise UrbanReprError(f"parameter context must be >= 0 pixels, got {self.context}")
        if self.tune < 0:
            raise UrbanReprError(f"parameter tune must be >= 0 (trials), got {self.tune}")
        if not (math.isfinite(self.min_gain_km) and self.min_gain_km >= 0):
            raise UrbanReprError(f"parameter min_gain_km must be a finite number >= 0, got {self.min_gain_km}")
        if not 0 <= self.dropout < 1:
            raise UrbanReprError(f"parameter dropout must be in [0, 1), got {self.dropout}")
        self.config()

    def model_config(self) -> dict:
        if self.model == "geoloc_cnn":
            return {"width": self.width, "dropout": self.dropout}
        return {"hidden": self.hidden, "dropout": self.dropout}

    def config(self):
        from urbanrepml.tasks.geoloc.task import GeolocConfig

        return GeolocConfig(model=self.model, model_config=self.model_config(), tau_km=self.tau_km, mix_ce=self.mix_ce,
                            hier_weight=self.hier_weight, batch_size=self.batch_size, lr=self.lr, epochs=self.epochs,
                            patience=self.patience, jitter_px=self.jitter_px if self.model == "geoloc_cnn" else 0,
                            top_k=self.top_k, predict=self.predict, checkpoint_every=max(1, min(5, self.epochs)),
                            seed=self.seed)


# ---------------------------------------------------------------------------------------------- data


def load_index(p: Params):
    """The index (built first for a registered dataset without one), its splits assigned by ``p.split``."""
    from urbanrepml.analysis.splits import assign_splits, parse_ratios, sequence_segments, split_by_group
    from urbanrepml.images import read_index, text_column
    from urbanrepml.stages.embed_images import resolve_index
    from urbanrepml.stages.images import index_path

    path = Path(p.dataset).expanduser()
    if not path.is_file() and not index_path(p.dataset).is_file():
        from urbanrepml.datasets import list_datasets

        if p.dataset not in list_datasets():
            resolve_index(p.dataset)  # the one-line error naming what is missing
        from urbanrepml.stages.images import Params as ImagesParams
        from urbanrepml.stages.images import run_images_stage

        run_images_stage(ImagesParams(dataset=p.dataset, kind=p.kind, chip_px=p.chip_px, split="none"))
    index = read_index(resolve_index(p.dataset))
    frame = index.frame
    if p.split == "time":
        split = assign_splits(frame, "time", train_until=p.train_until, val_until=p.val_until)
    elif p.split in ("group", "blocks"):
        split = assign_splits(frame, p.split, ratios=p.ratios, block_resolution=p.block_resolution, salt=str(p.seed))
    elif p.split == "segments":
        units = sequence_segments(frame, p.segment_size)
        split = split_by_group(frame.assign(group=units), parse_ratios(p.ratios), str(p.seed))
    else:
        split = frame["split"]
    frame["split"] = text_column(split, frame.index)
    rows = {s: np.flatnonzero((frame["split"] == s).to_numpy()) for s in ("train", "val", "test")}
    empty = [s for s, r in rows.items() if len(r) == 0]
    if empty:
        raise UrbanReprError(f"{index.meta.dataset}: split {p.split!r} leaves no {' and no '.join(empty)} images "
                             f"({', '.join(f'{s} {len(r)}' for s, r in rows.items())}); choose other split settings")
    return index, rows


def split_digest(index, rows: dict, classes_json: str) -> str:
    """Digest of the images of each split and the classes: versions are comparable only when it is equal."""
    h = hashlib.sha256()
    for s in ("train", "val"):
        h.update(f"{s}:".encode() + "\n".join(map(str, index.frame.index[rows[s]])).encode())
    h.update(classes_json.encode())
    return h.hexdigest()


def features(index, p: Params) -> tuple[np.ndarray, object, bool]:
    """Frozen-encoder features of every image (the ``embed_images`` cache), the encoder, and whether it was a cache hit."""
    from urbanrepml.models.encoders import get_encoder
    from urbanrepml.stages.embed_images import cache_path, load_cached
    from urbanrepml.tasks.geoloc.data import frozen_features

    encoder = get_encoder(p.encoder, input_size=p.encoder_input_size or None)
    path = cache_path(index, encoder)
    hit = load_cached(path, index, encoder.embed_dim) is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    feats, encoder = frozen_features(index, p.encoder, p.encoder_input_size, cache_file=path)
    return feats, encoder, hit


# ---------------------------------------------------------------------------------------------- training


def build_data(index, rows, lat, lon, p: Params, inputs, thresholds):
    from urbanrepml.tasks.geoloc.task import GeolocData

    return GeolocData(inputs, lat, lon, rows["train"], rows["val"], thresholds)


def tune_and_train(p: Params, data, lat, lon):
    """An Optuna study of ``p.tune`` trials (nested runs) over lr, tau_km, mix_ce, resolution, dropout."""
    import mlflow
    import optuna

    from urbanrepml.tasks.geoloc.classes import build_classes
    from urbanrepml.tasks.geoloc.search import suggest
    from urbanrepml.tasks.geoloc.task import train_geolocator
    from urbanrepml.tracking import tag
    from urbanrepml.tracking.checkpoints import TrialHooks

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=p.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=max(1, p.epochs // 4)))
    best: dict = {}
    base = p.config()

    def objective(trial):
        cfg, resolution, values = suggest(trial, base, p.resolution)
        classes = build_classes(lat[data.train], lon[data.train], resolution, p.min_cell_samples, p.centroid)
        with mlflow.start_run(nested=True, run_name=f"geolocate-trial-{trial.number}") as run:
            mlflow.set_tags({tag("stage"): "geolocate_trial", tag("model"): cfg.model, tag("trial"): str(trial.number)})
            mlflow.log_params({f"trial.{k}": v for k, v in values.items()})
            try:
                result = train_geolocator(data, classes, cfg,
                                          hooks=TrialHooks(trial, run.info.run_id, "val_median_km"), progress=False)
            except optuna.TrialPruned:
                mlflow.end_run(status="KILLED")
                raise
            value = float(result.fit.best_value)
            mlflow.log_metrics({"best_val_median_km": value, "best_epoch": result.fit.best_epoch})
        if not best or value < best["value"]:
            best.update(value=value, result=result, classes=classes, number=trial.number, values=values)
        return value

    study.optimize(objective, n_trials=p.tune)
    if not best:
        raise UrbanReprError(f"no tuning trial finished (all {p.tune} were pruned); raise tune or epochs")
    mlflow.log_params({f"tuned.{k}": v for k, v in best["values"].items()})
    mlflow.log_metrics({"tune_trials": len(study.trials), "tune_best_trial": best["number"]})
    return best["result"], best["classes"]


# ---------------------------------------------------------------------------------------------- evaluation


def evaluate_all(result, classes, data, feats, pixels, index, rows, lat, lon, p: Params) -> tuple[dict, dict]:
    """Model metrics (val of the kept epoch and test, once) and baselines; also the test predictions for the map."""
    from urbanrepml.tasks.geoloc.baselines import cosine_neighbours, knn_scores, majority_scores
    from urbanrepml.tasks.geoloc.predict import evaluate_scores, predict_points
    from urbanrepml.tasks.geoloc.task import class_scores

    labels = classes.label(lat, lon)
    metrics: dict[str, float] = {}
    extra: dict = {}
    for split in ("val", "test"):
        r = rows[split]
        scores = class_scores(result.model, data, r)
        m, err = evaluate_scores(scores, labels[r], lat[r], lon[r], classes.lat, classes.lon, data.thresholds,
                                 k=p.top_k, mode=p.predict)
        metrics.update({f"{split}_{k}": v for k, v in m.items()})
        if split == "test":
            plat, plon, _, _ = predict_points(scores, classes.lat, classes.lon, p.top_k, p.predict)
            extra["test"] = (err, plat, plon)
    train_labels = labels[rows["train"]]
    identity = index.frame["identity"].to_numpy() if "identity" in index.frame.columns else None
    pixel_vectors = pixels.flat(np.arange(pixels.n))
    for split in ("val", "test"):
        r = rows[split]
        neighbours = {"knn1": (feats, ((1, "knn1"), (p.knn_k, f"knn{p.knn_k}"))),
                      "pixels_knn1": (pixel_vectors, ((1, "pixels_knn1"),))}
        for first, (vectors, variants) in neighbours.items():
            idx, sims = cosine_neighbours(vectors[rows["train"]], vectors[r], max(10, p.knn_k))
            nn_rows = rows["train"][idx[:, 0]]
            for k, name in variants:
                scores = knn_scores(train_labels, classes.n, idx, sims, k)
                points = (lat[nn_rows], lon[nn_rows]) if k == 1 else None
                m, _ = evaluate_scores(scores, labels[r], lat[r], lon[r], classes.lat, classes.lon, data.thresholds,
                                       k=1, mode="top1", points=points)
                metrics.update({f"{name}_{split}_{key}": v for key, v in m.items()})
            if identity is not None:
                metrics[f"{first}_{split}_acc_place"] = float((identity[nn_rows] == identity[r]).mean())
        m, _ = evaluate_scores(majority_scores(train_labels, classes.n, len(r)), labels[r], lat[r], lon[r], classes.lat,
                               classes.lon, data.thresholds, k=1, mode="top1")
        metrics.update({f"majority_{split}_{key}": v for key, v in m.items()})
    return metrics, extra


def baseline_names(p: Params) -> list[str]:
    return ["knn1", f"knn{p.knn_k}", "pixels_knn1", "majority"]


def error_map(lat, lon, err, plat, plon, title: str):
    """Plotly figure: test images at their true place coloured by error (km, log colour), lines to the predictions."""
    import plotly.graph_objects as go

    xs, ys = [], []
    for a, b, c, d in zip(lon, lat, plon, plat, strict=True):
        xs += [a, c, None]
        ys += [b, d, None]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": "rgba(120,120,120,0.35)", "width": 1},
                             name="to prediction", hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=list(lon), y=list(lat), mode="markers", name="image (true place)",
                             marker={"size": 6, "color": list(np.log10(np.maximum(err, 1e-3))), "colorscale": "Viridis",
                                     "colorbar": {"title": "log10 error km"}},
                             text=[f"{e:.3f} km" for e in err]))
    fig.update_layout(title=title, xaxis_title="longitude", yaxis_title="latitude", template="plotly_white",
                      yaxis={"scaleanchor": "x", "scaleratio": 1.0 / max(np.cos(np.radians(float(np.mean(lat)))), 1e-3)})
    return fig


def report_markdown(name: str, p: Params, classes, rows, metrics: dict, fit, seconds: float) -> str:
    keys = ["acc_top1", "acc_top5", "acc_top10", "mean_km", "median_km", "p90_km", "p95_km"]
    keys += sorted({k.split("_", 1)[1] for k in metrics if k.startswith("test_acc_") and k.endswith("km")},
                   key=lambda s: float(s[4:-2]))
    lines = [f"# Geolocation report: {name}", "",
             f"Model `{p.model}`, resolution {p.resolution}: {classes.n} classes ({classes.merges} cell(s) merged into "
             f"parents, `min_cell_samples` {p.min_cell_samples}, centroids `{classes.centroid}`). Split `{p.split}`: "
             f"train {len(rows['train'])}, val {len(rows['val'])}, test {len(rows['test'])} images. Kept epoch "
             f"{fit.best_epoch} of {fit.epochs_run} by `val_median_km` (the promotion metric); the test split was "
             f"evaluated once, after training. {seconds:.0f} s.", "",
             "| metric | " + " | ".join(["model val", "model test", *[f"{b} test" for b in baseline_names(p)]]) + " |",
             "|---" * (3 + len(baseline_names(p))) + "|"]
    for k in keys:
        cells = [metrics.get(f"val_{k}"), metrics.get(f"test_{k}"), *[metrics.get(f"{b}_test_{k}") for b in baseline_names(p)]]
        lines.append(f"| {k} | " + " | ".join("" if v is None else f"{v:.4g}" for v in cells) + " |")
    for b, what in (("knn1", "kNN-1 on frozen features"), ("pixels_knn1", "kNN-1 on pixels")):
        if f"{b}_test_acc_place" in metrics:
            lines += ["", f"{what} finds the same place (identity) for {metrics[f'{b}_test_acc_place']:.1%} of test images."]
    return "\n".join(lines) + "\n"


def log_outputs(result, classes, data, encoder, lat, lon, rows, metrics, extra, p: Params, name: str, report: str,
                run_id: str) -> None:
    import mlflow
    import torch

    from urbanrepml.tracking.figure_png import write_png
    from urbanrepml.tracking.geoloc_pyfunc import log_geoloc_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        err, plat, plon = extra["test"]
        r = rows["test"]
        fig = error_map(lat[r], lon[r], err, plat, plon,
                        f"{name}: test errors (median {metrics['test_median_km']:.3f} km)")
        fig.write_html(tmp / "geoloc_errors.html", include_plotlyjs=True, full_html=True)
        write_png(fig, tmp / "geoloc_errors.png")
        (tmp / "REPORT.md").write_text(report)
        mlflow.log_artifact(str(tmp / "geoloc_errors.html"), artifact_path="figures")
        mlflow.log_artifact(str(tmp / "geoloc_errors.png"), artifact_path="figures")
        mlflow.log_artifact(str(tmp / "REPORT.md"))
        model = result.model.cpu().eval()
        config = result.task.cfg.as_params()
        torch.save({"state_dict": model.state_dict(), "classes": classes.to_dict(), "config": config}, tmp / "geoloc.pt")
        mlflow.log_artifact(str(tmp / "geoloc.pt"), artifact_path="model")
        meta = {"dataset": name, "model": p.model, "classes": classes.n, "resolution": classes.resolution,
                "cells": classes.cells, "lat": classes.lat.tolist(), "lon": classes.lon.tolist(), "top_k": p.top_k,
                "predict": p.predict, "producer_run_id": run_id, "classes_json": json.dumps(classes.to_dict())}
        if data.pixels:
            px, bands = data.inputs.px, data.inputs.bands
            meta.update(kind="pixels", input_px=px, bands=bands, normalise=data.inputs.normalise, context=data.inputs.context)
            example = torch.zeros(2, bands, px, px)
            net = model
        else:
            meta.update(kind="features", encoder=encoder.name, input_size=encoder.input_size, mean=list(encoder.mean),
                        std=list(encoder.std), weights_digest=encoder.weights_digest)
            example = torch.zeros(2, 3, encoder.input_size, encoder.input_size)
            net = _make_encoder_head()(encoder, model).eval()
        with torch.no_grad():
            traced = torch.jit.trace(net, example, check_trace=False)
        traced.save(str(tmp / "geoloc_script.pt"))
        log_geoloc_model(tmp / "geoloc_script.pt", meta)


def _make_encoder_head():
    import torch

    class EncoderHead(torch.nn.Module):
        """A frozen encoder's pooled vector, then the head: what the pyfunc of a ``geoloc_head`` model runs."""

        def __init__(self, encoder, head):
            super().__init__()
            self.encoder, self.head = encoder, head

        def forward(self, x):
            return self.head(self.encoder(x)[0])

    return EncoderHead


# ---------------------------------------------------------------------------------------------- stage


def run_geolocate_stage(p: Params):
    """Run the stage (module docstring); returns ``(metrics, registered version or None)``."""
    import mlflow
    import torch

    from urbanrepml.constants import DATASET, image_scope
    from urbanrepml.geodesy import scale_thresholds
    from urbanrepml.tasks.geoloc.classes import build_classes
    from urbanrepml.tasks.geoloc.data import load_pixels
    from urbanrepml.tasks.geoloc.task import train_geolocator
    from urbanrepml.tracking import configure_tracking, stage_run, tag
    from urbanrepml.tracking.checkpoints import MlflowTrainHooks
    from urbanrepml.tracking.geoloc import METRIC_TAG, SPLIT_TAG, geoloc_model_name, promote_geoloc, register_geoloc

    torch.set_num_threads(min(torch.get_num_threads(), 4))
    p.check()
    configure_tracking()
    index, rows = load_index(p)
    name = index.meta.dataset
    lat, lon = index.frame["lat"].to_numpy(np.float64), index.frame["lon"].to_numpy(np.float64)
    classes = build_classes(lat[rows["train"]], lon[rows["train"]], p.resolution, p.min_cell_samples, p.centroid)
    thresholds = scale_thresholds(lat, lon)
    pixels = load_pixels(index, p.input_px, p.bands, p.normalise, p.context)  # the CNN's input and the pixel baseline's
    feats, encoder, hit = features(index, p)  # images that do not decode fail here, before any run
    data = build_data(index, rows, lat, lon, p, pixels if p.model == "geoloc_cnn" else feats, thresholds)
    tags = {DATASET: name, "model": p.model, "resolution": p.resolution, "family": "geoloc"}
    with stage_run("geolocate", image_scope(name), params=logged(p), tags=tags, run_name=f"geolocate-{p.model}") as run:
        run_id = run.info.run_id
        start = time.perf_counter()
        mlflow.log_metrics({"classes": classes.n, "cells_merged": classes.merges, "feature_cache_hit": float(hit),
                            **{f"images_{s}": len(r) for s, r in rows.items()}})
        print(f"{name}: {classes.n} classes at resolution {p.resolution} ({classes.merges} cell(s) merged into parents); "
              + ", ".join(f"{s} {len(r)}" for s, r in rows.items()))
        if p.tune:
            result, classes = tune_and_train(p, data, lat, lon)
        else:
            result = train_geolocator(data, classes, p.config(), hooks=MlflowTrainHooks(run_id))
        metrics, extra = evaluate_all(result, classes, data, feats, pixels, index, rows, lat, lon, p)
        metrics.update({"best_epoch": result.fit.best_epoch, "epochs_run": result.fit.epochs_run,
                        "best_val_median_km": float(result.fit.best_value), "classes": classes.n})
        seconds = time.perf_counter() - start
        metrics["seconds"] = seconds
        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
        # the kept epoch's validation metrics again, at the last step: the run's latest val_* are the kept checkpoint's
        mlflow.log_metrics({k: v for k, v in finite.items() if k.startswith("val_")}, step=result.fit.epochs_run)
        mlflow.log_metrics({k: v for k, v in finite.items() if not k.startswith("val_")})
        report = report_markdown(name, p, classes, rows, metrics, result.fit, seconds)
        log_outputs(result, classes, data, encoder, lat, lon, rows, metrics, extra, p, name, report, run_id)
        digest = split_digest(index, rows, json.dumps(classes.to_dict()))
        mlflow.set_tags({SPLIT_TAG: digest})
        mlflow.set_tag("mlflow.note.content", report)
        print(report)
    version = None
    if p.register:  # only once the run has ended FINISHED
        vtags = {METRIC_TAG: f"{float(result.fit.best_value):.6g}", SPLIT_TAG: digest, tag("dataset"): name,
                 tag("model"): p.model}
        for key in ("test_median_km", "test_mean_km", "test_p90_km", "test_acc_top1", "test_acc_top5", "test_acc_1km",
                    "knn1_test_median_km", "knn1_test_acc_top1"):
            vtags[tag(f"geoloc.{key}")] = f"{metrics[key]:.6g}"
        version = register_geoloc(run_id, name, tags=vtags)
        decision = promote_geoloc(version, p.min_gain_km)
        mlflow.MlflowClient().set_tag(run_id, tag("registered_version"), str(version.version))
        print(f"geolocate: registered {geoloc_model_name(name)} version {version.version} (alias candidate); {decision.reason}")
    return metrics, version


def run(p: Params):
    return run_geolocate_stage(p)


STAGES = {"geolocate": Stage("geolocate", "image geolocation over H3 cells: train, evaluate against kNN and majority "
                                          "baselines, map errors, register", Params, run)}
