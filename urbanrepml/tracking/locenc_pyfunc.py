"""A trained location encoder as an MLflow pyfunc model: lat/lon in, location embedding (and RAG vector) out.

API
---
- ``LocationEncoderModel(mlflow.pyfunc.PythonModel)``: artifacts ``service`` (a TorchScript
  :class:`~urbanrepml.models.location.retrieval.LocationService`: the encoder and, optionally, a
  bank of stored embeddings with coordinates) and ``meta`` (JSON: study area, encoder, dims, the
  bank's record ids). ``predict(context, model_input, params=None)`` takes a DataFrame with ``lat``
  and ``lon`` columns (degrees, WGS84) and optionally ``id`` (or ``region_id``): a query whose id
  names a bank record never retrieves that record (nor does a query at exactly a record's
  coordinates). Params: ``rag`` (bool, default: true when the model has a bank) and ``k``
  (neighbours, default the model's). It returns one row per input row, in order: ``loc_0..loc_{D-1}``
  and, with ``rag``, ``rag_0..rag_{V-1}`` (the retrieved embeddings' similarity-weighted mean),
  float32. A row with a missing or out-of-range coordinate gets NaN. No ``lat``/``lon`` columns,
  ``rag`` without a bank, or ``k`` outside ``1..bank size - 1`` -> MlflowException (INVALID_PARAMETER_VALUE).
- ``log_locenc_model(service_path, meta, bank_ids=None, k=10, name="locenc_model") -> ModelInfo``.
- ``load_locenc_pyfunc(model_uri)`` -> the loaded pyfunc model (one clear error when it cannot load).

Packaging: logged as code (MLflow "models from code"), so loading needs mlflow, numpy, pandas and
torch, not this package. Keep the module's top-level imports to those.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

SERVICE_KEY = "service"
META_KEY = "meta"
MODEL_NAME = "locenc_model"
ID_COLUMNS = ("id", "region_id")


def _bad(message: str) -> MlflowException:
    return MlflowException(message, error_code="INVALID_PARAMETER_VALUE")


class LocationEncoderModel(mlflow.pyfunc.PythonModel):
    """Location embeddings (and RAG vectors) for lat/lon queries (see the module docstring)."""

    _skip_type_hint_validation = True

    def load_context(self, context):
        import torch

        self.service = torch.jit.load(context.artifacts[SERVICE_KEY], map_location="cpu").eval()
        self.meta = json.loads(Path(context.artifacts[META_KEY]).read_text())
        self.bank_size = int(self.service.bank_size())
        ids = self.meta.get("bank_ids") or []
        self.bank_index = pd.Index(np.asarray(ids, dtype=object)).drop_duplicates() if ids else None
        self.bank_positions = (pd.Index(np.asarray(ids, dtype=object)).get_indexer(self.bank_index)
                               if ids else None)

    def _own(self, model_input: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
        own = np.full(len(rows), -1, dtype=np.int64)
        column = next((c for c in ID_COLUMNS if c in model_input.columns), None)
        if column is None or self.bank_index is None:
            return own
        found = self.bank_index.get_indexer(model_input[column].astype(str).to_numpy(dtype=object)[rows])
        own[found >= 0] = self.bank_positions[found[found >= 0]]
        return own

    def predict(self, context, model_input, params=None):
        import torch

        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        if not {"lat", "lon"} <= set(model_input.columns):
            raise _bad(f"location encoder input needs 'lat' and 'lon' columns; got {list(model_input.columns)}")
        params = params or {}
        rag = params.get("rag")
        rag = self.bank_size > 0 if rag is None else str(rag).lower() in ("1", "true", "yes")
        k = int(params.get("k") or self.meta.get("k", 10))
        if rag and self.bank_size < 2:
            raise _bad("this location encoder has no retrieval bank; predict with params={'rag': False}")
        if rag and not 1 <= k < self.bank_size:
            raise _bad(f"k must be between 1 and {self.bank_size - 1} (the bank size - 1), got {k}")
        lat = pd.to_numeric(model_input["lat"], errors="coerce").to_numpy(dtype=np.float64)
        lon = pd.to_numeric(model_input["lon"], errors="coerce").to_numpy(dtype=np.float64)
        ok = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
        rows = np.flatnonzero(ok)
        dim = int(self.meta["dim"])
        emb = np.full((len(lat), dim), np.nan, dtype=np.float32)
        columns = [f"loc_{i}" for i in range(dim)]
        latlon = torch.from_numpy(np.column_stack([lat[rows], lon[rows]]))
        with torch.no_grad():
            if rag:
                rag_dim = int(self.meta["bank_dim"])
                combined = np.full((len(lat), rag_dim), np.nan, dtype=np.float32)
                own = torch.from_numpy(self._own(model_input, rows))
                if len(rows):
                    e, c, _, _ = self.service.retrieve(latlon, k, own)
                    emb[rows], combined[rows] = e.numpy(), c.numpy()
                out = np.concatenate([emb, combined], axis=1)
                columns += [f"rag_{i}" for i in range(rag_dim)]
            else:
                if len(rows):
                    emb[rows] = self.service(latlon).numpy()
                out = emb
        return pd.DataFrame(out, columns=columns, index=model_input.index)


def _signature(k: int, rag: bool):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import AnyType

    inputs = Schema([ColSpec(AnyType(), "lat"), ColSpec(AnyType(), "lon"), ColSpec("string", "id", required=False)])
    params = ParamSchema([ParamSpec("k", "long", int(k)), ParamSpec("rag", "boolean", bool(rag))])
    return ModelSignature(inputs=inputs, params=params)


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "pandas", "numpy")] + [f"torch=={version('torch').split('+')[0]}"]


def log_locenc_model(service_path: str | Path, meta: dict, bank_ids=None, k: int = 10, name: str = MODEL_NAME):
    """Log a scripted location service as a pyfunc model of the active run; return the ModelInfo.

    ``meta`` needs ``dim`` (and ``bank_dim`` with a bank); ``bank_ids`` are the bank's record ids in
    bank order (queries naming one never retrieve it).
    """
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        meta_path = Path(tmp) / "meta.json"
        full = {**meta, "k": int(k), "bank_ids": [str(i) for i in bank_ids] if bank_ids is not None else []}
        meta_path.write_text(json.dumps(full))
        has_bank = bank_ids is not None and len(bank_ids) > 1
        summary = {key: v for key, v in full.items() if key != "bank_ids"}
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=__file__,
            artifacts={SERVICE_KEY: str(service_path), META_KEY: str(meta_path)},
            signature=_signature(k, has_bank),
            input_example=pd.DataFrame({"lat": [float(meta.get("example_lat", 0.0))],
                                        "lon": [float(meta.get("example_lon", 0.0))]}),
            pip_requirements=_pip_requirements(),
            metadata={"urbanrepml": {"family": "locenc", **summary}},
        )


def load_locenc_pyfunc(model_uri: str):
    """``mlflow.pyfunc.load_model(model_uri)``, one clear error line when it cannot be loaded."""
    from urbanrepml.errors import UrbanReprError

    try:
        return mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as exc:
        raise UrbanReprError(f"cannot load location encoder {model_uri!r}: {str(exc).splitlines()[0]}") from None


if __name__ not in ("urbanrepml.tracking.locenc_pyfunc", "__main__"):
    # Loaded by MLflow as the model's code file ("models from code").
    mlflow.models.set_model(LocationEncoderModel())
