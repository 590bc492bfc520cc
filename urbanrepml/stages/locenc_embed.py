"""The ``locenc_embed`` stage: a registered location encoder -> a per-cell table of the area, or embeddings of points.

- ``points`` empty: the encoder at the centres of the study area's cells at ``resolution`` -> a
  contract embedding table (prefix ``locenc``; with ``rag``, the retrieved combination appended),
  written to ``output`` (default ``<data dir>/tables/<area>/locenc_embed_res<r>.parquet``) and logged
  as ``tables/<file>``. It is not tagged as a modality table: the ``location`` entry point is the
  one that feeds fusion.
- ``points`` a CSV (``lat``/``lon`` columns, or a WKT ``geometry`` column in ``crs``; ids from
  ``image_id``/``id``/``region_id``): one row per point, ``id, lat, lon, loc_0.. [, rag_0..]``,
  written to ``output`` (default ``<data dir>/locenc/<csv stem>_embeddings.csv``) and logged.

The encoder is ``model_uri`` (default ``models:/urbanrepml-locenc-<area>@champion``, else
``@candidate``), loaded through its pyfunc model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.config import DEFAULT_STUDY_AREA, load_study_area
from urbanrepml.errors import UrbanReprError
from urbanrepml.params import param
from urbanrepml.stages.base import Stage


@dataclass
class Params:
    """Parameters of the ``locenc_embed`` entry point."""

    study_area: str = param(DEFAULT_STUDY_AREA, "bundled area name or path to a study-area TOML")
    model_uri: str | None = param(None, "encoder (default models:/urbanrepml-locenc-<area>@champion, else @candidate)")
    resolution: int = param(9, "H3 resolution of the per-cell table")
    points: str | None = param(None, "CSV of points (lat, lon columns or WKT geometry); empty: the area's cells")
    crs: str = param("EPSG:4326", "CRS of a points CSV's geometry column")
    rag: bool = param(False, "append the retrieved embeddings' similarity-weighted mean (the model's bank)")
    k: int = param(10, "RAG: records retrieved per query")
    output: str | None = param(None, "output file (default under the data dir)")


def _predict(model, ids, lat, lon, rag: bool, k: int) -> pd.DataFrame:
    import mlflow

    query = pd.DataFrame({"lat": lat, "lon": lon, "id": np.asarray(ids, dtype=object)})
    try:
        return model.predict(query, params={"rag": rag, "k": int(k)})
    except mlflow.exceptions.MlflowException as exc:
        raise UrbanReprError(f"locenc_embed: {str(exc).splitlines()[0]}") from None


def run_locenc_embed_stage(p: Params):
    """Embed the area's cells or the given points with a registered encoder; returns the written path."""
    import mlflow

    from urbanrepml.areas import build_area, h3ops
    from urbanrepml.paths import data_dir
    from urbanrepml.tables import EmbeddingTable, TableMeta, publish_on_success, to_embedding_frame
    from urbanrepml.tasks.location.data import read_query_points
    from urbanrepml.tracking import configure_tracking, log_source_files, stage_run
    from urbanrepml.tracking.locenc import log_file, resolve_locenc_uri
    from urbanrepml.tracking.locenc_pyfunc import load_locenc_pyfunc

    if p.k < 1:
        raise UrbanReprError(f"parameter k must be >= 1, got {p.k}")
    spec = load_study_area(p.study_area)
    configure_tracking()
    points = read_query_points(p.points, p.crs) if p.points else None  # bad points fail before any run
    uri, note = resolve_locenc_uri(spec.name, p.model_uri)
    model = load_locenc_pyfunc(uri)
    tags = {"input": "points" if points is not None else "cells", "resolution": p.resolution, "family": "locenc"}
    with stage_run("locenc_embed", spec.name, tags=tags, run_name="locenc-embed") as run:
        mlflow.log_params({"study_area": p.study_area, "model_uri": p.model_uri or "", "resolution": p.resolution,
                           "points": p.points or "", "crs": p.crs, "rag": p.rag, "k": p.k, "output": p.output or "",
                           "resolved.model_uri": uri})
        if points is not None:
            log_source_files({Path(p.points).name: p.points}, context="points")
            ids, lat, lon = points
            out = _predict(model, ids, lat, lon, p.rag, p.k)
            dims = int(out.shape[1])
            out.insert(0, "lon", lon)
            out.insert(0, "lat", lat)
            out.insert(0, "id", ids)
            path = Path(p.output) if p.output else data_dir() / "locenc" / f"{Path(p.points).stem}_embeddings.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            out.to_csv(path, index=False)
            log_file(path, "embeddings")
            rows = len(out)
        else:
            area = build_area(spec, [p.resolution])
            cells = area.cells(p.resolution)
            lat, lon = h3ops.cell_centroids(cells)
            ids = h3ops.cells_to_str(cells)
            out = _predict(model, ids, lat, lon, p.rag, p.k)
            frame, _ = to_embedding_frame(out.to_numpy(np.float32), ids, "locenc")
            meta = TableMeta(modality="locenc", resolution=p.resolution, study_area=spec.name, prefix="locenc",
                             producer_run_id=run.info.run_id, feature_names=list(out.columns),
                             extra={"model_uri": uri, "rag": str(p.rag), "k": str(p.k)})
            path = Path(p.output) if p.output else data_dir() / "tables" / spec.name / f"locenc_embed_res{p.resolution}.parquet"
            table = EmbeddingTable(frame, meta)
            with publish_on_success(table, path, area_cells=cells):
                log_file(table.path, "tables")
            rows, dims = len(frame), int(frame.shape[1])
        mlflow.log_metrics({"rows": rows, "dims": dims})
        line = f"{note}; {rows} rows x {dims} dims -> {path}"
        mlflow.set_tag("mlflow.note.content", line)
        print(line)
    return path


STAGES = {"locenc_embed": Stage("locenc_embed", "a registered location encoder -> per-cell table of the area, or embeddings "
                                                "of given points", Params, run_locenc_embed_stage)}
