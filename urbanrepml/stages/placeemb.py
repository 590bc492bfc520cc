"""The ``placeemb`` stage: train a place embedder with bandit-chosen triplets, evaluate it, register it.

Steps (one MLflow run, stage ``placeemb``, experiment ``urbanrepml-images-<dataset>``; bad input fails
with one line before the run exists, and a failed run registers nothing):

1. Views: the image index of ``dataset`` (built by the ``images`` stage first when a registered
   dataset has none), its identities with two or more views (identities with one view are excluded
   and counted: ``excluded_single``). Optionally near-duplicate views of one identity are removed
   (``dedup``; perceptual hash within ``dup_bits`` bits).
2. Inputs: ``pixels`` (per-image normalised bands + NDVI, ``size`` px) for ``place_cnn``, or the
   frozen ``encoder``'s pooled features (cached per images and weights; or a ``features`` parquet)
   for ``place_mlp``.
3. Split by identity: whole H3 blocks at ``block_resolution`` (``split=blocks``) or a hash of the
   identity; ``test_fraction`` of them held out for the final numbers, ``val_fraction`` for
   checkpoints and tuning. Queries: each identity's latest view; gallery: its other views.
4. Training (:mod:`urbanrepml.tasks.place`) on the project's loop: triplet margin loss, negatives from
   difficulty bands (BallTree over thumbnail-PCA fingerprints or the frozen features) chosen per
   batch by UCB1 (``sampler=ucb``) or uniformly; checkpoint kept by ``val_recall_1``. With ``tune``,
   an Optuna study first (nested runs ``placeemb-trial-<n>``, a report per epoch, median pruning).
5. Evaluation on the test identities: ``test_recall_1/10/100`` (capped by the gallery) and
   ``test_map``; baselines on the same queries: the frozen features without the head
   (``baseline_frozen_*``) and the normalised pixels themselves (``baseline_pixels_*``).
6. Model: ``model/placeemb.pt`` and the pyfunc ``placeemb_model``; then version
   ``urbanrepml-placeemb-<dataset>`` (alias ``candidate``) and the promotion policy.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.errors import UrbanReprError
from urbanrepml.params import param
from urbanrepml.stages.base import Stage

INPUTS = ("pixels", "features")
BAND_SPACES = ("fingerprint", "features")


@dataclass
class Params:
    """Parameters of the ``placeemb`` entry point."""

    dataset: str = param("naip_north_dakota", "an image index (name built by the images stage, or a parquet path)")
    input: str = param("pixels", "model input: pixels (small CNN from scratch) or features (head on frozen features)",
                       choices=INPUTS)
    encoder: str = param("efficientnet_lite0", "frozen encoder for input=features and for the baseline")
    weights: str | None = param(None, "weights file or model folder of the frozen encoder (dinov2: a local folder)")
    features: str | None = param(None, "a parquet of dim_* features indexed by image_id, instead of the encoder's")
    size: int = param(32, "pixels: input side in pixels")
    context: int = param(16, "pixels of surroundings added on each side of a raster window (0: the chip alone)")
    width: int = param(16, "place_cnn: channels of the first block")
    hidden: str = param("512", "place_mlp: hidden widths, comma-separated")
    out_dim: int = param(256, "embedding width")
    dropout: float = param(0.1, "dropout")
    margin: float = param(0.5, "triplet margin")
    batch_size: int = param(128, "triplets per batch")
    lr: float = param(1e-3, "peak learning rate")
    epochs: int = param(10, "epochs")
    patience: int = param(0, "early stopping: epochs without a better val_recall_1 (0: off)")
    sampler: str = param("ucb", "band sampler: ucb (UCB1) or uniform (ablation)", choices=("ucb", "uniform"))
    ucb_c: float = param(0.5, "UCB1 exploration constant")
    n_bands: int = param(7, "difficulty bands (hardest to easiest)")
    neighbours: int = param(70, "visual neighbours of other identities per anchor, cut into the bands")
    band_space: str = param("fingerprint", "vectors the bands are built on: fingerprint (thumbnail PCA) or features",
                            choices=BAND_SPACES)
    dedup: bool = param(False, "remove near-duplicate views of an identity (perceptual hash)")
    dup_bits: int = param(4, "near-duplicate: largest Hamming distance of the 64-bit hashes")
    split: str = param("blocks", "hold out identities by H3 block (blocks) or by identity hash (identity)",
                       choices=("blocks", "identity"))
    test_fraction: float = param(0.3, "share of blocks (identities) held out for test")
    val_fraction: float = param(0.15, "share of blocks (identities) for validation")
    block_resolution: int = param(8, "H3 resolution of the spatial blocks")
    split_seed: int = param(0, "seed of the split")
    seed: int = param(0, "training seed")
    k: int = param(10, "top-k the gallery must support (fails when a held-out gallery is smaller)")
    baseline: bool = param(True, "also evaluate the frozen features without the head (computed and cached if needed)")
    tune: int = param(0, "Optuna trials (0: train the given configuration)")
    register: bool = param(True, "register the model as urbanrepml-placeemb-<dataset> (alias candidate)")
    min_gain: float = param(0.0, "promotion: val_recall_1 gain over the champion needed to move it")

    def config(self):
        from urbanrepml.tasks.place.task import PlaceConfig

        for name in ("size", "width", "out_dim", "epochs", "k"):
            if getattr(self, name) < 1:
                raise UrbanReprError(f"parameter {name} must be >= 1, got {getattr(self, name)}")
        if self.tune < 0:
            raise UrbanReprError(f"parameter tune must be >= 0, got {self.tune}")
        if not (math.isfinite(self.min_gain) and self.min_gain >= 0):
            raise UrbanReprError(f"parameter min_gain must be a finite number >= 0, got {self.min_gain}")
        if self.input == "pixels":
            if self.size % 4:
                raise UrbanReprError(f"parameter size must be a multiple of 4, got {self.size}")
            model, mc = "place_cnn", {"width": self.width, "out_dim": self.out_dim, "dropout": self.dropout}
        else:
            model, mc = "place_mlp", {"hidden": self.hidden, "out_dim": self.out_dim, "dropout": self.dropout}
        return PlaceConfig(model=model, model_config=mc, margin=self.margin, batch_size=self.batch_size, lr=self.lr,
                           epochs=self.epochs, patience=self.patience, sampler=self.sampler, ucb_c=self.ucb_c,
                           n_bands=self.n_bands, neighbours=self.neighbours, seed=self.seed,
                           checkpoint_every=max(1, min(10, self.epochs)))


# ---------------------------------------------------------------------------------------------- data


def resolve_dataset_index(dataset: str) -> Path:
    """The index of ``dataset``; a registered dataset without one is indexed first (``images`` stage, nested)."""
    from urbanrepml.datasets import fetch, list_datasets
    from urbanrepml.stages.embed_images import resolve_index
    from urbanrepml.stages.images import index_path

    if Path(dataset).expanduser().is_file() or index_path(dataset).is_file() or dataset not in list_datasets():
        return resolve_index(dataset)
    from urbanrepml.stages.images import Params as ImagesParams
    from urbanrepml.stages.images import run_images_stage

    folder = fetch(dataset)
    kind = "chips" if any(p.suffix.lower() in (".tif", ".tiff") for p in Path(folder).iterdir()) else "photos"
    run_images_stage(ImagesParams(dataset=dataset, kind=kind))
    return index_path(dataset)


@dataclass
class PlaceInputs:
    """Everything the stage trains and evaluates on."""

    index: object  # ImageIndex
    views: object  # Views
    images: list
    pixels: np.ndarray
    fingerprints: object  # Fingerprints
    duplicates: pd.DataFrame
    dropped: list


def load_views(dataset: str, dedup: bool, dup_bits: int, size: int, context: int = 0) -> PlaceInputs:
    """Index -> views with two or more per identity, their pixels and fingerprints; near-duplicates found."""
    from urbanrepml.images import read_index
    from urbanrepml.tasks.place.data import load_images, pixel_inputs, views_from_frame
    from urbanrepml.tasks.place.fingerprints import duplicates_to_drop, fingerprints, near_duplicates

    if not 0 <= dup_bits <= 64:
        raise UrbanReprError(f"parameter dup_bits must be between 0 and 64, got {dup_bits}")
    index = read_index(resolve_dataset_index(dataset))
    views = views_from_frame(index.frame, where=f"index {index.meta.dataset}")
    rows = index.frame.index.get_indexer(views.frame.index)
    windows = index.windows()
    images = load_images(views.frame, index.image_paths()[rows], [windows[r] for r in rows], context)
    fp = fingerprints(images)
    dups = near_duplicates(fp, views.ids, views.identity, dup_bits)
    dropped: list = []
    if dedup:
        from urbanrepml.tasks.place.data import drop_views

        dropped = duplicates_to_drop(dups, list(views.ids))
        if dropped:
            keep = ~views.frame.index.isin(dropped)
            before = views
            views = drop_views(views, dropped)
            pos = before.frame.index.get_indexer(views.frame.index)
            images = [images[i] for i in pos]
            fp = type(fp)(fp.phash[pos], fp.pca[pos])
            del keep
    return PlaceInputs(index, views, images, pixel_inputs(images, size), fp, dups, dropped)


def frozen_features(inputs: PlaceInputs, encoder_name: str, weights: str | None, features: str | None) -> np.ndarray:
    """``(N, D)`` frozen features of the views: a given parquet, else the encoder's (feature cache reused)."""
    if features:
        path = Path(features).expanduser()
        if not path.is_file():
            raise UrbanReprError(f"features file {path} does not exist")
        frame = pd.read_parquet(path)
        if "image_id" in frame.columns:
            frame = frame.set_index("image_id")
        cols = [c for c in frame.columns if str(c).startswith("dim_")]
        if not cols:
            raise UrbanReprError(f"{path}: no dim_* columns")
        missing = ~inputs.views.frame.index.isin(frame.index)
        if missing.any():
            raise UrbanReprError(f"{path}: no features for {int(missing.sum())} view(s), e.g. "
                                 f"{list(inputs.views.frame.index[missing][:3])}")
        x = frame.loc[inputs.views.frame.index, cols].to_numpy(dtype=np.float32)
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            raise UrbanReprError(f"{path}: features hold NaN or inf in {int(bad.sum())} row(s), e.g. "
                                 f"{list(inputs.views.frame.index[bad][:3])}; fix or drop them")
        return x
    from urbanrepml.images import ImageIndex
    from urbanrepml.models.encoders import get_encoder
    from urbanrepml.stages.embed_images import cache_path, compute_features, load_cached

    enc = get_encoder(encoder_name, weights=weights)
    sub = ImageIndex(inputs.index.frame.loc[inputs.views.frame.index], inputs.index.meta, inputs.index.root)
    cached = cache_path(sub, enc)
    x = load_cached(cached, sub, enc.embed_dim)
    if x is None:
        from urbanrepml.images import EmbeddingMeta, ImageEmbeddings, embedding_frame, write_embeddings

        x = compute_features(sub, enc, batch_size=64, workers=2, progress=False)
        write_embeddings(ImageEmbeddings(embedding_frame(x, sub.frame.index),
                                         EmbeddingMeta(dataset=inputs.index.meta.dataset, encoder=enc.name,
                                                       weights_digest=enc.weights_digest,
                                                       extra={"input_size": enc.input_size})), cached)
    return x


@dataclass
class Split:
    labels: np.ndarray  # per view
    train: np.ndarray
    val_q: np.ndarray
    val_g: np.ndarray
    test_q: np.ndarray
    test_g: np.ndarray
    digest: str


def make_split(p: Params, inputs: PlaceInputs) -> Split:
    from urbanrepml.tasks.place.data import query_gallery, split_identities

    views = inputs.views
    per_identity = split_identities(views, p.split, p.test_fraction, p.val_fraction, p.block_resolution, p.split_seed)
    labels = per_identity.reindex(views.identity).to_numpy()
    vq, vg = query_gallery(views, labels == "val")
    tq, tg = query_gallery(views, labels == "test")
    for name, g in (("validation", vg), ("test", tg)):
        if len(g) < p.k:
            raise UrbanReprError(f"the {name} gallery holds {len(g)} view(s), fewer than k={p.k}; lower k or use more "
                                 "identities")
    text = "|".join([inputs.index.meta.dataset, str(len(views)), p.split, str(p.block_resolution), str(p.split_seed),
                     f"{p.test_fraction:g}", f"{p.val_fraction:g}", ",".join(sorted(views.identity[labels == "val"])),
                     ",".join(sorted(map(str, views.ids)))])
    digest = hashlib.sha256(text.encode()).hexdigest()
    return Split(labels, np.flatnonzero(labels == "train"), vq, vg, tq, tg, digest)


# ---------------------------------------------------------------------------------------------- training


def _sample(trial, name, space):
    from urbanrepml.models.registry import Choice, FloatRange, IntRange

    if isinstance(space, Choice):
        return trial.suggest_categorical(name, list(space.values))
    if isinstance(space, IntRange):
        return trial.suggest_int(name, space.low, space.high, log=space.log)
    if isinstance(space, FloatRange):
        return trial.suggest_float(name, space.low, space.high, log=space.log)
    raise TypeError(f"unknown search space {space!r}")


def tune_and_train(p: Params, base, data):
    """Optuna over the model's space and the training space (nested runs); the best trial's config and result."""
    import mlflow
    import optuna

    from urbanrepml.models.place import TRAINING_SPACE
    from urbanrepml.models.registry import model_spec
    from urbanrepml.tasks.place.task import PlaceConfig, train_place_embedder
    from urbanrepml.tracking import tag
    from urbanrepml.tracking.checkpoints import TrialHooks

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=p.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=max(1, base.epochs // 4)))
    best: dict = {}

    def objective(trial):
        values = {name: _sample(trial, name, space) for name, space in model_spec(base.model).search_space(base.epochs).items()}
        training = {name: _sample(trial, name, space) for name, space in TRAINING_SPACE.items()}
        if training["n_bands"] > base.neighbours:
            training["n_bands"] = base.neighbours
        cfg = replace(base, model_config={**base.model_config, **values}, **training)
        cfg = PlaceConfig(**{**cfg.__dict__})
        with mlflow.start_run(nested=True, run_name=f"placeemb-trial-{trial.number}") as run:
            mlflow.set_tags({tag("stage"): "placeemb_trial", tag("trial"): str(trial.number)})
            mlflow.log_params({f"trial.{k}": v for k, v in {**values, **training}.items()})
            try:
                result = train_place_embedder(data, cfg,
                                              hooks=TrialHooks(trial, run.info.run_id, "val_recall_1"), progress=False)
            except optuna.TrialPruned:
                mlflow.end_run(status="KILLED")
                raise
            value = float(result.fit.best_value)
            mlflow.log_metrics({"best_val_recall_1": value, "best_epoch": result.fit.best_epoch})
        if not best or value > best["value"]:
            best.update(value=value, cfg=cfg, result=result, number=trial.number, values={**values, **training})
        return value

    study.optimize(objective, n_trials=p.tune)
    if not best:
        raise UrbanReprError(f"no tuning trial finished (all {p.tune} were pruned); raise tune or epochs")
    mlflow.log_params({f"tuned.{k}": v for k, v in best["values"].items()})
    mlflow.log_metrics({"tune_trials": len(study.trials), "tune_best_trial": best["number"],
                        "tune_pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)})
    return best["cfg"], best["result"]


# ---------------------------------------------------------------------------------------------- evaluation


def evaluate(emb: np.ndarray, codes: np.ndarray, q: np.ndarray, g: np.ndarray, prefix: str) -> dict[str, float]:
    from urbanrepml.tasks.place.metrics import retrieval_metrics

    e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    m = retrieval_metrics(e[q], codes[q], e[g], codes[g], ks=(1, 10, 100))
    return {f"{prefix}_{k}": v for k, v in m.items()}


def log_model(model, cfg, p: Params, inputs: PlaceInputs, x: np.ndarray, run_id: str, encoder: str) -> None:
    import warnings

    import mlflow
    import torch

    from urbanrepml.tracking.placeemb_pyfunc import log_placeemb_model

    model = model.cpu().eval()
    meta = {"dataset": inputs.index.meta.dataset, "model": cfg.model, "dim": int(model.out_dim), "producer_run_id": run_id}
    if p.input == "pixels":
        meta.update({"input": "pixels", "size": int(x.shape[2]), "context": int(p.context), "ndvi": bool(x.shape[1] == 5),
                     "bands": int(x.shape[1] - (x.shape[1] == 5))})
    else:
        meta.update({"input": "features", "in_dim": int(x.shape[1]), "encoder": encoder})
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "placeemb.pt"
        torch.save({"family": "placeemb", "model": cfg.model, "config": cfg.as_params(), "meta": meta,
                    "state_dict": model.state_dict()}, ckpt)
        mlflow.log_artifact(str(ckpt), artifact_path="model")
        scripted = Path(tmp) / "placeemb_script.pt"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.script(model).save(str(scripted))
        log_placeemb_model(scripted, meta)


def log_tables(inputs: PlaceInputs, split: Split, bands_frame: pd.DataFrame | None) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        views = inputs.views
        pd.DataFrame({"image_id": views.ids, "identity": views.identity, "split": split.labels}).to_csv(
            Path(tmp) / "split.csv", index=False)
        inputs.duplicates.to_csv(Path(tmp) / "near_duplicates.csv", index=False)
        mlflow.log_artifact(str(Path(tmp) / "split.csv"), artifact_path="placeemb")
        mlflow.log_artifact(str(Path(tmp) / "near_duplicates.csv"), artifact_path="placeemb")
        if bands_frame is not None:
            bands_frame.to_parquet(Path(tmp) / "bands_train.parquet")
            mlflow.log_artifact(str(Path(tmp) / "bands_train.parquet"), artifact_path="placeemb")


def run_placeemb_stage(p: Params):
    """Run the stage (module docstring); returns ``(metrics, registered version or None)``."""
    import mlflow
    import torch

    from urbanrepml.constants import DATASET, image_scope
    from urbanrepml.tasks.place.bands import bands_frame
    from urbanrepml.tasks.place.task import PlaceData, embed, train_place_embedder
    from urbanrepml.tracking import configure_tracking, stage_run, tag
    from urbanrepml.tracking.checkpoints import MlflowTrainHooks
    from urbanrepml.tracking.placeemb import METRIC_TAG, SPLIT_TAG, placeemb_model_name, promote_placeemb, register_placeemb
    from urbanrepml.tracking.runs import log_new_params

    torch.set_num_threads(min(torch.get_num_threads(), 4))
    cfg = p.config()  # bad settings fail before anything is read
    configure_tracking()
    inputs = load_views(p.dataset, p.dedup, p.dup_bits, p.size, p.context)
    name = inputs.index.meta.dataset
    split = make_split(p, inputs)
    feats = None
    if p.input == "features" or p.band_space == "features":
        feats = frozen_features(inputs, p.encoder, p.weights, p.features)
    x = inputs.pixels if p.input == "pixels" else feats
    band_space = inputs.fingerprints.pca if p.band_space == "fingerprint" else feats
    data = PlaceData(x, inputs.views.codes, split.train, split.val_q, split.val_g, band_space)
    tags = {DATASET: name, "model": cfg.model, "sampler": cfg.sampler, "input": p.input, "family": "placeemb"}
    with stage_run("placeemb", image_scope(name), tags=tags, run_name=f"placeemb-{cfg.model}-{cfg.sampler}") as run:
        run_id = run.info.run_id
        start = time.perf_counter()
        log_new_params({k: ("" if v is None else v) for k, v in p.__dict__.items()})
        views = inputs.views
        metrics = {"views": len(views), "identities": int(len(np.unique(views.codes))),
                   "excluded_single": views.excluded_single, "near_duplicate_pairs": len(inputs.duplicates),
                   "near_duplicate_pairs_same_identity": int(inputs.duplicates["same_identity"].sum()),
                   "dropped_duplicates": len(inputs.dropped),
                   **{f"{s}_identities": int(len(np.unique(views.codes[split.labels == s]))) for s in ("train", "val", "test")},
                   "test_queries_n": len(split.test_q), "test_gallery_n": len(split.test_g)}
        if p.tune:
            cfg, result = tune_and_train(p, cfg, data)
        else:
            result = train_place_embedder(data, cfg, hooks=MlflowTrainHooks(run_id))
        log_tables(inputs, split, bands_frame(result.task.bands, views.ids[split.train]))
        best = result.fit.history[result.fit.best_epoch - 1] if result.fit.history else {}
        metrics.update({f"final_{k}": float(v) for k, v in best.items() if k.startswith("val_")})
        metrics.update({"best_epoch": result.fit.best_epoch, "epochs_run": result.fit.epochs_run,
                        "best_val_recall_1": float(result.fit.best_value)})
        pulls = result.task.sampler.pulls
        metrics.update({f"band_{b}_pulls_total": float(pulls[b]) for b in range(len(pulls))})
        emb = embed(result.model, x)
        metrics.update(evaluate(emb, views.codes, split.test_q, split.test_g, "test"))
        metrics.update(evaluate(inputs.pixels.reshape(len(views), -1), views.codes, split.test_q, split.test_g,
                                "baseline_pixels"))
        if p.baseline:
            base = feats if feats is not None else frozen_features(inputs, p.encoder, p.weights, p.features)
            metrics.update(evaluate(base, views.codes, split.test_q, split.test_g, "baseline_frozen"))
        mlflow.set_tags({SPLIT_TAG: split.digest, tag("model_config"): json.dumps(result.task.model_config)})
        log_model(result.model, cfg, p, inputs, x, run_id, p.encoder)
        metrics["seconds"] = time.perf_counter() - start
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))})
        summary = _summary(name, cfg, metrics)
        mlflow.set_tag("mlflow.note.content", summary)
        print(summary)
    version = None
    if p.register:  # only once the run has ended FINISHED
        vtags = {METRIC_TAG: f"{float(result.fit.best_value):.6g}", SPLIT_TAG: split.digest, tag("dataset"): name,
                 tag("placeemb.test_recall_1"): f"{metrics['test_recall_1']:.6g}",
                 tag("placeemb.test_recall_10"): f"{metrics['test_recall_10']:.6g}"}
        version = register_placeemb(run_id, name, tags=vtags)
        decision = promote_placeemb(version, p.min_gain)
        mlflow.MlflowClient().set_tag(run_id, tag("registered_version"), str(version.version))
        print(f"placeemb: registered {placeemb_model_name(name)} version {version.version} (alias candidate); "
              f"{decision.reason}")
    return metrics, version


def _summary(name: str, cfg, m: dict) -> str:
    def line(label, prefix):
        if f"{prefix}_recall_1" not in m:
            return None
        return (f"{label:<26} recall@1 {m[f'{prefix}_recall_1']:.3f}  @10 {m[f'{prefix}_recall_10']:.3f}  "
                f"@100 {m[f'{prefix}_recall_100']:.3f}  mAP {m[f'{prefix}_map']:.3f}")

    head = (f"placeemb {cfg.model} ({cfg.sampler}) on {name}: {m['views']} views of {m['identities']} identities "
            f"({m['excluded_single']} with one view excluded); test {m['test_identities']} identities, "
            f"{m['test_queries_n']} queries vs {m['test_gallery_n']} gallery views; best epoch {m['best_epoch']}, "
            f"val recall@1 {m['best_val_recall_1']:.3f}")
    lines = [line("model (test)", "test"), line("frozen features (test)", "baseline_frozen"),
             line("normalised pixels (test)", "baseline_pixels")]
    return "\n".join([head, *[x for x in lines if x]])


def search_gallery(model_uri: str, gallery: pd.DataFrame, queries: pd.DataFrame, k: int = 10,
                   id_column: str = "image_id") -> pd.DataFrame:
    """Embed ``gallery`` and ``queries`` with a registered place embedder and return each query's top-k gallery views.

    Both frames hold what the model takes (``path``/``window``, or ``dim_*``) and ``id_column``; the
    result has ``query``, ``rank``, ``match``, ``score``. A model of another family, or k larger than the
    gallery, fails with one line.
    """
    import mlflow

    from urbanrepml.tasks.place.gallery import Gallery
    from urbanrepml.tracking.placeemb import require_placeemb

    require_placeemb(model_uri)
    if not 1 <= k <= len(gallery):
        raise UrbanReprError(f"gallery of {len(gallery)} view(s) cannot answer top-{k} queries; use k <= {len(gallery)}")
    model = mlflow.pyfunc.load_model(model_uri)
    g = Gallery(model.predict(gallery).to_numpy(), gallery[id_column].astype(str).tolist())
    ids, scores = g.search(model.predict(queries).to_numpy(), k)
    q = queries[id_column].astype(str).to_numpy()
    return pd.DataFrame({"query": np.repeat(q, k), "rank": np.tile(np.arange(1, k + 1), len(q)),
                         "match": ids.ravel(), "score": scores.ravel()})


def run(p: Params):
    return run_placeemb_stage(p)


STAGES = {"placeemb": Stage("placeemb", "place/building embeddings: triplets with bandit-chosen difficulty bands, "
                                        "held-out recall@k and mAP against frozen features, register", Params, run)}
