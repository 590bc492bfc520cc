"""Run one modality as a tracked stage: compute, validate, write the table, log lineage and figures."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.analysis.maps import cells_map
from urbanrepml.areas import build_area, cache_on_success
from urbanrepml.config import DEFAULT_STUDY_AREA, load_study_area
from urbanrepml.constants import SOURCES_DIGEST, tag
from urbanrepml.errors import UrbanReprError
from urbanrepml.modalities import MODALITIES
from urbanrepml.modalities.base import Modality
from urbanrepml.params import param
from urbanrepml.paths import data_dir
from urbanrepml.stages.base import Stage
from urbanrepml.tables import EmbeddingTable, TableMeta, combined_digest, publish_on_success, to_embedding_frame


def table_path(study_area: str, modality: str, resolution: int) -> Path:
    """Local path of a modality table: ``<data dir>/tables/<area>/<modality>_res<r>.parquet``."""
    return data_dir() / "tables" / study_area / f"{modality}_res{resolution}.parquet"


def first_component(frame: pd.DataFrame) -> pd.Series:
    """Scores on the first principal component of the z-scored features (for the map)."""
    x = frame.to_numpy(dtype=np.float64)
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1)
    if x.shape[1] == 1 or len(x) < 2:
        return pd.Series(x[:, 0], index=frame.index)
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    return pd.Series(x @ vt[0], index=frame.index)


def run_modality_stage(modality: Modality, study_area: str, resolution: int, *, nested: bool = False) -> EmbeddingTable:
    """Compute ``modality`` on ``study_area`` at ``resolution`` as one MLflow run; return the written table.

    Logs params, source files as datasets (with digests), coverage (cells with
    data / cells in the area), feature count, seconds taken, a map of the first
    principal component, and the table as an artifact tagged so fusion finds it.
    No table or area cache entry is written and the run is marked FAILED when anything goes wrong.
    """
    with cache_on_success():  # the area is cached only when the run succeeds
        return _run_modality(modality, study_area, resolution, nested=nested)


def _run_modality(modality: Modality, study_area: str, resolution: int, *, nested: bool) -> EmbeddingTable:
    import mlflow

    from urbanrepml.tracking import log_embedding_table, log_figure, log_source_files, stage_run

    spec = load_study_area(study_area)
    if not 0 <= resolution <= 15:
        raise UrbanReprError(f"resolution must be between 0 and 15, got {resolution}")
    params = {"study_area": study_area, "resolution": resolution, **{f"{modality.name}.{k}": v for k, v in modality.params().items()}}
    with stage_run("modality", spec.name, params=params, tags={"modality": modality.name, "resolution": resolution},
                   run_name=f"{modality.name}-res{resolution}", nested=nested) as run:
        start = time.perf_counter()
        digests = log_source_files(modality.source_files(spec))
        mlflow.set_tag(tag(SOURCES_DIGEST), combined_digest(digests))  # later stages look tables up by it
        area = build_area(spec, [resolution])
        result = modality.compute(spec, area, resolution)
        features = result.features
        if len(features) == 0:
            raise UrbanReprError(f"{modality.name}: found no data inside study area {spec.name!r} at resolution {resolution}")
        frame, names = to_embedding_frame(features, features.index, modality.name)
        meta = TableMeta(
            modality=modality.name, resolution=resolution, study_area=spec.name, prefix=modality.name,
            producer_run_id=run.info.run_id, input_digests=digests, feature_names=names,
            extra={k: str(v) for k, v in result.params.items()},
        )
        table = EmbeddingTable(frame, meta)
        with publish_on_success(table, table_path(spec.name, modality.name, resolution), area_cells=area.cells(resolution)):
            seconds = time.perf_counter() - start
            n_area = len(area.cells(resolution))
            metrics = {"coverage": len(frame) / n_area, "cells_with_data": len(frame), "cells_in_area": n_area,
                       "n_features": frame.shape[1], "seconds": seconds, **result.metrics}
            mlflow.log_metrics(metrics)
            if result.params:
                mlflow.log_params({f"resolved.{k}": v for k, v in result.params.items()})
            log_embedding_table(table)
            pc1 = first_component(frame)
            regions = area.regions_gdf(resolution)
            log_figure(cells_map(regions.loc[pc1.index], pc1, title=f"{spec.name} {modality.name}: first principal component",
                                 color_name="PC1"),
                       f"{modality.name}_pc1")
            note = f"{modality.name} on {spec.name} res {resolution}: {frame.shape[1]} features, coverage {metrics['coverage']:.1%}"
            mlflow.set_tag("mlflow.note.content", "\n".join([note, *result.notes]))
            print(note)
            for line in result.notes:
                print(line)
    return table


def _stage_for(name: str, cls: type[Modality]) -> Stage:
    """A stage whose parameters are ``study_area``, ``resolution`` and the modality's own ``Params``."""
    own = [(f.name, f.type, dataclasses.field(default=f.default, metadata=f.metadata)) for f in dataclasses.fields(cls.Params)]
    params_cls = dataclasses.make_dataclass(
        f"{cls.__name__}StageParams",
        [("study_area", str, param(DEFAULT_STUDY_AREA, "bundled area name or path to a study-area TOML")),
         ("resolution", int, param(9, "H3 resolution of the table")), *own],
        namespace={"__module__": __name__},
    )

    def run(p) -> EmbeddingTable:
        settings = {f.name: getattr(p, f.name) for f in dataclasses.fields(cls.Params)}
        return run_modality_stage(cls(**settings), p.study_area, p.resolution)

    description = (cls.__doc__ or name).strip().splitlines()[0].rstrip(".")
    return Stage(name, description, params_cls, run)


STAGES = {name: _stage_for(name, cls) for name, cls in MODALITIES.items()}
