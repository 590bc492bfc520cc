"""The fused embeddings as an MLflow pyfunc model: a lookup table that answers cell and lat/lon queries.

API
---
- ``EmbeddingModel(mlflow.pyfunc.PythonModel)``: its one artifact (``embeddings``) is a contract
  embedding table (parquet). ``predict(context, model_input)`` takes a DataFrame with
  - a ``region_id`` column (H3 strings) -> the embedding of each cell, or
  - ``lat`` and ``lon`` columns (degrees, WGS84) -> the cell containing each point at the table's
    resolution, then its embedding;
  and returns a DataFrame with one row per input row, in input order: ``region_id`` and the
  table's columns (``fused_0..fused_{D-1}`` for a fused table), float32. A cell the table does
  not hold (outside the area, another resolution, an invalid id, a missing or out-of-range
  coordinate) gets a row of NaN; its ``region_id`` is the queried/derived id (or None). With
  both ``region_id`` and ``lat``/``lon`` present, ``region_id`` wins in each row that has one and
  the other rows use ``lat``/``lon``. Neither column -> MlflowException (INVALID_PARAMETER_VALUE).
- ``log_embedding_model(table, artifact_path="embedding_model", registered_model_name=None) -> ModelInfo``:
  logs the model to the active run (or a new one) with an explicit signature (optional columns
  ``region_id``/``lat``/``lon``), an input example of a few region ids, light pip requirements
  (mlflow, pandas, numpy, pyarrow, h3ronpy pinned to this environment; no torch) and metadata
  (study_area, resolution, modality, producer_run_id, n_cells, dim).
- ``load_embedding_table(model_uri) -> EmbeddingTable``: the full validated table behind a model URI.

Packaging: the model is logged as *code* (MLflow "models from code"): this very file is copied
into the model and defines the model when MLflow loads it, so loading needs only mlflow, pandas,
numpy, pyarrow and h3ronpy (not this package, not torch). Keep the module's top-level imports to
those.
"""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from mlflow.exceptions import MlflowException

from urbanrepml.constants import REGION_ID

ARTIFACT_KEY = "embeddings"
META_KEY = b"urbanrepml"
MODEL_ARTIFACT_PATH = "embedding_model"


def _latlon_to_cell_strings(lat: np.ndarray, lon: np.ndarray, resolution: int) -> np.ndarray:
    """Cell id (string) of each point; None where the coordinate is missing or out of range."""
    import h3ronpy
    import pyarrow as pa
    from h3ronpy.vector import coordinates_to_cells

    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    ok = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    out = np.full(len(lat), None, dtype=object)
    if ok.any():
        res = np.full(int(ok.sum()), resolution, dtype=np.uint8)
        cells = coordinates_to_cells(lat[ok], lon[ok], res)
        strings = pa.array(h3ronpy.cells_to_string(pa.array(cells, pa.uint64())))
        out[ok] = np.asarray(strings.to_numpy(zero_copy_only=False), dtype=object)
    return out


class EmbeddingModel(mlflow.pyfunc.PythonModel):
    """Lookup of a fused embedding table by ``region_id`` or ``lat``/``lon`` (see module docstring)."""

    # The input schema is the explicit signature of log_embedding_model; MLflow's type-hint
    # wrapper (and its "add type hints" warning on every load) is not wanted here.
    _skip_type_hint_validation = True

    def load_context(self, context):
        path = context.artifacts[ARTIFACT_KEY]
        arrow = pq.read_table(path)
        raw = (arrow.schema.metadata or {}).get(META_KEY)
        self.meta = json.loads(raw) if raw else {}
        frame = arrow.to_pandas()
        if REGION_ID in frame.columns:
            frame = frame.set_index(REGION_ID)
        self.table_path = path
        self.frame = frame
        self.columns = list(frame.columns)
        self.resolution = int(self.meta.get("resolution", -1))

    def predict(self, context, model_input, params=None):
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        has_ids = REGION_ID in model_input.columns
        has_points = {"lat", "lon"} <= set(model_input.columns)
        if not (has_ids or has_points):
            raise MlflowException(
                f"embedding model input needs a '{REGION_ID}' column (H3 ids) or 'lat' and 'lon' columns; "
                f"got columns {list(model_input.columns)}",
                error_code="INVALID_PARAMETER_VALUE",
            )
        ids = np.full(len(model_input), None, dtype=object)
        if has_ids:
            raw = model_input[REGION_ID].to_numpy(dtype=object)
            ids[:] = [v.strip().lower() if isinstance(v, str) and v.strip() else None for v in raw]
        if has_points:
            todo = np.array([v is None for v in ids], dtype=bool)  # region_id wins where given
            if todo.any():
                lat = pd.to_numeric(model_input["lat"], errors="coerce").to_numpy(dtype=np.float64)
                lon = pd.to_numeric(model_input["lon"], errors="coerce").to_numpy(dtype=np.float64)
                ids[todo] = _latlon_to_cell_strings(lat[todo], lon[todo], self.resolution)
        values = self.frame.reindex(pd.Index(ids, dtype=object)).to_numpy(dtype=np.float32)
        out = pd.DataFrame(values, columns=self.columns)
        out.insert(0, REGION_ID, ids)
        return out


def _table_metadata(table) -> dict:
    meta = table.meta
    return {
        "study_area": meta.study_area,
        "resolution": int(meta.resolution),
        "modality": meta.modality,
        "prefix": meta.prefix,
        "producer_run_id": meta.producer_run_id or "",
        "n_cells": int(len(table.frame)),
        "dim": int(table.frame.shape[1]),
    }


def _signature(columns: list[str]):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    inputs = Schema([
        ColSpec("string", REGION_ID, required=False),
        # Any, not double: MLflow refuses int64 -> double, and `{"lat": 52, "lon": 5}` is a fair query.
        ColSpec(AnyType(), "lat", required=False),
        ColSpec(AnyType(), "lon", required=False),
    ])
    outputs = Schema([ColSpec("string", REGION_ID)] + [ColSpec("float", c) for c in columns])
    return ModelSignature(inputs=inputs, outputs=outputs)


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "pandas", "numpy", "pyarrow", "h3ronpy")]


def log_embedding_model(table, artifact_path: str = MODEL_ARTIFACT_PATH, registered_model_name: str | None = None):
    """Log ``table`` (an :class:`~urbanrepml.tables.EmbeddingTable`) as a pyfunc model; return the ModelInfo.

    The table is re-validated and written to a temporary file first, so any in-memory table works.
    Logs to the active run (starts and ends one of its own when none is active). With
    ``registered_model_name`` MLflow also registers a version (prefer
    :func:`urbanrepml.tracking.registry.register_embeddings`, which also sets the alias and tags).
    """
    import tempfile
    from pathlib import Path

    from urbanrepml.tables import write_table

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "embeddings.parquet"
        original = table.path
        write_table(table, path)
        table.path = original
        example = pd.DataFrame({REGION_ID: list(table.frame.index[:3])})
        kwargs = dict(
            name=artifact_path,
            python_model=__file__,
            artifacts={ARTIFACT_KEY: str(path)},
            signature=_signature(list(table.frame.columns)),
            input_example=example,
            pip_requirements=_pip_requirements(),
            metadata={"urbanrepml": _table_metadata(table)},
            registered_model_name=registered_model_name,
        )
        if mlflow.active_run() is None:
            with mlflow.start_run():
                return mlflow.pyfunc.log_model(**kwargs)
        return mlflow.pyfunc.log_model(**kwargs)


def load_embedding_table(model_uri: str):
    """Load the model at ``model_uri`` and return its full table, validated against the contract."""
    from urbanrepml.errors import UrbanReprError
    from urbanrepml.tables import read_table

    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        raise UrbanReprError(f"cannot load embedding model {model_uri!r}: {str(exc).splitlines()[0]}") from None
    try:
        inner = model.unwrap_python_model()
    except MlflowException:
        inner = None
    path = getattr(inner, "table_path", None)
    if path is None:
        raise UrbanReprError(f"{model_uri!r} is not an urbanrepml embedding model (no '{ARTIFACT_KEY}' table)")
    return read_table(path)


if __name__ not in ("urbanrepml.tracking.pyfunc", "__main__"):
    # Loaded by MLflow as the model's code file ("models from code").
    mlflow.models.set_model(EmbeddingModel())
