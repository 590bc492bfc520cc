"""The fusion objective: train one fusion configuration, score its embeddings with the spatial-CV probe.

Per study (fixed, stored on the study and checked when it is continued):

- the inputs: the study area's newest modality tables at ``resolution`` (built first when none exist);
- the validation target set: the area's ``[targets]`` on the cells that have inputs;
- the folds: spatial blocks at ``block_resolution`` (``folds`` of them, seeded by the study ``seed``),
  built once on those cells (their digest is part of the study's data signature);
- the probe (``ridge`` by default, with its alpha chosen inside the training folds).

Per trial: :meth:`tuning.space.SearchSpace.suggest` picks a model and its hyperparameters; a U-Net is
trained with the fusion trainer (:mod:`urbanrepml.tasks.fusion.train`), reporting each epoch's validation
reconstruction loss (on the trainer's held-out spatial blocks) to Optuna for pruning - as its negative,
since the study maximises; ``ring`` is computed directly. The score uses inner folds only: for each of the
probe's outer folds, a spatial CV (ridge, the same block resolution) on the cells of the other folds; the
trial's score is the mean over outer folds of those inner headline mean R² (metrics ``inner_*``), so no
outer fold's own cells are scored with a model chosen on them.
The trial's run gets the per-epoch losses, per-target R², and the fused table
(``tables/fused_res<r>.parquet``) so the best trial can be registered without retraining.

Caveat (said in docs/tuning-and-team-tracking.md too): the best score of a study is optimistic (it is a
maximum over trials scored on the same folds). ``promote`` does not correct this: it re-probes the
registered best trial on the same default folds (ridge, res-7 blocks, 5 folds, fold seed 0 - the study's
folds when the study seed is 0), so the promoted score is still that maximum. Demand a margin
(``-P min_gain`` > 0) or judge on other folds: the ``promote`` entry point has no seed or
block-resolution parameter, but ``run_promote_stage(..., seed=..., block_resolution=...)`` takes them.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from tuning.space import DEFAULT_MAX_EPOCHS, SearchSpace, parse_models
from urbanrepml.errors import UrbanReprError


class PruningHooks:
    """Fusion trainer hooks: report ``-val_reconstruction`` per epoch to the trial, prune when told."""

    def __init__(self, trial, metric: str = "val_reconstruction"):
        self.trial, self.metric = trial, metric
        self.history: list[tuple[int, dict]] = []

    def epoch_end(self, epoch: int, metrics: dict) -> None:
        self.history.append((epoch, dict(metrics)))
        value = float(metrics.get(self.metric, metrics["val_loss"]))
        self.trial.report(-value, epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} ({self.metric} {value:.4f})")

    def checkpoint(self, state, epoch): ...

    def best(self, state, epoch): ...

    def flush(self) -> None: ...

    def log(self) -> None:
        """Log the collected epoch metrics to the active run in one batch."""
        if not self.history:
            return
        import mlflow
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        now = int(time.time() * 1000)
        keep = ("train_loss", "val_loss", "train_reconstruction", "val_reconstruction", "val_consistency")
        metrics = [Metric(k, float(v), now, int(e)) for e, m in self.history for k, v in m.items() if k in keep and np.isfinite(v)]
        client = MlflowClient()
        run_id = mlflow.active_run().info.run_id
        for i in range(0, len(metrics), 900):
            client.log_batch(run_id, metrics=metrics[i:i + 900])


class _InnerScore:
    """Scores of one embedding over the inner CVs of each outer fold's training part."""

    def __init__(self, results):
        self.results = results
        self.mean_r2 = float(np.mean([r.mean_r2 for r in results]))

    def flat(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in self.results:
            for key, value in r.flat("inner_").items():
                if "_fold" not in key:
                    out[key] = out.get(key, 0.0) + value / len(self.results)
        out["inner_mean_r2"] = self.mean_r2
        return out


class FusionObjective:
    """See the module docstring. ``max_epochs`` bounds each trial's epoch budget (``DEFAULT_MAX_EPOCHS`` by default)."""

    direction = "maximize"

    def __init__(self, study_area: str = "porto_alegre", *, resolution: int = 9, resolutions: str = "7,8,9",
                 models: str = "full_unet,cone_unet,ring", max_epochs: int = DEFAULT_MAX_EPOCHS, probe: str = "ridge",
                 block_resolution: int = 7, folds: int = 5, seed: int = 0, cone_root_resolution: int = 6):
        self.kwargs = dict(study_area=study_area, resolution=resolution, resolutions=resolutions, models=models,
                           max_epochs=max_epochs, probe=probe, block_resolution=block_resolution, folds=folds, seed=seed,
                           cone_root_resolution=cone_root_resolution)
        self.study_area = study_area
        self.resolution = int(resolution)
        self.resolutions = tuple(sorted({int(r) for r in str(resolutions).split(",") if r.strip()}, reverse=True))
        if not self.resolutions or self.resolutions[0] != self.resolution:
            raise UrbanReprError(f"resolution {resolution} must be the finest of resolutions {resolutions}")
        self.space = SearchSpace(parse_models(models), int(max_epochs))
        self.probe, self.block_resolution, self.folds, self.seed = probe, int(block_resolution), int(folds), int(seed)
        self.cone_root_resolution = int(cone_root_resolution)
        self._ready = False

    @property
    def factory(self) -> tuple[str, dict]:
        return "tuning.objective:FusionObjective", dict(self.kwargs)

    def signature(self) -> dict:
        return {"objective": "fusion+spatial-cv-probe", "study_area": self.study_area, "resolution": self.resolution,
                "resolutions": list(self.resolutions), "probe": self.probe, "block_resolution": self.block_resolution,
                "folds": self.folds, "fold_seed": self.seed, "space": self.space.signature()}

    # -- data, once per process ------------------------------------------------------------------
    def setup(self) -> None:
        if self._ready:
            return
        from urbanrepml.analysis.folds import make_folds
        from urbanrepml.analysis.targets import load_targets
        from urbanrepml.areas import build_area
        from urbanrepml.config import load_study_area
        from urbanrepml.modalities import current_sources_digests
        from urbanrepml.tasks.fusion.inputs import load_fusion_inputs
        from urbanrepml.tracking.fusion import store_tables

        self.spec = load_study_area(self.study_area)
        if self.spec.name != self.study_area and not Path(self.study_area).exists():
            raise UrbanReprError(f"study area {self.study_area!r} resolves to {self.spec.name!r}")
        self.area = build_area(self.spec, list(self.resolutions))
        tables, provenance = store_tables(self.spec.name, self.resolution, sources=current_sources_digests(self.spec))
        self.inputs = load_fusion_inputs(self.spec, self.resolution, tables, area=self.area, provenance=provenance)
        self.targets = load_targets(self.spec, self.resolution, area=self.area)
        cells = self.targets.frame.index.intersection(self.inputs.region_ids).sort_values()
        if len(cells) == 0:
            raise UrbanReprError(f"no cell of {self.spec.name!r} has both fusion inputs and a target value")
        self.cells = cells
        self.y = self.targets.frame.loc[cells]
        self.fold = make_folds(cells, "spatial", self.block_resolution, self.folds, self.seed)
        self.edge_index = self.inputs.edge_index(self.area)
        self._ready = True

    def data_signature(self) -> dict:
        self.setup()
        return {"inputs": {m: s["sha256"] for m, s in sorted(self.inputs.sources.items())},
                "folds_digest": self.fold.digest, "targets": sorted(self.y.columns)}

    def _score(self, values: np.ndarray):
        """Inner folds only: for each outer fold k, a spatial CV on the other folds' cells; mean over k.

        No outer fold's targets ever score embeddings for that fold's own cells: the tuned score is
        made of inner splits of training folds, as the probes choose alpha. Returns an object with
        ``mean_r2`` (mean over k of the headline inner mean) and ``flat()`` (``inner_`` metrics).
        """
        from urbanrepml.analysis.folds import make_folds
        from urbanrepml.analysis.probes import cross_validate

        frame = pd.DataFrame(values, index=self.inputs.region_ids).loc[self.cells]
        per_fold = []
        for k in range(self.fold.k):
            train_cells = self.fold.fold.index[self.fold.fold.to_numpy() != k].intersection(self.cells).sort_values()
            inner = make_folds(train_cells, "spatial", self.block_resolution, max(2, self.fold.k - 1), self.seed + k + 1)
            per_fold.append(cross_validate(frame.loc[train_cells], self.y.loc[train_cells], inner, self.probe,
                                           counts=self.targets.counts, seed=self.seed))
        return _InnerScore(per_fold)

    def parent_metrics(self) -> dict[str, float]:
        """The free baselines on the same cells and folds (the bar a tuned model has to clear)."""
        from urbanrepml.tasks.fusion.baselines import concat_baseline, ring_baseline

        self.setup()
        concat = self._score(concat_baseline(self.inputs)).mean_r2
        ring = self._score(ring_baseline(self.inputs.x, self.edge_index, self.inputs.n_cells)).mean_r2
        return {"baseline_concat_mean_r2": concat, "baseline_ring_mean_r2": ring, "cells_probed": float(len(self.cells))}

    # -- one trial -------------------------------------------------------------------------------
    def config(self, trial) -> dict:
        return self.space.suggest(trial)

    def embed(self, cfg: dict, trial) -> tuple[np.ndarray, dict]:
        """Embeddings for one configuration (rows = ``inputs.region_ids``) and metrics to log."""
        import mlflow

        from urbanrepml.tasks.fusion.baselines import ring_baseline

        if cfg["model"] == "ring":
            values = ring_baseline(self.inputs.x, self.edge_index, self.inputs.n_cells, cfg["ring.k"], cfg["ring.weighting"])
            return values, {}
        from urbanrepml.paths import cache_dir
        from urbanrepml.tasks.fusion.train import fusion_train_config, train

        width = int(cfg["unet.width"])
        # Built as fuse builds it: early stopping (patience 20 on held-out blocks) within the trial's epoch budget.
        tc = fusion_train_config(
            model=cfg["model"], resolutions=self.resolutions, hidden_dims=tuple(width * 2 ** i for i in range(len(self.resolutions))),
            convs_per_level=cfg["unet.convs_per_level"], dropout=cfg["unet.dropout"], lr=cfg["unet.lr"],
            epochs=cfg["unet.epochs"], consistency_weight=cfg["unet.consistency_weight"], seed=self.seed,
            mask_modality=cfg.get("unet.mask_modality", 0.3), mask_cell=cfg.get("unet.mask_cell", 0.5),
            checkpoint_every=10 ** 6, cone_root_resolution=self.cone_root_resolution,
            cone_batch=cfg.get("cone.batch", 8),
        )
        mlflow.log_params({"train.hidden_dims": ",".join(map(str, tc.hidden_dims)),
                           "train.resolutions": ",".join(map(str, tc.resolutions))})
        hooks = PruningHooks(trial)
        try:
            result = train(self.inputs.x, self.inputs.cells, tc, hooks=hooks, cache_dir=cache_dir() / "cones", progress=False,
                           groups=self.inputs.column_groups, present=self.inputs.presence)
        finally:
            hooks.log()
        return result.embedding, {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
                                  "epochs_run": result.epochs_run}

    def __call__(self, trial) -> float:
        import mlflow

        from urbanrepml.constants import FUSED
        from urbanrepml.tables import write_table
        from urbanrepml.tasks.fusion.inputs import fused_table
        from urbanrepml.tracking import log_embedding_table

        self.setup()
        cfg = self.config(trial)
        mlflow.set_tags({"urbanrepml.model": cfg["model"], "urbanrepml.study_area": self.spec.name})
        values, extra = self.embed(cfg, trial)
        if not np.isfinite(values).all():
            raise UrbanReprError("the embeddings contain NaN or inf")
        cv = self._score(values)
        mlflow.log_metrics({**extra, **cv.flat(), "embedding_dim": values.shape[1]})
        run_id = mlflow.active_run().info.run_id
        table = fused_table(values.astype(np.float32), self.inputs, run_id, {"model": cfg["model"], "tune_trial": trial.number})
        with tempfile.TemporaryDirectory() as tmp:
            write_table(table, Path(tmp) / f"{FUSED}_res{self.resolution}.parquet", area_cells=self.area.cells(self.resolution))
            log_embedding_table(table)
        mlflow.set_tag("urbanrepml.stage", "tune_trial")  # log_embedding_table tagged the table; keep the stage
        return cv.mean_r2

    # -- the winner ------------------------------------------------------------------------------
    def register_best(self, trial, run_id: str) -> str | None:
        """Log the best trial's embeddings as a pyfunc model (with baselines) on its run; register; alias candidate."""
        import mlflow

        from urbanrepml.constants import registered_model_name
        from urbanrepml.tables import read_table
        from urbanrepml.tasks.fusion.baselines import baseline_tables
        from urbanrepml.tracking.fusion import log_baselines
        from urbanrepml.tracking.pyfunc import log_embedding_model
        from urbanrepml.tracking.registry import register_embeddings
        from urbanrepml.tracking.tables import table_artifact_path

        self.setup()
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=table_artifact_path("fused", self.resolution),
                                                        dst_path=tmp)
            table = read_table(local)
            with mlflow.start_run(run_id=run_id, nested=True):
                log_embedding_model(table)
                log_baselines(baseline_tables(self.inputs, self.area, run_id=run_id), self.area.cells(self.resolution))
                mlflow.set_tag("urbanrepml.tune_best", "true")
        version = register_embeddings(run_id, self.spec.name)
        return f"{registered_model_name(self.spec.name)}/{version.version}"


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
