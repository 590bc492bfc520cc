"""The ``locenc`` stage: train a regional location encoder, evaluate it, map it, register it.

Steps (one MLflow run, stage ``locenc``; bad input fails before training with one line):

1. Records: ``input`` empty -> the study area's modality tables at ``resolution`` (the newest per
   modality in the tracking store, built first as nested runs when there are none; the
   ``location`` modality itself is never an input), aligned and z-scored as fusion aligns them,
   at the cell centres; a ``.parquet`` path or ``modality=path,...`` -> those tables; a ``.csv``
   -> image embeddings (``dim_*`` + WKT ``geometry`` POINTs in ``crs``). Logged as input datasets.
2. Training (:mod:`urbanrepml.tasks.location`) on the generic loop: symmetric InfoNCE, learnable
   temperature, held-out spatial blocks; per-epoch metrics and checkpoints on the run; the
   checkpoint kept is the best held-out retrieval top-10 (``val_top10``). With ``tune`` > 0,
   an Optuna study first (one nested run per trial, families ``tune_encoders``, each family's
   search space from the model registry), and the best trial's model is the one kept. With
   ``refit`` (default), that configuration is then trained again on every record (held-out
   blocks included) for the epochs the validation chose (metrics ``refit_*``): the final encoder.
   The held-out evidence (``final_val_*``, ``best_val_top10``, ``rag_cos``) is the validation run's.
3. Evaluation: held-out retrieval (``val_top1``, ``val_top10``, ``val_top1_cos``), RAG vs the
   geographic k nearest records on held-out queries (``rag_cos``, ``geo_knn_cos``), and, when the
   area has targets and the records cover it, the spatial-CV probe (nested ``probe`` runs, the
   probe stage unchanged) of the per-cell location table ``locenc_res<r>``, of ``[location, RAG]``
   (``locrag_res<r>``) and of GeoCLIP's pretrained embeddings (``geoclip_res<r>``), beside the
   probe's own concat/ring baselines and lat/lon kNN reference (metrics ``probe_*``,
   ``rag_probe_*``, ``geoclip_probe_*``, ``concat_*``, ``ring_*``, ``knn_latlon_*``).
4. Map: PCA of the location embeddings over a ``map_size`` x ``map_size`` grid of the region ->
   RGB, ``figures/locenc_map.png`` and a self-contained ``figures/locenc_map.html``.
5. Model: ``model/locenc.pt`` (the checkpoint, every key) and the pyfunc ``locenc_model`` (encoder +
   bank of the input records) - then, only once the run has FINISHED, the registry version of
   ``urbanrepml-locenc-<study_area>`` (alias ``candidate``) and the promotion policy
   (:mod:`urbanrepml.tracking.locenc`): ``champion`` moves on a better ``val_top10`` on the same split.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from urbanrepml.config import DEFAULT_STUDY_AREA, load_study_area
from urbanrepml.constants import image_scope
from urbanrepml.errors import UrbanReprError
from urbanrepml.models.location import TRAINABLE
from urbanrepml.models.location.networks import NETWORKS
from urbanrepml.models.location.positional import FRAMES
from urbanrepml.models.registry import model_spec
from urbanrepml.params import param
from urbanrepml.stages.base import Stage
from urbanrepml.tasks.location.task import LocencConfig

LOCATION_MODALITY = "location"
PROBE_TARGET_PREFIXES = ("probe", "rag_probe", "geoclip_probe")


@dataclass
class Params:
    """Parameters of the ``locenc`` entry point."""

    study_area: str = param(DEFAULT_STUDY_AREA, "bundled area name or path to a study-area TOML")
    input: str | None = param(None, "records: empty = the area's modality tables; a table .parquet, modality=path,...; "
                                    "or a .csv of dim_* columns + WKT geometry POINTs")
    crs: str = param("EPSG:4326", "CRS of a CSV's geometry column (reprojected to EPSG:4326)")
    images: str | None = param(None, "records: an image index (name or index parquet) with embed_images embeddings; "
                                     "the encoder is then registered under the index's dataset name")
    image_encoder: str = param("efficientnet_lite0", "images: the encoder whose embeddings are the records")
    image_splits: str = param("train", "images: the index splits whose images are records (comma-separated, or all)")
    resolution: int = param(9, "H3 resolution of the modality tables and of the per-cell location table")
    encoder: str = param("rff", "location encoder family", choices=TRAINABLE)
    legendre_polys: int = param(10, "sh_siren: spherical-harmonic degrees L (L^2 features)")
    sigmas: str = param("2,8,32", "rff: Fourier-feature scales (cycles per region half-extent), comma-separated")
    frequency_num: int = param(32, "space2vec_*: scales")
    min_radius_km: float = param(0.05, "space2vec_*: shortest wavelength (km)")
    frame: str = param("region", "sh_siren, rff: region (stretched to the region) or globe (SatCLIP/GeoCLIP's global frame)",
                       choices=FRAMES)
    network: str = param("auto", "network after the encoding (auto: the family's default)", choices=("auto", *NETWORKS))
    hidden: int = param(256, "hidden width of the encoder network")
    layers: int = param(2, "hidden layers of the encoder network")
    embedding_dim: int = param(128, "width of the location embedding")
    projection_hidden: int = param(0, "hidden width of the paired embeddings' projection (0: linear)")
    temperature: float = param(1.0, "initial softmax temperature (learned)")
    batch_size: int = param(256, "records per batch (in-batch negatives)")
    lr: float = param(3e-3, "peak learning rate (AdamW, warm-up + cosine)")
    epochs: int = param(60, "epochs")
    patience: int = param(0, "early stopping: epochs without a better val_top10 (0: off)")
    val_fraction: float = param(0.1, "share of spatial blocks held out for validation")
    block_resolution: int = param(7, "H3 resolution of the validation blocks")
    seed: int = param(0, "training seed (and the validation blocks' hash)")
    refit: bool = param(True, "after validation, train the chosen configuration on every record for the chosen epochs")
    k: int = param(10, "RAG: records retrieved per query")
    probe: bool = param(True, "probe the per-cell tables against the area's targets (nested probe runs)")
    compare_geoclip: bool = param(True, "also probe GeoCLIP's pretrained global embeddings (needs the geoclip package)")
    map_size: int = param(200, "points per side of the map grid")
    tune: int = param(0, "Optuna trials before the final model (0: train the given configuration)")
    tune_encoders: str = param("all", "families the study searches: all, or comma-separated names")
    register: bool = param(True, "register the encoder as urbanrepml-locenc-<study_area> (alias candidate)")
    min_gain: float = param(0.0, "promotion: val_top10 gain over the champion needed to move it")

    def encoder_config(self, encoder: str | None = None) -> dict:
        """The family's own settings from these parameters (only the keys the family takes)."""
        encoder = encoder or self.encoder
        values = {"legendre_polys": self.legendre_polys, "sigmas": self.sigmas, "frequency_num": self.frequency_num,
                  "min_radius_km": self.min_radius_km, "frame": self.frame, "hidden": self.hidden, "layers": self.layers,
                  "embedding_dim": self.embedding_dim}
        if self.network != "auto":
            values["network"] = self.network
        return {k: v for k, v in values.items() if k in model_spec(encoder).defaults}

    def config(self) -> LocencConfig:
        """The training configuration (checked here, before any run exists)."""
        from urbanrepml.models.location.encoders import parse_sigmas

        if self.encoder == "rff":
            parse_sigmas(self.sigmas)
        for name in ("hidden", "embedding_dim", "epochs"):
            if getattr(self, name) < 1:
                raise UrbanReprError(f"parameter {name} must be >= 1, got {getattr(self, name)}")
        if self.layers < 0:
            raise UrbanReprError(f"parameter layers must be >= 0, got {self.layers}")
        if self.k < 1:
            raise UrbanReprError(f"parameter k must be >= 1, got {self.k}")
        if self.tune < 0:
            raise UrbanReprError(f"parameter tune must be >= 0 (trials), got {self.tune}")
        if not (math.isfinite(self.min_gain) and self.min_gain >= 0):
            raise UrbanReprError(f"parameter min_gain must be a finite number >= 0, got {self.min_gain}")
        if not 8 <= self.map_size <= 2000:
            raise UrbanReprError(f"parameter map_size must be between 8 and 2000, got {self.map_size}")
        return LocencConfig(encoder=self.encoder, encoder_config=self.encoder_config(), projection_hidden=self.projection_hidden,
                            temperature=self.temperature, batch_size=self.batch_size, lr=self.lr, epochs=self.epochs,
                            patience=self.patience, val_fraction=self.val_fraction, block_resolution=self.block_resolution,
                            seed=self.seed, checkpoint_every=max(1, min(25, self.epochs)))


# ---------------------------------------------------------------------------------------------- records


@dataclass
class Records:
    """The training records and where they came from."""

    data: object  # LocatedEmbeddings
    kind: str  # store | tables | csv | images
    inputs: object | None = None  # FusionInputs for per-cell tables
    digest: str = ""
    scope: str | None = None  # images: the index's dataset (the registry scope instead of the study area)
    source: str | None = None  # the file the records were read from (csv, images)


def input_kind(value: str | None) -> str:
    if not value:
        return "store"
    return "csv" if str(value).strip().lower().endswith(".csv") else "tables"


def _records_from_tables(spec, resolution: int, tables, provenance=None) -> Records:
    from urbanrepml.areas import build_area
    from urbanrepml.tasks.fusion.inputs import load_fusion_inputs
    from urbanrepml.tasks.location.data import from_cells

    inputs = load_fusion_inputs(spec, resolution, tables, area=build_area(spec, [resolution]), provenance=provenance)
    if LOCATION_MODALITY in inputs.modalities:
        raise UrbanReprError("the location modality cannot be an input of a location encoder; leave it out of input")
    data = from_cells(inputs.frame(), f"modality tables {', '.join(inputs.modalities)} of {spec.name} res {resolution}")
    digest = hashlib.sha256("".join(f"{m}:{d}" for m, d in sorted(inputs.digests.items())).encode()).hexdigest()
    return Records(data, "tables", inputs, digest)


def _records_from_images(images: str, encoder: str, splits: str) -> Records:
    """The embed_images embeddings of an image index's images in ``splits``, at the images' coordinates."""
    from urbanrepml.images import read_embeddings, read_index
    from urbanrepml.stages.embed_images import resolve_index
    from urbanrepml.tables import file_digest
    from urbanrepml.tasks.location.data import LocatedEmbeddings

    index_file = resolve_index(images)
    index = read_index(index_file, check_files=False)
    name = index.meta.dataset
    path = index_file.parent / f"embeddings_{encoder}.parquet"
    if not path.is_file():
        raise UrbanReprError(f"no {encoder} embeddings of image index {name!r} ({path}); compute them first with "
                             f"`python -m urbanrepml embed_images --dataset {images} --encoder {encoder}`")
    frame = index.frame
    wanted = [s.strip() for s in splits.split(",") if s.strip()]
    if wanted != ["all"]:
        unknown = sorted(set(wanted) - {"train", "val", "test"})
        if unknown or not wanted:
            raise UrbanReprError(f"parameter image_splits: {splits!r}; give train, val, test (comma-separated) or all")
        frame = frame[frame["split"].isin(wanted)]
        if frame.empty:
            raise UrbanReprError(f"image index {name!r} has no image in split(s) {', '.join(wanted)}; build it with a split "
                                 "(`images --split time|blocks|group`) or pass image_splits=all")
    emb = read_embeddings(path).frame
    missing = frame.index.difference(emb.index)
    if len(missing):
        raise UrbanReprError(f"{path}: no embedding for {len(missing)} image(s) of the index, e.g. {list(missing[:3])}; "
                             "embed the current index again")
    x = emb.loc[frame.index].to_numpy(dtype=np.float64)
    data = LocatedEmbeddings(frame.index.to_numpy(dtype=object), frame["lat"].to_numpy(), frame["lon"].to_numpy(), x,
                             "points", f"{path.name} of image index {name!r} ({', '.join(wanted)})", list(emb.columns))
    digest = hashlib.sha256(f"{file_digest(path)}|{','.join(sorted(wanted))}".encode()).hexdigest()
    return Records(data, "images", None, digest, scope=name, source=str(path))


def read_records(p: Params, spec) -> Records | None:
    """Records named by a file (read and checked before any run); ``None`` for the store's tables."""
    from urbanrepml.tables import file_digest
    from urbanrepml.tasks.fusion.inputs import parse_tables_param
    from urbanrepml.tasks.location.data import read_points_csv

    if p.images:
        if p.input:
            raise UrbanReprError("give either input or images, not both")
        return _records_from_images(p.images, p.image_encoder, p.image_splits)
    kind = input_kind(p.input)
    if kind == "csv":
        data = read_points_csv(p.input, p.crs)
        return Records(data, "csv", None, file_digest(p.input), source=str(p.input))
    if kind == "tables":
        return _records_from_tables(spec, p.resolution, parse_tables_param(p.input))
    return None


def store_records(spec, resolution: int) -> tuple[Records, list[str]]:
    """The area's newest modality tables in the store (built first when none), the location modality left out."""
    from urbanrepml.stages.fuse import ensure_modality_tables
    from urbanrepml.tracking.fusion import INPUT_HINT, find_modality_tables
    from urbanrepml.tracking.tables import list_table_modalities, table_artifact_path

    built = ensure_modality_tables(spec, resolution)
    names = [m for m in list_table_modalities(spec.name, resolution) if m != LOCATION_MODALITY]
    found = find_modality_tables(spec.name, resolution, names) if names else {}
    if not found:
        raise UrbanReprError(f"no modality tables for study area {spec.name!r} at resolution {resolution} in the "
                             "tracking store; " + INPUT_HINT.format(resolution=resolution))
    tables = {m: path for m, (path, _) in found.items()}
    provenance = {m: (r, f"runs:/{r}/{table_artifact_path(m, resolution)}") for m, (_, r) in found.items()}
    records = _records_from_tables(spec, resolution, tables, provenance)
    records.kind = "store"
    return records, built


def log_records(records: Records, p: Params) -> None:
    import mlflow

    from urbanrepml.tracking import log_source_files
    from urbanrepml.tracking.fusion import log_fusion_inputs

    if records.inputs is not None:
        log_fusion_inputs(records.inputs, context="locenc_input")
    else:
        log_source_files({Path(records.source).name: records.source}, context="locenc_input")
    d = records.data
    mlflow.log_params({"records.kind": records.kind, "records.n": d.n, "records.dim": d.dim,
                       "records.digest": records.digest[:16]})


# ---------------------------------------------------------------------------------------------- training


class _PrefixedHooks:
    """A refit's hooks: its epoch metrics as ``refit_<name>`` on the run; no checkpoints (the final model is logged)."""

    def __init__(self, run_id: str):
        from urbanrepml.tracking.checkpoints import MlflowTrainHooks

        self.inner = MlflowTrainHooks(run_id, log_best=False)

    def epoch_end(self, epoch, metrics):
        self.inner.epoch_end(epoch, {f"refit_{k}": v for k, v in metrics.items()})

    def best(self, state, epoch): ...

    def checkpoint(self, state, epoch): ...

    def flush(self):
        self.inner.flush()


def tune_and_train(p: Params, base: LocencConfig, data):
    """An Optuna study of ``p.tune`` trials (nested runs); returns the best trial's config and result."""
    import mlflow
    import optuna

    from urbanrepml.tasks.location.search import parse_families, suggest
    from urbanrepml.tasks.location.task import train_location_encoder
    from urbanrepml.tracking import tag
    from urbanrepml.tracking.checkpoints import TrialHooks

    families = parse_families(p.tune_encoders)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=p.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=max(1, base.epochs // 4)))
    best: dict = {}

    def objective(trial):
        cfg, values = suggest(trial, base, families)
        with mlflow.start_run(nested=True, run_name=f"locenc-trial-{trial.number}") as run:
            mlflow.set_tags({tag("stage"): "locenc_trial", tag("model"): cfg.encoder, tag("trial"): str(trial.number)})
            mlflow.log_params({f"trial.{k}": v for k, v in values.items()})
            try:
                result = train_location_encoder(data, cfg,
                                                hooks=TrialHooks(trial, run.info.run_id, "val_top10"), progress=False)
            except optuna.TrialPruned:
                mlflow.end_run(status="KILLED")
                raise
            value = float(result.fit.best_value)
            mlflow.log_metrics({"best_val_top10": value, "best_epoch": result.fit.best_epoch})
        if not best or value > best["value"]:
            best.update(value=value, cfg=cfg, result=result, number=trial.number, values=values)
        return value

    study.optimize(objective, n_trials=p.tune)
    if not best:
        raise UrbanReprError(f"no tuning trial finished (all {p.tune} were pruned); raise tune or epochs")
    mlflow.log_params({f"tuned.{k}": v for k, v in best["values"].items()})
    mlflow.log_metrics({"tune_trials": len(study.trials), "tune_best_trial": best["number"]})
    return best["cfg"], best["result"]


# ---------------------------------------------------------------------------------------------- evaluation


def _probe_metrics(metrics: dict, prefix: str, with_references: bool) -> dict:
    out = {}
    for key, value in metrics.items():
        if "_fold" in key:
            continue
        if key == "mean_r2" or key.startswith("r2_"):
            out[f"{prefix}_{key}"] = value
        elif with_references:
            for src, dst in (("baseline_concat_", "concat_"), ("baseline_ring_", "ring_"),
                             ("reference_knn_latlon_", "knn_latlon_")):
                if key.startswith(src) and (key.endswith("mean_r2") or key[len(src):].startswith("r2_")):
                    out[dst + key[len(src):]] = value
    return out


def _publish_and_probe(table, spec, area, resolution: int, prefix: str, p: Params, lines: list[str]) -> dict:
    """Write ``table`` (``<data dir>/tables/<area>/<modality>_res<r>.parquet``), log it, probe it (nested)."""
    from urbanrepml.stages.modality import table_path
    from urbanrepml.stages.probe import run_probe_stage
    from urbanrepml.tables import publish_on_success
    from urbanrepml.tracking.locenc import log_file

    path = table_path(spec.name, table.meta.modality, resolution)
    with publish_on_success(table, path, area_cells=area.cells(resolution)):
        log_file(table.path, "tables")
    label = {"probe": "location", "rag_probe": "location+RAG", "geoclip_probe": "GeoCLIP"}[prefix]
    lines.append(f"{label} table: {path}")
    if not (p.probe and spec.targets):
        return {}
    metrics = run_probe_stage(str(spec.source_file), table=str(path), nested=True, figures=False, seed=0)
    return _probe_metrics(metrics, prefix, with_references=prefix == "probe")


def _covers(bounds, cells) -> float:
    from urbanrepml.areas import h3ops

    lat, lon = h3ops.cell_centroids(cells)
    inside = (lat >= bounds[0]) & (lat <= bounds[1]) & (lon >= bounds[2]) & (lon <= bounds[3])
    return float(inside.mean()) if len(cells) else 0.0


def evaluate_cells(result, service, records: Records, spec, p: Params, run_id: str, lines: list[str]) -> dict:
    """Per-cell tables (location, RAG, GeoCLIP) of the area and their probes."""
    from urbanrepml.areas import build_area
    from urbanrepml.tasks.location.evaluate import cell_table, rag_table

    area = build_area(spec, [p.resolution])
    cells = area.cells(p.resolution)
    cover = _covers(result.task.bounds, cells)
    if cover < 0.5:
        lines.append(f"no per-cell tables: the records' region covers {cover:.0%} of {spec.name!r}'s cells")
        return {}
    extra = {"encoder": result.task.cfg.encoder, "run_id": run_id}
    metrics = _publish_and_probe(cell_table(result.model.encoder, cells, spec.name, "locenc", run_id, extra),
                                 spec, area, p.resolution, "probe", p, lines)
    metrics.update(_publish_and_probe(rag_table(service, cells, records.data, p.k, spec.name, "locrag", run_id),
                                      spec, area, p.resolution, "rag_probe", p, lines))
    if p.compare_geoclip:
        from urbanrepml.models.location.geoclip import build_geoclip

        try:
            geoclip = build_geoclip()
        except UrbanReprError as exc:
            lines.append(f"GeoCLIP comparison skipped: {exc}")
        else:
            table = cell_table(geoclip, cells, spec.name, "geoclip", run_id, {"encoder": "geoclip (pretrained, global)"})
            metrics.update(_publish_and_probe(table, spec, area, p.resolution, "geoclip_probe", p, lines))
    return metrics


def log_map(model, bounds, data, title: str, size: int) -> dict:
    """The PCA-RGB map of the location embeddings on a grid over ``bounds``: PNG + self-contained HTML."""
    import matplotlib.pyplot as plt
    import mlflow

    from urbanrepml.tasks.location.evaluate import grid, pca_rgb
    from urbanrepml.tasks.location.maps import html_map, png_map
    from urbanrepml.tasks.location.task import encode

    lat, lon = grid(bounds, size)
    rgb, share = pca_rgb(encode(model.encoder, lat, lon))
    image = rgb.reshape(size, size, 3)
    with tempfile.TemporaryDirectory() as tmp:
        fig = png_map(image, bounds, title, points=(data.lat, data.lon))
        fig.savefig(Path(tmp) / "locenc_map.png")
        plt.close(fig)
        html_map(image, bounds, title).write_html(Path(tmp) / "locenc_map.html", include_plotlyjs=True, full_html=True)
        mlflow.log_artifact(str(Path(tmp) / "locenc_map.png"), artifact_path="figures")
        mlflow.log_artifact(str(Path(tmp) / "locenc_map.html"), artifact_path="figures")
    return {f"map_pc{i + 1}_share": float(s) for i, s in enumerate(share)}


def log_model(result, service, records: Records, scope: str, p: Params, run_id: str) -> None:
    """``model/locenc.pt`` (the checkpoint) and the pyfunc ``locenc_model`` (scripted encoder + bank)."""
    import mlflow
    import torch

    from urbanrepml.models.location.checkpoint import checkpoint, save
    from urbanrepml.tracking.locenc_pyfunc import log_locenc_model

    cfg = result.task.cfg
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "locenc.pt"
        save(checkpoint(result.model, cfg.encoder, result.encoder_config), ckpt)
        mlflow.log_artifact(str(ckpt), artifact_path="model")
        service_path = Path(tmp) / "locenc_service.pt"
        with warnings.catch_warnings():  # the pyfunc loads TorchScript with torch alone; the deprecation notice is noise
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.script(service).save(str(service_path))
        d = records.data
        lat0, lon0 = (result.task.bounds[0] + result.task.bounds[1]) / 2, (result.task.bounds[2] + result.task.bounds[3]) / 2
        meta = {"study_area": scope, "encoder": cfg.encoder, "dim": int(result.model.out_dim), "bank_dim": int(d.dim),
                "bank_records": int(d.n), "bank_kind": records.kind, "producer_run_id": run_id,
                "bounds": list(result.task.bounds), "example_lat": lat0, "example_lon": lon0}
        log_locenc_model(service_path, meta, bank_ids=list(d.ids), k=p.k)


def split_digest(records: Records, held: np.ndarray, cfg: LocencConfig) -> str:
    """Digest of the input records and the held-out ones: two runs are comparable only when it is equal."""
    ids = "\n".join(sorted(map(str, records.data.ids[held])))
    text = f"{records.digest}|{cfg.block_resolution}|{cfg.val_fraction}|{cfg.seed}|{ids}"
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- stage


def run_locenc_stage(p: Params):
    """Run the stage (see the module docstring); returns ``(metrics, registered version or None)``."""
    import mlflow
    import torch

    from urbanrepml.models.location.retrieval import service_from_model
    from urbanrepml.tasks.location.evaluate import check_k, rag_vs_knn
    from urbanrepml.tasks.location.task import refit_location_encoder, train_location_encoder
    from urbanrepml.tracking import configure_tracking, stage_run, tag
    from urbanrepml.tracking.checkpoints import MlflowTrainHooks
    from urbanrepml.tracking.locenc import METRIC_TAG, SPLIT_TAG, locenc_model_name, promote_locenc, register_locenc
    from urbanrepml.tracking.runs import log_new_params

    torch.set_num_threads(min(torch.get_num_threads(), 4))
    cfg = p.config()
    spec = load_study_area(p.study_area)
    configure_tracking()
    records = read_records(p, spec)  # a bad file fails before any run exists
    if records is not None:
        check_k(p.k, records.data.n)
    kind = records.kind if records is not None else input_kind(p.input)
    tags = {"model": cfg.encoder, "resolution": p.resolution, "input": kind, "family": "locenc"}
    # Image records are scoped by their dataset (runs in urbanrepml-images-<name>, model urbanrepml-locenc-<name>).
    scope = records.scope if records is not None and records.scope else spec.name
    run_scope = image_scope(scope) if kind == "images" else spec.name
    lines: list[str] = []
    with stage_run("locenc", run_scope, tags=tags, run_name=f"locenc-{cfg.encoder}") as run:
        run_id = run.info.run_id
        start = time.perf_counter()
        log_new_params({k: ("" if v is None else v) for k, v in p.__dict__.items()})
        if records is None:
            records, built = store_records(spec, p.resolution)
            check_k(p.k, records.data.n)
            if built:
                mlflow.set_tag(tag("built_modalities"), ",".join(built))
        log_records(records, p)
        data = records.data
        if p.tune:
            cfg, result = tune_and_train(p, cfg, data)
            mlflow.set_tag(tag("model"), cfg.encoder)
        else:
            result = train_location_encoder(data, cfg, hooks=MlflowTrainHooks(run_id))
        best = result.fit.history[result.fit.best_epoch - 1] if result.fit.history else {}
        metrics = {f"final_{k}": float(v) for k, v in best.items() if k.startswith("val_")}
        metrics.update({"best_epoch": result.fit.best_epoch, "epochs_run": result.fit.epochs_run,
                        "best_val_top10": float(result.fit.best_value), "records": data.n,
                        "held_out_records": int(result.task.held.sum())})
        bank_x, bank_latlon = torch.from_numpy(data.x), torch.from_numpy(data.latlon)
        validation = service_from_model(result.model, bank_x, bank_latlon)
        rag = rag_vs_knn(validation, data, np.flatnonzero(result.task.held), min(p.k, data.n - 1), result.task.mean,
                         result.task.std)
        metrics.update({"rag_cos": rag["rag_cos"], "geo_knn_cos": rag["geo_knn_cos"]})
        digest = split_digest(records, result.task.held, result.task.cfg)
        if p.refit:
            fitted = refit_location_encoder(data, result.task.cfg, result.fit.best_epoch, result.task.bounds,
                                            hooks=_PrefixedHooks(run_id))
            result = replace(result, model=fitted.model)
            lines.append(f"final encoder: refit on all {data.n} records for {result.fit.best_epoch} epoch(s)")
        service = service_from_model(result.model, bank_x, bank_latlon)
        mlflow.set_tags({SPLIT_TAG: digest, tag("encoder_config"): str({k: v for k, v in result.encoder_config.items()
                                                                          if k != "bounds"})})
        if kind == "images":
            lines.append("no per-cell tables: the records are images (probes need a study area's cell tables)")
        else:
            metrics.update(evaluate_cells(result, service, records, spec, p, run_id, lines))
        metrics.update(log_map(result.model, result.task.bounds, data,
                               f"{scope}: {cfg.encoder} location embeddings, PCA -> RGB", p.map_size))
        log_model(result, service, records, scope, p, run_id)
        metrics["seconds"] = time.perf_counter() - start
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))})
        summary = _summary(scope, cfg, result, metrics)
        mlflow.set_tag("mlflow.note.content", "\n".join([summary, *lines]))
        print("\n".join([summary, *lines]))
    version = None
    if p.register:  # only once the run has ended FINISHED: a failed run never gets a registry version
        version_tags = {METRIC_TAG: f"{float(result.fit.best_value):.6g}", SPLIT_TAG: digest, tag("encoder"): cfg.encoder,
                        tag("study_area"): scope}
        for key in ("probe_mean_r2", "rag_probe_mean_r2", "geoclip_probe_mean_r2"):
            if key in metrics:
                version_tags[tag(f"locenc.{key}")] = f"{metrics[key]:.6g}"
        version = register_locenc(run_id, scope, tags=version_tags)
        decision = promote_locenc(version, p.min_gain)
        mlflow.MlflowClient().set_tag(run_id, tag("registered_version"), str(version.version))
        print(f"locenc: registered {locenc_model_name(scope)} version {version.version} (alias candidate); {decision.reason}")
    return metrics, version


def _summary(area: str, cfg: LocencConfig, result, metrics: dict) -> str:
    parts = [f"locenc {cfg.encoder} on {area}: {metrics['records']} records, best epoch {result.fit.best_epoch}",
             f"held-out retrieval top-1 {metrics.get('final_val_top1', float('nan')):.3f}, "
             f"top-10 {metrics['best_val_top10']:.3f}; RAG cos {metrics['rag_cos']:.3f} vs geographic kNN "
             f"{metrics['geo_knn_cos']:.3f}"]
    targets = sorted({k[len("probe_r2_"):] for k in metrics if k.startswith("probe_r2_")})
    for name, prefix in (("location", "probe_"), ("location+RAG", "rag_probe_"), ("GeoCLIP", "geoclip_probe_"),
                         ("concat", "concat_"), ("ring", "ring_"), ("lat/lon 10-NN", "knn_latlon_")):
        if f"{prefix}mean_r2" in metrics:
            parts.append(f"{name:<14} mean R² {metrics[f'{prefix}mean_r2']:.3f}  "
                         + "  ".join(f"{t} {metrics.get(f'{prefix}r2_{t}', float('nan')):.3f}" for t in targets))
    return "\n".join(parts)


def run(p: Params):
    return run_locenc_stage(p)


STAGES = {"locenc": Stage("locenc", "regional location encoder (SatCLIP/GeoCLIP-style): train, evaluate with retrieval "
                                    "and probes, map, register", Params, run)}
