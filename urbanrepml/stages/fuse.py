"""The ``fuse`` stage: modality tables -> fused embedding table, pyfunc model and registry version, tracked.

Steps (rank 0 does all tracking; other ``torchrun`` ranks only train):

1. Resume checks (``resume_run_id``: exists, same model and area, readable
   checkpoint) before any run is touched.
2. The fuse run (system metrics on; the same run again when resuming).
3. If the area has no modality tables at ``resolution`` yet (and no ``tables``
   were given), every modality the area has sources for is built first, each as
   a nested run; modalities that cannot run (e.g. aerial without imagery) are
   skipped with a line saying why.
4. Inputs aligned (``join``), transformed (``transform``) and logged as datasets; the concat,
   ring and ringconcat baselines of the same cells and transformed inputs logged.
5. ``concat``/``ring``/``ringconcat``: the baseline is the fused embedding. ``full_unet``/
   ``cone_unet``: trained with checkpoints (see :mod:`urbanrepml.tasks.fusion.train`); with
   ``embedding=code_ringconcat`` the ringconcat features are appended to the code. The
   composition is the tag ``embedding`` of the model version.
6. The fused table (prefix and modality ``fused``) written and logged, the
   pyfunc model logged, and - last, only when everything above succeeded -
   registered as ``urbanrepml-<study_area>`` with alias ``candidate``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from urbanrepml.areas import build_area, parse_resolutions
from urbanrepml.config import DEFAULT_STUDY_AREA, load_study_area
from urbanrepml.constants import FUSED
from urbanrepml.errors import UrbanReprError
from urbanrepml.models.registry import list_models
from urbanrepml.params import param, same_value
from urbanrepml.paths import cache_dir
from urbanrepml.stages.base import Stage
from urbanrepml.tasks.fusion import FAMILY
from urbanrepml.tasks.fusion.baselines import WEIGHTINGS
from urbanrepml.tasks.fusion.inputs import DEFAULT_JOIN, DEFAULT_TRANSFORM, JOINS, TRANSFORMS
from urbanrepml.tasks.fusion.train import FUSE_DEFAULTS, LEARNED_MODELS, TrainConfig, fusion_train_config

MODELS = tuple(list_models(FAMILY))
EMBEDDINGS = ("code", "code_ringconcat")


@dataclass
class Params:
    """Parameters of the ``fuse`` entry point."""

    study_area: str = param(DEFAULT_STUDY_AREA, "bundled area name or path to a study-area TOML")
    model: str = param("full_unet", "fusion model", choices=MODELS)
    resolution: int = param(9, "H3 resolution of the modality tables and the fused table (the finest)")
    resolutions: str = param("9", "resolutions of the U-Net, finest = resolution")
    hidden_dims: str = param("128", "U-Net width per level, finest first (one width: every level)")
    convs_per_level: int = param(2, "GCN layers per level and direction")
    dropout: float = param(0.1, "dropout rate")
    lr: float = param(0.01, "peak learning rate (AdamW, warmup + cosine)")
    epochs: int = param(200, "maximum epochs")
    consistency_weight: float = param(0.5, "weight of the cross-resolution consistency loss")
    cone_root_resolution: int = param(6, "cone_unet: resolution of the cone roots")
    cone_batch: int = param(8, "cone_unet: cones per batch")
    ring_k: int = param(2, "ring baseline: rings aggregated")
    ring_weighting: str = param("exponential", "ring baseline: weight per ring", choices=WEIGHTINGS)
    checkpoint_every: int = param(FUSE_DEFAULTS["checkpoint_every"], "epochs between checkpoints (the best one is kept too)")
    resume_run_id: str | None = param(None, "resume this killed fuse run from its last checkpoint")
    seed: int = param(0, "training seed")
    register: bool = param(True, "register the fused embeddings as a model version (alias candidate)")
    tables: str | None = param(None, "modality tables: poi=a.parquet,roads=b.parquet (default: newest in the store)")
    patience: int = param(FUSE_DEFAULTS["patience"], "early stopping: epochs without validation improvement (0: off)")
    val_fraction: float = param(FUSE_DEFAULTS["val_fraction"], "share of res-7 blocks held out for validation")
    join: str = param(DEFAULT_JOIN, "cells: outer (every cell of the area) or inner (cells every modality covers)",
                      choices=JOINS)
    transform: str = param(DEFAULT_TRANSFORM, "input transform (models and baselines alike)", choices=TRANSFORMS)
    mask_modality: float = param(0.3, "masked objective: probability of hiding a modality block of a cell")
    mask_cell: float = param(0.5, "masked objective: probability of hiding a whole cell")
    visible_weight: float = param(0.0, "masked objective: weight of the loss on visible entries")
    members: int = param(FUSE_DEFAULTS["members"], "independently seeded networks; their codes are concatenated")
    embedding: str = param("code", "registered embedding: code, or code_ringconcat ([code | ringconcat baseline])",
                           choices=EMBEDDINGS)

    def check(self) -> None:
        """Refuse values out of range with one line naming the parameter (before anything runs)."""
        from urbanrepml.tasks.fusion.inputs import parse_tables_param

        parse_tables_param(self.tables)
        lowest = {"epochs": 1, "checkpoint_every": 1, "cone_batch": 1, "convs_per_level": 0, "patience": 0, "ring_k": 0,
                  "seed": 0, "members": 1}
        for name, low in lowest.items():
            if getattr(self, name) < low:
                raise UrbanReprError(f"parameter {name}: must be >= {low}, got {getattr(self, name)}"
                                     + (" (0: no early stopping)" if name == "patience" else ""))
        for name, low, high in (("dropout", 0.0, 1.0), ("val_fraction", 0.0, 1.0), ("mask_modality", 0.0, 1.0),
                                ("mask_cell", 0.0, 1.0)):
            value = getattr(self, name)
            if not low <= value < high:
                raise UrbanReprError(f"parameter {name}: must be in [{low:g}, {high:g}), got {value}")
        for name in ("lr", "consistency_weight", "visible_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (name == "lr" and value == 0):
                raise UrbanReprError(f"parameter {name}: must be a finite number {'> 0' if name == 'lr' else '>= 0'}, got {value}")

    def train_config(self) -> TrainConfig:
        """The training configuration (built the same way as ``tune``'s trials)."""
        res = parse_resolutions(self.resolutions)
        if self.resolution not in res:
            raise UrbanReprError(f"resolution {self.resolution} must be one of resolutions {list(res)} (the finest)")
        return fusion_train_config(
            resolution=self.resolution, resolutions=self.resolutions, hidden_dims=self.hidden_dims, model=self.model,
            convs_per_level=self.convs_per_level, dropout=self.dropout, lr=self.lr, epochs=self.epochs,
            consistency_weight=self.consistency_weight, checkpoint_every=self.checkpoint_every, seed=self.seed,
            cone_root_resolution=self.cone_root_resolution, cone_batch=self.cone_batch, patience=self.patience,
            val_fraction=self.val_fraction, mask_modality=self.mask_modality, mask_cell=self.mask_cell,
            visible_weight=self.visible_weight, members=self.members,
        )

    def logged(self) -> dict:
        """Parameters logged on the run (``resume_run_id`` is a tag, so a resumed run keeps its params)."""
        d = {k: v for k, v in self.__dict__.items() if k != "resume_run_id"}
        d["tables"] = d["tables"] or ""
        return d


def embedding_composition(p: Params, cfg: TrainConfig | None, width: int) -> str:
    """What the registered embedding's columns are, in words (a tag on the run and the model version)."""
    if cfg is None:
        return f"{p.model} baseline ({width} dims)"
    per = width // cfg.members
    return (f"code: {cfg.members} x {p.model} finest output z_0 ({per} dims each, {width} dims; "
            f"masked prediction, {p.transform} inputs, {p.join} join)")


def _has_sources(name: str, spec) -> bool:
    """Whether modality ``name`` with its default settings reads files the study area names."""
    from urbanrepml.modalities import MODALITIES

    try:
        MODALITIES[name]().source_files(spec)
    except UrbanReprError:
        return False
    return True


def ensure_modality_tables(spec, resolution: int) -> list[str]:
    """Build the area's modality tables as nested runs: all when none exists, else the stale ones.

    Every modality the area has sources for is built when the area has no table (of a modality built
    from its files) at ``resolution`` yet; otherwise those whose newest table was built from other
    source files than the area names now are rebuilt.

    Modalities without sources (e.g. aerial without imagery) are skipped with a line
    saying so; a source that fails (corrupt file, no overlap) fails the whole stage.
    Returns the modalities built.
    """
    from urbanrepml.modalities import MODALITIES, current_sources_digests
    from urbanrepml.stages.modality import run_modality_stage
    from urbanrepml.tracking.fusion import stale_modalities
    from urbanrepml.tracking.tables import list_table_modalities

    names = sorted(MODALITIES)
    # Only tables of modalities built from the area's own files count (not e.g. `location`, built on request).
    from_files = [m for m in list_table_modalities(spec.name, resolution) if m in MODALITIES and _has_sources(m, spec)]
    if from_files:
        stale = stale_modalities(spec.name, resolution, current_sources_digests(spec))
        for name, run_id in sorted(stale.items()):
            print(f"fuse: rebuilding modality {name}: its newest table (run {run_id}) was built from other source "
                  f"files than {spec.source_file.name} names now")
        names = sorted(stale)
    built = []
    for name in names:
        cls = MODALITIES[name]
        try:
            modality = cls()
            modality.source_files(spec)
        except UrbanReprError as exc:
            print(f"fuse: skipping modality {name}: {exc}")
            continue
        print(f"fuse: building modality {name} at resolution {resolution} (nested run)")
        # A source the area names but that cannot be read (corrupt, no overlap) is bad input: it fails fuse.
        run_modality_stage(modality, str(spec.source_file), resolution, nested=True)
        built.append(name)
    return built


def _init_distributed(device_type: str) -> tuple[int, int]:
    """Join the torchrun process group when launched by torchrun; return (rank, world size)."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def run_fuse_stage(p: Params):
    """Run the whole stage (see the module docstring); returns the fused table on rank 0, None elsewhere."""
    import torch

    if p.model not in MODELS:
        raise UrbanReprError(f"model must be one of {', '.join(MODELS)}, got {p.model!r}")
    p.check()
    spec = load_study_area(p.study_area)
    cfg = p.train_config() if p.model in LEARNED_MODELS else None
    if cfg is not None and cfg.model == "cone_unet" and p.cone_root_resolution > min(cfg.resolutions):
        raise UrbanReprError(f"cone_root_resolution {p.cone_root_resolution} must not be finer than the coarsest "
                             f"resolution {min(cfg.resolutions)}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rank, world = _init_distributed(device) if p.model in LEARNED_MODELS else (0, 1)
    if world > 1 and p.model != "cone_unet":
        raise UrbanReprError("torchrun with more than one process needs -P model=cone_unet")
    if world > 1 and device == "cuda":
        cfg.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if rank == 0:
        return _rank0(p, spec, cfg, world)
    _worker(p, spec, cfg)
    return None


def _load_inputs(p: Params, spec, area):
    """The fusion inputs; a resumed run gets exactly the tables it started with (checked by digest)."""
    from urbanrepml.modalities import current_sources_digests
    from urbanrepml.tasks.fusion.inputs import load_fusion_inputs, parse_tables_param
    from urbanrepml.tracking.checkpoints import check_resume_inputs, resume_tables
    from urbanrepml.tracking.fusion import store_tables

    tables = parse_tables_param(p.tables)
    provenance = None
    if p.resume_run_id and tables is None:
        tables = resume_tables(p.resume_run_id, p.resolution, cache_dir() / "resume" / p.resume_run_id)
    if tables is None:  # the newest tables built from the source files the area names now
        tables, provenance = store_tables(spec.name, p.resolution, sources=current_sources_digests(spec))
    inputs = load_fusion_inputs(spec, p.resolution, tables, area=area, provenance=provenance, join=p.join,
                                transform=p.transform)
    if p.resume_run_id:
        check_resume_inputs(p.resume_run_id, inputs.digests)
    return inputs


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _worker(p: Params, spec, cfg: TrainConfig) -> None:
    """A torchrun rank > 0: wait for rank 0's preparation, load the same inputs, train its share of cones."""
    from urbanrepml.tasks.fusion.train import train
    from urbanrepml.tracking import configure_tracking
    from urbanrepml.tracking.checkpoints import load_latest_checkpoint

    configure_tracking()
    _barrier(2)  # rank 0 has built tables and checked the resume run
    area = build_area(spec, cfg.resolutions)
    inputs = _load_inputs(p, spec, area)
    state = load_latest_checkpoint(p.resume_run_id) if p.resume_run_id else None
    train(inputs.x, inputs.cells, cfg, resume_state=state, cache_dir=cache_dir() / "cones", progress=False,
          groups=inputs.column_groups, present=inputs.presence)
    _barrier(2)


def _rank0(p: Params, spec, cfg: TrainConfig | None, world: int):
    import mlflow

    from urbanrepml.stages.modality import table_path
    from urbanrepml.tables import publish_on_success
    from urbanrepml.tasks.fusion.baselines import baseline_tables
    from urbanrepml.tasks.fusion.inputs import fused_table
    from urbanrepml.tasks.fusion.train import train
    from urbanrepml.tracking import configure_tracking, log_embedding_table, tag
    from urbanrepml.tracking.checkpoints import MlflowTrainHooks, fuse_run, load_latest_checkpoint, resume_checks
    from urbanrepml.tracking.fusion import log_baselines, log_fusion_inputs
    from urbanrepml.tracking.pyfunc import log_embedding_model
    from urbanrepml.tracking.registry import register_embeddings

    configure_tracking()
    state = None
    if p.resume_run_id:
        if p.model not in LEARNED_MODELS:
            raise UrbanReprError(f"resume_run_id only applies to learned models ({', '.join(LEARNED_MODELS)})")
        resume_checks(p.resume_run_id, spec.name, p.model)
        state = load_latest_checkpoint(p.resume_run_id)
        logged = mlflow.get_run(p.resume_run_id).data.params
        mine = {k: str(v) for k, v in p.logged().items()}
        differ = [k for k, v in mine.items() if k in logged and not same_value(logged[k], v) and k != "register"]
        if differ:
            raise UrbanReprError(f"resume_run_id {p.resume_run_id}: parameters differ from the original run "
                                 f"({', '.join(f'{k}: {logged[k]} -> {mine[k]}' for k in differ[:4])}); resume with the same ones")
    tags = {"model": p.model, "resolution": p.resolution, "modality": FUSED}
    if world > 1:
        tags["world_size"] = world
    with fuse_run(spec.name, params=p.logged(), tags=tags, resume_run_id=p.resume_run_id,
                  run_name=f"fuse-{p.model}") as run:
        run_id = run.info.run_id
        if p.resume_run_id:
            mlflow.set_tags({tag("resumed_from_epoch"): str(state["epoch"]), tag("completed"): "false"})
        elif not p.tables:
            built = ensure_modality_tables(spec, p.resolution)
            if built:
                mlflow.set_tag(tag("built_modalities"), ",".join(built))
        area = build_area(spec, cfg.resolutions if cfg else [p.resolution])
        _barrier(world)
        inputs = _load_inputs(p, spec, area)
        mlflow.set_tags({tag("join"): inputs.join, tag("transform"): inputs.transform})
        computed = baseline_tables(inputs, area, p.ring_k, p.ring_weighting, run_id=run_id)
        if not p.resume_run_id:
            log_fusion_inputs(inputs)
            log_baselines(computed, area.cells(p.resolution))
        extra: dict = {"model": p.model}
        if cfg is None:
            if p.resume_run_id is None:
                values = computed[p.model].frame.to_numpy()
            else:  # pragma: no cover - refused above
                raise AssertionError
        else:
            hooks = MlflowTrainHooks(run_id)
            result = train(inputs.x, inputs.cells, cfg, hooks=hooks, resume_state=state,
                           cache_dir=cache_dir() / "cones", groups=inputs.column_groups, present=inputs.presence)
            _barrier(world)
            values = result.embedding
            mlflow.log_metrics({"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
                                "epochs_run": result.epochs_run, "stopped_early": float(result.stopped_early)})
            extra.update({"best_epoch": result.best_epoch, "members": cfg.members})
        composition = embedding_composition(p, cfg, values.shape[1])
        if p.embedding == "code_ringconcat":
            import numpy as np

            rc = computed["ringconcat"].frame.to_numpy()
            values = np.concatenate([values, rc], axis=1).astype(np.float32)
            composition += f" | ringconcat baseline ({rc.shape[1]} dims)"
        extra["embedding"] = composition
        mlflow.set_tag(tag("embedding"), composition)
        table = fused_table(values, inputs, run_id, extra)
        local = table_path(spec.name, FUSED, p.resolution)
        if not p.register:  # the shared local table stays the one registered as @candidate
            local = local.parent / "unregistered" / run_id / local.name
        with publish_on_success(table, local, area_cells=area.cells(p.resolution)):
            log_embedding_table(table)
            log_embedding_model(table)
            mlflow.log_metrics({"n_cells": table.frame.shape[0], "embedding_dim": table.frame.shape[1]})
        mlflow.set_tag(tag("completed"), "true")
        note = (f"fuse {p.model} on {spec.name} res {p.resolution}: {table.frame.shape[0]} cells x "
                f"{table.frame.shape[1]} dims" + (f", best epoch {result.best_epoch}" if cfg else ""))
        mlflow.set_tag("mlflow.note.content", note)
        print(note)
    if p.register:  # only once the run has ended FINISHED: a failed run never gets a registry version
        version = register_embeddings(run_id, spec.name)
        client = mlflow.MlflowClient()
        client.set_tag(run_id, tag("registered_version"), str(version.version))
        client.set_model_version_tag(version.name, str(version.version), "embedding", composition)
        client.set_model_version_tag(version.name, str(version.version), "embedding_kind", p.embedding)
        print(f"fuse: registered urbanrepml-{spec.name} version {version.version} with alias candidate")
    return table


STAGES = {"fuse": Stage("fuse", "modality tables -> fused embeddings (concat, ring, ringconcat, full_unet, cone_unet), "
                                "tracked and registered",
                        Params, run_fuse_stage)}
