"""Concept-aware geolocation: ``concept_stage0``, ``concept_stage1``, ``concept_stage2`` and ``concept_pipeline``.

Each stage freezes what the previous one trained and reads its model by URI (``runs:/<id>/model``, a bare
run id, or a registry URI), refusing a model of another family with one line; the URI is recorded on the
run (tag ``urbanrepml.parent_model_uri``, and as a model input). All three read the dataset's one stored
split (train/val/test) and build the same semantic geocells from its training images.

- stage 0: image encoder (top ``trainable_blocks`` blocks on cached stem features) + concept projection +
  GPS adapter on a frozen location encoder; contrastive losses (:mod:`urbanrepml.tasks.concept.stage0`).
- stage 1: concept bottleneck + prototype classifiers (:mod:`urbanrepml.tasks.concept.stage1`); test concept
  metrics.
- stage 2: cross-attention geolocation head for each ablation (:mod:`urbanrepml.tasks.concept.stage2`);
  metrics side by side, attention figures, geocell table and map; the ``mode`` model is logged as pyfunc and
  registered as ``urbanrepml-conceptgeo-<dataset>`` (alias ``candidate``; promotion by ``test_median_km``).
- pipeline: the three as nested runs (building the ``concepts`` dataset first when it is missing).

Runs go to experiment ``urbanrepml-images-<dataset>``.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.constants import DATASET, image_scope
from urbanrepml.errors import UrbanReprError
from urbanrepml.params import logged, param
from urbanrepml.stages.base import Stage

DEFAULT_DATASET = "naip_concepts"
BANDS_HELP = ("image bands read as the encoder's red, green, blue (1-based); 4,1,2 = colour infrared "
              "(NIR, red, green) of R, G, B, NIR imagery such as NAIP")
CONTEXT_HELP = "pixels of surroundings added on each side of a raster chip before it is resized (photos: none)"
# hand-labelled OpenSfM photos (Lund, Berlin) that join the NAIP chips in the bundled dataset
BUNDLED_PHOTOS = Path(__file__).resolve().parents[2] / "tests" / "data" / "concepts" / "opensfm_concepts.csv"
MODES = ("both", "concept_only", "image_only")


@dataclass
class Stage0Params:
    """Parameters of ``concept_stage0``."""

    dataset: str = param(DEFAULT_DATASET, "a concept dataset built by the concepts stage (its name) or an index parquet")
    encoder: str = param("efficientnet_lite0", "image encoder", choices=("efficientnet_lite0", "small_cnn"))
    input_size: int = param(96, "encoder input side in pixels")
    bands: str = param("1,2,3", BANDS_HELP)
    context: int = param(0, CONTEXT_HELP)
    trainable_blocks: int = param(2, "top encoder blocks trained in stage 0 (the rest frozen, features cached)")
    location_encoder: str = param("geoclip", "frozen location encoder: geoclip (pretrained), rff (fixed features), or "
                                             "a registered location encoder's URI, e.g. models:/urbanrepml-locenc-<scope>@champion")
    text_encoder: str = param("builtin", "text prototypes: builtin (TF-IDF + SVD) or clip (text_model folder)",
                              choices=("builtin", "clip"))
    text_model: str | None = param(None, "clip: local folder of a CLIP model saved with save_pretrained")
    dim: int = param(128, "width of the shared image/GPS/concept space")
    temperature: float = param(0.07, "InfoNCE temperature")
    w_gps: float = param(1.0, "weight of the image-GPS InfoNCE")
    w_meta: float = param(1.0, "weight of the image-meta prototype InfoNCE")
    w_parent: float = param(0.5, "weight of the image-parent prototype InfoNCE")
    w_hier: float = param(0.5, "weight of the intra-batch hierarchy consistency")
    w_patch: float = param(0.5, "weight of the patch-GPS InfoNCE")
    w_anchor: float = param(0.1, "weight of the anchor loss to the untouched encoder (0: off)")
    batch_size: int = param(64, "images per batch")
    epochs: int = param(6, "epochs")
    lr: float = param(5e-4, "peak learning rate")
    min_samples_per_cell: int = param(50, "semantic geocells: training samples per cell (k = n // this, per country)")
    countries: str | None = param(None, "keep only these countries (comma-separated ISO codes); each must have images")
    seed: int = param(0, "seed")


@dataclass
class Stage1Params:
    """Parameters of ``concept_stage1``."""

    dataset: str = param(DEFAULT_DATASET, "the concept dataset (as in stage 0)")
    stage0: str = param("", "the stage-0 model: runs:/<id>/model, a run id, or a registry URI")
    hidden: int = param(256, "bottleneck MLP hidden width")
    dropout: float = param(0.2, "bottleneck dropout")
    gamma: float = param(2.0, "focal loss gamma")
    smoothing: float = param(0.2, "label smoothing")
    w_parent: float = param(0.5, "weight of the parent focal loss")
    w_hier: float = param(0.5, "weight of the hierarchy consistency KL")
    w_guided: float = param(0.5, "weight of the parent-guided meta loss")
    w_proto: float = param(0.1, "weight of the prototype contrastive loss")
    w_residual: float = param(0.01, "weight of the prototype residual L2")
    batch_size: int = param(64, "images per batch")
    epochs: int = param(15, "epochs")
    lr: float = param(2e-3, "peak learning rate")
    min_samples_per_cell: int = param(50, "semantic geocells: training samples per cell")
    countries: str | None = param(None, "keep only these countries (comma-separated ISO codes)")
    seed: int = param(0, "seed")


@dataclass
class Stage2Params:
    """Parameters of ``concept_stage2``."""

    dataset: str = param(DEFAULT_DATASET, "the concept dataset (as in stage 0)")
    stage1: str = param("", "the stage-1 model: runs:/<id>/model, a run id, or a registry URI")
    mode: str = param("both", "the model kept and registered", choices=MODES)
    ablations: str = param("both,concept_only,image_only", "modes trained and reported side by side")
    heads: int = param(4, "attention heads")
    gate: bool = param(True, "gate the attended patches")
    w_offset: float = param(5.0, "weight of the offset MSE (loss = cell CE + w_offset x MSE)")
    batch_size: int = param(64, "images per batch")
    epochs: int = param(20, "epochs")
    lr: float = param(2e-3, "peak learning rate")
    min_samples_per_cell: int = param(50, "semantic geocells: training samples per cell")
    countries: str | None = param(None, "keep only these countries (comma-separated ISO codes)")
    figures: int = param(4, "test images drawn with their attention grid")
    register: bool = param(True, "register the model as urbanrepml-conceptgeo-<dataset> (alias candidate)")
    min_gain: float = param(0.0, "promotion: test_median_km gain (km) over the champion needed to move it")
    seed: int = param(0, "seed")


@dataclass
class PipelineParams:
    """Parameters of ``concept_pipeline``."""

    dataset: str = param(DEFAULT_DATASET, "the concept dataset (built with the concepts stage's defaults when missing)")
    encoder: str = param("efficientnet_lite0", "image encoder", choices=("efficientnet_lite0", "small_cnn"))
    input_size: int = param(96, "encoder input side in pixels")
    bands: str = param("1,2,3", BANDS_HELP)
    context: int = param(0, CONTEXT_HELP)
    trainable_blocks: int = param(2, "top encoder blocks trained in stage 0")
    location_encoder: str = param("geoclip", "frozen location encoder of stage 0: geoclip, rff or a locenc model URI")
    min_samples_per_cell: int = param(50, "semantic geocells: training samples per cell")
    epochs0: int = param(6, "stage-0 epochs")
    epochs1: int = param(15, "stage-1 epochs")
    epochs2: int = param(20, "stage-2 epochs")
    register: bool = param(True, "register the stage-2 model")
    seed: int = param(0, "seed of all three stages")


# ------------------------------------------------------------------------------------------------ helpers


def _countries(text: str | None) -> list[str] | None:
    return [c.strip() for c in str(text).split(",") if c.strip()] if text else None


def _load(dataset: str, min_samples_per_cell: int, countries: str | None, seed: int):
    from urbanrepml.images import read_index
    from urbanrepml.tasks.concept.data import load_concept_data, resolve_index_file

    if int(min_samples_per_cell) <= 0:
        raise UrbanReprError(f"parameter min_samples_per_cell must be >= 1, got {min_samples_per_cell}")
    path = resolve_index_file(dataset)
    index = read_index(path)
    data = load_concept_data(index, min_samples_per_cell=min_samples_per_cell, countries=_countries(countries), seed=seed)
    return path, data


def _start(stage: str, name: str, p) -> object:
    from urbanrepml.tracking import stage_run

    return stage_run(stage, image_scope(name), params=logged(p), tags={DATASET: name}, run_name=stage.replace("_", "-"))


def _common_logs(path: Path, data, name: str) -> None:
    import mlflow

    from urbanrepml.tracking import log_table_input

    log_table_input(f"{name}-index", path, context="images")
    mlflow.set_tags({"urbanrepml.conceptgeo.split_digest": data.split_digest,
                     "urbanrepml.conceptgeo.hierarchy_digest": data.hierarchy.digest})
    counts = {f"images_{s}": int((data.split == s).sum()) for s in ("train", "val", "test")}
    mlflow.log_metrics({**counts, "meta_concepts": data.hierarchy.n_meta, "parent_concepts": data.hierarchy.n_parent,
                        "geocells": data.geocells.k, "countries": len(set(data.country))})
    mlflow.log_text(data.hierarchy.table().to_csv(index=False), "concepts/hierarchy.csv")


def _save_and_log_model(ckpt: dict, stage: int, data, name: str) -> None:
    import torch

    from urbanrepml.tracking.concept import STAGE_FAMILIES
    from urbanrepml.tracking.concept_pyfunc import log_concept_model

    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / f"conceptgeo{stage}.ckpt"
        torch.save(ckpt, f)
        log_concept_model({"stage": stage, "dataset": name, "split_digest": data.split_digest},
                          checkpoint=f, family=STAGE_FAMILIES[stage].name)


def _read_parent(uri: str, stage: int, data, what: str) -> dict:
    """The checkpoint of the stage-``stage`` model at ``uri`` (family checked, recorded on the run)."""
    import mlflow
    import torch

    from urbanrepml.tracking.concept import STAGE_FAMILIES, model_uri_of
    from urbanrepml.tracking.concept_pyfunc import stage_checkpoint
    from urbanrepml.tracking.family import require_family

    if not uri:
        raise UrbanReprError(f"parameter {what} is required: the stage-{stage} model (runs:/<id>/model, a run id or a "
                             "registry URI); run concept_pipeline to chain the stages")
    uri = model_uri_of(uri)
    require_family(uri, STAGE_FAMILIES[stage])
    ckpt = torch.load(stage_checkpoint(uri), map_location="cpu", weights_only=False)
    if ckpt.get("stage") != stage:
        raise UrbanReprError(f"model {uri!r} is not a stage-{stage} model")
    if ckpt["hierarchy_digest"] != data.hierarchy.digest:
        raise UrbanReprError(f"model {uri!r} was trained on another concept hierarchy than this dataset's; use the same dataset")
    mlflow.set_tag("urbanrepml.parent_model_uri", uri)
    try:
        info = mlflow.models.get_model_info(uri)
        from mlflow.entities import LoggedModelInput

        if getattr(info, "model_id", None):
            mlflow.log_inputs(models=[LoggedModelInput(info.model_id)])
        if getattr(info, "run_id", None):
            mlflow.set_tag("urbanrepml.parent_run_id", info.run_id)
    except Exception:  # noqa: BLE001 - the tag above is the record; model inputs are a bonus
        pass
    return ckpt


def _bands(text: str) -> tuple[int, int, int] | None:
    from urbanrepml.models.encoders.preprocess import parse_bands

    try:
        return parse_bands(text)
    except ValueError as exc:
        raise UrbanReprError(f"parameter {exc}") from None


def _backbone_from(ckpt0: dict):
    from urbanrepml.models.concept.backbone import SplitBackbone

    bands = ckpt0.get("bands")  # absent (as is context) from older stage-0 checkpoints
    b = SplitBackbone(ckpt0["encoder"], ckpt0["trainable_blocks"], ckpt0["input_size"],
                      bands=None if bands is None else tuple(bands), context=int(ckpt0.get("context", 0)))
    if b.weights_digest != ckpt0["weights_digest"]:
        raise UrbanReprError("the stage-0 model was trained on other encoder weights than the installed ones")
    b.top.load_state_dict(ckpt0["top"])
    for prm in b.top.parameters():
        prm.requires_grad_(False)
    return b.eval()


def _features(backbone, data) -> tuple[np.ndarray, np.ndarray]:
    """Pooled (N, D) and tokens (N, T, D) of the frozen (stage-0) encoder."""
    import torch

    from urbanrepml.tasks.concept.data import stem_features

    stem, _ = stem_features(data.index, backbone)
    pooled, tokens = [], []
    with torch.no_grad():
        for i in range(0, len(stem), 256):
            p, t = backbone.forward_top(torch.from_numpy(stem[i:i + 256]))
            pooled.append(p.numpy())
            tokens.append(t.numpy())
    return np.concatenate(pooled), np.concatenate(tokens)


def _fit(task, cfg, run_id):
    from urbanrepml.tracking.checkpoints import MlflowTrainHooks
    from urbanrepml.training import fit

    return fit(task, cfg.loop(), MlflowTrainHooks(run_id, log_best=False), params={"task": task.name, **asdict(cfg)},
               progress=False)


# ------------------------------------------------------------------------------------------------ stage 0


def check_location_encoder(encoder: str) -> str:
    """``geoclip``, ``rff``, or the URI of a registered location encoder (family ``locenc``); else one clear line."""
    from urbanrepml.tasks.concept.data import LOCATION_ENCODERS

    if encoder in LOCATION_ENCODERS:
        return encoder
    if not encoder.startswith(("models:/", "runs:/")):
        raise UrbanReprError(f"location_encoder must be {', '.join(LOCATION_ENCODERS)} or a location encoder's model URI "
                             f"(models:/urbanrepml-locenc-<scope>@champion), got {encoder!r}")
    from urbanrepml.tracking.family import require_family
    from urbanrepml.tracking.locenc import FAMILY

    require_family(encoder, FAMILY)
    return encoder


def gps_embeddings(lat: np.ndarray, lon: np.ndarray, encoder: str) -> np.ndarray:
    """(N, D) float32 embeddings of the frozen location encoder of stage 0 (see :func:`check_location_encoder`)."""
    from urbanrepml.tasks.concept.data import LOCATION_ENCODERS, location_embeddings

    if encoder in LOCATION_ENCODERS:
        return location_embeddings(lat, lon, encoder)
    from urbanrepml.tracking.locenc_pyfunc import load_locenc_pyfunc

    out = load_locenc_pyfunc(encoder).predict(pd.DataFrame({"lat": lat, "lon": lon}), params={"rag": False})
    x = out[[c for c in out.columns if c.startswith("loc_")]].to_numpy(np.float32, copy=True)
    if not np.isfinite(x).all():
        raise UrbanReprError(f"location encoder {encoder!r} gave no finite embedding for some images (check their lat/lon)")
    return x


def run_stage0(p: Stage0Params) -> str:
    """Train stage 0; log its checkpoint as model ``conceptgeo0``; return the run id."""
    import mlflow

    from urbanrepml.models.concept.backbone import SplitBackbone
    from urbanrepml.models.concept.text import TEMPLATES, hierarchy_prototypes
    from urbanrepml.tasks.concept.data import stem_features
    from urbanrepml.tasks.concept.stage0 import Stage0Config, Stage0Task

    cfg = Stage0Config(dim=p.dim, temperature=p.temperature, w_gps=p.w_gps, w_meta=p.w_meta, w_parent=p.w_parent,
                       w_hier=p.w_hier, w_patch=p.w_patch, w_anchor=p.w_anchor, batch_size=p.batch_size, epochs=p.epochs,
                       lr=p.lr, seed=p.seed)
    cfg.loop()
    location = check_location_encoder(p.location_encoder)  # a wrong URI fails before any run
    path, data = _load(p.dataset, p.min_samples_per_cell, p.countries, p.seed)
    name = data.index.meta.dataset
    backbone = SplitBackbone(p.encoder, p.trainable_blocks, p.input_size, bands=_bands(p.bands), context=p.context)
    with _start("concept_stage0", name, p) as run:
        start = time.perf_counter()
        _common_logs(path, data, name)
        stem, hit = stem_features(data.index, backbone)
        gps = gps_embeddings(data.lat, data.lon, location)
        notes = {}
        if "note" in data.frame.columns:
            notes = data.frame.groupby("meta_concept")["note"].first().dropna().to_dict()
        meta_text, parent_text = hierarchy_prototypes(list(data.hierarchy.metas), list(data.hierarchy.parents), notes,
                                                      encoder=p.text_encoder, folder=p.text_model, seed=p.seed)
        mlflow.log_text("\n".join(TEMPLATES), "concepts/templates.txt")
        task = Stage0Task(backbone, stem, gps, data.meta, data.parent, data.rows("train"), data.rows("val"),
                          meta_text, parent_text, np.asarray(data.hierarchy.meta_to_parent), cfg)
        result = _fit(task, cfg, run.info.run_id)
        out = result.output
        ckpt = {"stage": 0, "dataset": name, "encoder": p.encoder, "input_size": backbone.input_size,
                **backbone.reading, "trainable_blocks": p.trainable_blocks, "weights_digest": backbone.weights_digest,
                "hierarchy": data.hierarchy.to_dict(), "hierarchy_digest": data.hierarchy.digest,
                "split_digest": data.split_digest, "config": asdict(cfg), "location_encoder": p.location_encoder,
                "text_encoder": p.text_encoder, **out}
        _save_and_log_model(ckpt, 0, data, name)
        mlflow.log_metrics({"best_val_loss": result.best_value, "best_epoch": result.best_epoch,
                            "stem_cache_hit": float(hit), "seconds": time.perf_counter() - start})
        print(f"stage 0: best val_loss {result.best_value:.4f} (epoch {result.best_epoch})")
        print(f"run {run.info.run_id}")
        return run.info.run_id


# ------------------------------------------------------------------------------------------------ stage 1


def _stage1_net(ckpt1: dict):
    import torch

    from urbanrepml.tasks.concept.stage1 import Stage1Config, Stage1Net

    c0 = ckpt1["stage0"]
    cfg = Stage1Config(**ckpt1["config"])
    net = Stage1Net(ckpt1["embed_dim"], c0["meta_prototypes"].shape[1], c0["meta_prototypes"], c0["parent_prototypes"],
                    torch.as_tensor(c0["hierarchy"]["meta_to_parent"], dtype=torch.long), cfg)
    net.load_state_dict(ckpt1["net"])
    return net.eval()


def run_stage1(p: Stage1Params) -> str:
    """Train stage 1 on the frozen stage-0 encoder; log ``conceptgeo1``; return the run id."""
    import mlflow
    import torch

    from urbanrepml.tasks.concept.metrics import concept_metrics
    from urbanrepml.tasks.concept.stage1 import Stage1Config, Stage1Task

    cfg = Stage1Config(hidden=p.hidden, dropout=p.dropout, gamma=p.gamma, smoothing=p.smoothing, w_parent=p.w_parent,
                       w_hier=p.w_hier, w_guided=p.w_guided, w_proto=p.w_proto, w_residual=p.w_residual,
                       batch_size=p.batch_size, epochs=p.epochs, lr=p.lr, seed=p.seed)
    cfg.loop()
    path, data = _load(p.dataset, p.min_samples_per_cell, p.countries, p.seed)
    name = data.index.meta.dataset
    with _start("concept_stage1", name, p) as run:
        start = time.perf_counter()
        ckpt0 = _read_parent(p.stage0, 0, data, "stage0")
        _common_logs(path, data, name)
        backbone = _backbone_from(ckpt0)
        pooled, _ = _features(backbone, data)
        task = Stage1Task(pooled, data.meta, data.parent, data.rows("train"), data.rows("val"), ckpt0["meta_prototypes"],
                          ckpt0["parent_prototypes"], np.asarray(data.hierarchy.meta_to_parent), cfg)
        result = _fit(task, cfg, run.info.run_id)
        ckpt = {"stage": 1, "stage0": ckpt0, "config": asdict(cfg), "embed_dim": int(pooled.shape[1]), "net": result.output,
                "hierarchy_digest": data.hierarchy.digest, "split_digest": data.split_digest}
        net = _stage1_net(ckpt)
        metrics = {}
        with torch.no_grad():
            _, ml, pl = net(torch.from_numpy(pooled))
        for split in ("val", "test"):
            r = data.rows(split)
            metrics.update(concept_metrics(ml.numpy()[r], pl.numpy()[r], data.meta[r], data.parent[r], f"{split}_"))
        _save_and_log_model(ckpt, 1, data, name)
        mlflow.log_metrics({**metrics, "best_val_meta_top1": result.best_value, "best_epoch": result.best_epoch,
                            "seconds": time.perf_counter() - start})
        print(f"stage 1: test meta top-1 {metrics['test_meta_top1']:.3f}, parent top-1 {metrics['test_parent_top1']:.3f}")
        print(f"run {run.info.run_id}")
        return run.info.run_id


# ------------------------------------------------------------------------------------------------ stage 2


def _parse_modes(text: str, mode: str) -> list[str]:
    modes = [m.strip() for m in str(text).split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise UrbanReprError(f"parameter ablations: unknown mode(s) {bad}; choose from {', '.join(MODES)}")
    if mode not in MODES:
        raise UrbanReprError(f"parameter mode: expected one of {', '.join(MODES)}, got {mode!r}")
    return [mode] + [m for m in modes if m != mode]


def _attention_figure(data, rows, attn, grid, preds, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from urbanrepml.sources.imagery.decode import ImageLoader

    loader = ImageLoader()
    n = len(rows)
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 5.4), squeeze=False)
    paths, windows = data.index.image_paths(), data.index.windows()
    for k, r in enumerate(rows):
        img = loader.load(paths[r], windows[r], name=str(data.frame.index[r]))[:, :, :3]
        img = img.astype(np.float32)
        img = (img - img.min()) / max(float(img.max() - img.min()), 1e-6)
        axes[0, k].imshow(img)
        axes[0, k].set_title(f"{data.hierarchy.metas[data.meta[r]]}", fontsize=8)
        axes[1, k].imshow(img)
        h, w = img.shape[:2]
        axes[1, k].imshow(attn[k].reshape(grid, grid), cmap="magma", alpha=0.6, extent=(0, w, h, 0),
                          interpolation="nearest")
        axes[1, k].set_title(preds[k], fontsize=7)
        for a in axes[:, k]:
            a.axis("off")
    fig.suptitle("stage 2 cross-attention (concept query -> patches)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _geocell_figure(data):
    """Plotly map of the semantic geocells: training images coloured by geocell, centres as crosses."""
    import plotly.graph_objects as go

    lat, lon = data.geocells.latlon()
    tr = data.rows("train")
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=data.lon[tr], y=data.lat[tr], mode="markers", name="training images",
                             marker={"size": 4, "color": list(map(int, data.cell[tr])), "colorscale": "Turbo",
                                     "colorbar": {"title": "geocell"}},
                             text=[f"geocell {int(c)}" for c in data.cell[tr]]))
    fig.add_trace(go.Scatter(x=lon, y=lat, mode="markers", name="geocell centres",
                             marker={"size": 10, "color": "black", "symbol": "x"},
                             text=[f"geocell {i}" for i in range(len(lat))]))
    mid = float(np.mean(data.lat[tr])) if len(tr) else 0.0
    fig.update_layout(title=f"{data.geocells.k} semantic geocells (crosses: centres)", xaxis_title="longitude",
                      yaxis_title="latitude", template="plotly_white",
                      yaxis={"scaleanchor": "x", "scaleratio": 1.0 / max(np.cos(np.radians(mid)), 1e-3)})
    return fig


def run_stage2(p: Stage2Params) -> str:
    """Train the stage-2 head for every ablation; log, log the model, register; return the run id."""
    import mlflow
    import torch

    from urbanrepml.geodesy import scale_thresholds
    from urbanrepml.models.concept.network import ConceptGeolocator
    from urbanrepml.tasks.concept.metrics import geo_metrics
    from urbanrepml.tasks.concept.stage2 import Stage2Config, Stage2Task
    from urbanrepml.tracking.concept import STAGE_FAMILIES
    from urbanrepml.tracking.concept_pyfunc import log_concept_model
    from urbanrepml.tracking.figure_png import write_png

    modes = _parse_modes(p.ablations, p.mode)
    if not (np.isfinite(p.min_gain) and p.min_gain >= 0):
        raise UrbanReprError(f"parameter min_gain must be a finite number >= 0, got {p.min_gain}")
    path, data = _load(p.dataset, p.min_samples_per_cell, p.countries, p.seed)
    name = data.index.meta.dataset
    family = STAGE_FAMILIES[2]
    with _start("concept_stage2", name, p) as run:
        start = time.perf_counter()
        ckpt1 = _read_parent(p.stage1, 1, data, "stage1")
        ckpt0 = ckpt1["stage0"]
        _common_logs(path, data, name)
        backbone = _backbone_from(ckpt0)
        net1 = _stage1_net(ckpt1)
        pooled, tokens = _features(backbone, data)
        with torch.no_grad():
            concept = net1.bottleneck(torch.from_numpy(pooled)).numpy()
        offsets = data.geocells.offsets(data.lat, data.lon, data.cell)
        thresholds = scale_thresholds(data.lat, data.lon)
        test = data.rows("test")
        table, models, tasks = [], {}, {}
        for mode in modes:
            cfg = Stage2Config(mode=mode, heads=p.heads, gate=p.gate, w_offset=p.w_offset, batch_size=p.batch_size,
                               epochs=p.epochs, lr=p.lr, seed=p.seed)
            task = Stage2Task(concept, tokens, data.cell, offsets, data.geocells.centres, data.lat, data.lon,
                              data.rows("train"), data.rows("val"), cfg)
            from urbanrepml.training import fit

            result = fit(task, cfg.loop(), params={"task": task.name, **asdict(cfg)}, progress=False)
            model = task.build_model(None)
            model.load_state_dict(result.output)
            logits, off, attn = task.predict(model, test)
            m = geo_metrics(logits, off / task.offset_scale, data.geocells.centres, task.offset_scale, data.cell[test],
                            data.lat[test], data.lon[test], thresholds, "")
            m["best_val_median_km"] = result.best_value
            table.append({"mode": mode, **m})
            mlflow.log_metrics({f"{mode}_test_{k}": v for k, v in m.items()})
            models[mode], tasks[mode] = model, task
        abl = pd.DataFrame(table).set_index("mode")
        mlflow.log_text(abl.to_csv(), "ablations/ablations.csv")
        mlflow.log_text(abl.round(4).to_markdown() if _has_tabulate() else abl.round(4).to_string(), "ablations/ablations.md")
        main = abl.loc[p.mode].to_dict()
        mlflow.log_metrics({f"test_{k}": v for k, v in main.items()})
        print(abl[["cell_top1", "median_km", "mean_km"]].round(4).to_string())
        # geocells: table and map
        mlflow.log_text(data.geocells.table().to_csv(index=False), "geocells/geocells.csv")
        with tempfile.TemporaryDirectory() as tmp:
            fig = _geocell_figure(data)
            fig.write_html(Path(tmp) / "geocells.html", include_plotlyjs=True, full_html=True)
            write_png(fig, Path(tmp) / "geocells.png")
            mlflow.log_artifact(str(Path(tmp) / "geocells.html"), "figures")
            mlflow.log_artifact(str(Path(tmp) / "geocells.png"), "figures")
            # the whole network, pixels to outputs
            net = ConceptGeolocator(backbone.stem, backbone.top, net1.bottleneck, net1.meta_cls, net1.parent_cls,
                                    models[p.mode]).eval()
            example = torch.zeros(2, 3, backbone.input_size, backbone.input_size)
            with torch.no_grad():
                traced = torch.jit.trace(net, example, check_trace=False)
            net_path = Path(tmp) / "network.pt"
            traced.save(str(net_path))
            # attention figures of sample test images
            if p.figures > 0:
                rows = test[np.linspace(0, len(test) - 1, min(p.figures, len(test))).astype(int)]
                logits, off, attn = tasks[p.mode].predict(models[p.mode], rows)
                preds = [f"cell {c} (true {t})" for c, t in zip(logits.argmax(1), data.cell[rows], strict=True)]
                f = Path(tmp) / f"attention_{p.mode}.png"
                _attention_figure(data, rows, attn, backbone.grid, preds, f)
                mlflow.log_artifact(str(f), "figures")
                mlflow.log_text(json.dumps({str(data.frame.index[r]): a.reshape(backbone.grid, backbone.grid).round(4).tolist()
                                            for r, a in zip(rows, attn, strict=True)}), "figures/attention.json")
            meta = {"stage": 2, "dataset": name, "mode": p.mode, "metas": list(data.hierarchy.metas),
                    "parents": list(data.hierarchy.parents), "centres": data.geocells.centres.tolist(),
                    "offset_scale": tasks[p.mode].offset_scale, "input_size": backbone.input_size,
                    "mean": list(backbone.mean), "std": list(backbone.std), "grid": backbone.grid,
                    **backbone.reading,
                    "split_digest": data.split_digest, "test_median_km": float(main["median_km"])}
            log_concept_model(meta, network=net_path, family=family.name)
        mlflow.log_metric("seconds", time.perf_counter() - start)
        run_id = run.info.run_id
        print(f"run {run_id}")
    if p.register:
        from urbanrepml.tracking.family import promote_version, register_run_model

        mv = register_run_model(family, run_id, name, artifact_path="model",
                                tags={family.metric_tag: float(main["median_km"]), family.split_tag: data.split_digest})
        decision = promote_version(family, mv, p.min_gain)
        print(f"registered {mv.name} version {mv.version}: {decision.reason}")
    return run_id


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------------------ pipeline


def run_pipeline(p: PipelineParams) -> str:
    """Stages 0, 1 and 2 as nested runs of one ``concept_pipeline`` run."""
    import mlflow

    from urbanrepml.images import read_index
    from urbanrepml.tasks.concept.data import resolve_index_file

    build = False
    try:
        name = read_index(resolve_index_file(p.dataset), check_files=False).meta.dataset
    except UrbanReprError:
        if p.dataset != DEFAULT_DATASET:
            raise
        name, build = DEFAULT_DATASET, True
    if int(p.min_samples_per_cell) <= 0:
        raise UrbanReprError(f"parameter min_samples_per_cell must be >= 1, got {p.min_samples_per_cell}")
    with _start("concept_pipeline", name, p) as run:
        if build:  # the bundled dataset: NAIP chips with spectral-rule concepts, BigEarthNet's example
            # patches with CORINE concepts and the hand-labelled OpenSfM photos
            from urbanrepml.stages.concepts import Params as ConceptsParams
            from urbanrepml.stages.concepts import run_concepts

            photos = BUNDLED_PHOTOS if BUNDLED_PHOTOS.is_file() else None
            run_concepts(ConceptsParams(name=DEFAULT_DATASET, photos=str(photos) if photos else None, bigearthnet=True))
        r0 = run_stage0(Stage0Params(dataset=p.dataset, encoder=p.encoder, input_size=p.input_size, bands=p.bands,
                                     context=p.context, trainable_blocks=p.trainable_blocks, location_encoder=p.location_encoder,
                                     min_samples_per_cell=p.min_samples_per_cell, epochs=p.epochs0, seed=p.seed))
        r1 = run_stage1(Stage1Params(dataset=p.dataset, stage0=f"runs:/{r0}/model", epochs=p.epochs1,
                                     min_samples_per_cell=p.min_samples_per_cell, seed=p.seed))
        r2 = run_stage2(Stage2Params(dataset=p.dataset, stage1=f"runs:/{r1}/model", epochs=p.epochs2,
                                     min_samples_per_cell=p.min_samples_per_cell, register=False, seed=p.seed))
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        summary = {}
        for rid in (r1, r2):
            summary.update({k: v for k, v in client.get_run(rid).data.metrics.items() if k.startswith(("test_", "both_",
                            "concept_only_", "image_only_"))})
        mlflow.log_metrics(summary)
        mlflow.set_tags({"urbanrepml.stage0_run": r0, "urbanrepml.stage1_run": r1, "urbanrepml.stage2_run": r2})
        run_id = run.info.run_id
    if p.register:
        from urbanrepml.tracking.concept import STAGE_FAMILIES
        from urbanrepml.tracking.family import promote_version, register_run_model

        family = STAGE_FAMILIES[2]
        run2 = MlflowClient().get_run(r2)
        mv = register_run_model(family, r2, name, artifact_path="model",
                                tags={family.metric_tag: run2.data.metrics["test_median_km"],
                                      family.split_tag: run2.data.tags["urbanrepml.conceptgeo.split_digest"]})
        print(f"registered {mv.name} version {mv.version}: {promote_version(family, mv).reason}")
    return run_id


STAGES = {
    "concept_stage0": Stage("concept_stage0", "concept geolocation stage 0: align the image encoder with GPS and concepts",
                            Stage0Params, run_stage0),
    "concept_stage1": Stage("concept_stage1", "concept geolocation stage 1: concept bottleneck and prototype classifier",
                            Stage1Params, run_stage1),
    "concept_stage2": Stage("concept_stage2", "concept geolocation stage 2: cross-attention geolocation, ablations, "
                            "register", Stage2Params, run_stage2),
    "concept_pipeline": Stage("concept_pipeline", "concept geolocation: stages 0, 1 and 2 as nested runs", PipelineParams,
                              run_pipeline),
}
