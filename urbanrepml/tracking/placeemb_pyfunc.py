"""A trained place embedder as an MLflow pyfunc model: images (or frozen features) in, embeddings out.

API
---
- ``PlaceEmbedderModel(mlflow.pyfunc.PythonModel)``: artifacts ``model`` (TorchScript embedder) and
  ``meta`` (JSON: ``input`` = ``pixels`` or ``features``, ``dim``, and for pixels ``size``,
  ``bands``, ``ndvi``; for features ``in_dim`` and the frozen encoder's name).
  ``predict(context, model_input)`` takes a DataFrame:

  * pixels models: a ``path`` column (image file or raster scene) and optionally ``window``
    (``"col_off,row_off,width,height"`` in the scene); decoded with Pillow or rasterio, then
    prepared as in training (a raster window widened by the model's ``context`` pixels, resized,
    per-image and per-band z-scored, NDVI when the model has it);
  * features models: the frozen encoder's ``dim_0..dim_<D-1>`` columns.

  It returns ``emb_0..emb_<d-1>`` (unit-norm float32), one row per input row, in order. Missing
  columns, a non-finite feature, or an image that does not decode -> MlflowException
  (INVALID_PARAMETER_VALUE).
- ``log_placeemb_model(script_path, meta, name="placeemb_model") -> ModelInfo``.

Packaging: logged as code, so loading needs mlflow, numpy, pandas and torch (plus Pillow or rasterio
to decode images), not this package. Keep the top-level imports to those.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

MODEL_KEY = "model"
META_KEY = "meta"
MODEL_NAME = "placeemb_model"


def _bad(message: str) -> MlflowException:
    return MlflowException(message, error_code="INVALID_PARAMETER_VALUE")


def _decode(path: str, window, context: int = 0) -> np.ndarray:
    """``(H, W, bands)`` pixels of an image file or of a raster scene's window (widened by ``context``, zeros outside)."""
    if window is not None and not (isinstance(window, float) and np.isnan(window)) and str(window).strip():
        import rasterio
        from rasterio.windows import Window

        c, r, w, h = (int(v) for v in str(window).split(","))
        with rasterio.open(path) as src:
            win = Window(c - context, r - context, w + 2 * context, h + 2 * context)
            return np.moveaxis(src.read(window=win, boundless=True, fill_value=0), 0, -1)
    if Path(path).suffix.lower() in (".tif", ".tiff"):
        import rasterio

        with rasterio.open(path) as src:
            return np.moveaxis(src.read(), 0, -1)
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def prepare_pixels(image: np.ndarray, size: int, bands: int, ndvi: bool):
    """One ``(H, W, bands)`` image -> ``(C, size, size)`` float32 tensor, as the training inputs were made."""
    import torch
    import torch.nn.functional as F

    a = np.asarray(image, dtype=np.float32)
    a = a[..., None] if a.ndim == 2 else a
    if a.shape[2] < bands:
        a = np.repeat(a[..., :1], bands, axis=2) if a.shape[2] == 1 else a
        if a.shape[2] < bands:
            raise _bad(f"image has {a.shape[2]} band(s), the model takes {bands}")
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(a[..., :bands], -1, 0)))[None]
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=min(x.shape[-2:]) > size)
    x = x[0]
    if ndvi:
        x = torch.cat([x, ((x[3] - x[0]) / (x[3] + x[0] + 1.0))[None]])
    return (x - x.mean((1, 2), keepdim=True)) / (x.std((1, 2), unbiased=False, keepdim=True) + 1e-3)


class PlaceEmbedderModel(mlflow.pyfunc.PythonModel):
    """Embeddings of images or of frozen features (see the module docstring)."""

    _skip_type_hint_validation = True

    def load_context(self, context):
        import torch

        self.net = torch.jit.load(context.artifacts[MODEL_KEY], map_location="cpu").eval()
        self.meta = json.loads(Path(context.artifacts[META_KEY]).read_text())

    def _inputs(self, df: pd.DataFrame):
        import torch

        meta = self.meta
        if meta["input"] == "features":
            cols = [f"dim_{i}" for i in range(int(meta["in_dim"]))]
            missing = [c for c in cols if c not in df.columns]
            if missing:
                raise _bad(f"a features place embedder needs columns dim_0..dim_{len(cols) - 1} "
                           f"({meta.get('encoder')} features); missing {missing[:3]}")
            x = df[cols].to_numpy(dtype=np.float32)
            if not np.isfinite(x).all():
                raise _bad("features hold NaN or inf")
            return torch.from_numpy(x)
        if "path" not in df.columns:
            raise _bad(f"a pixels place embedder needs a 'path' column (and optionally 'window'); got {list(df.columns)}")
        windows = df["window"].tolist() if "window" in df.columns else [None] * len(df)
        xs = []
        for path, window in zip(df["path"].astype(str), windows, strict=True):
            try:
                image = _decode(path, window, int(meta.get("context", 0)))
            except MlflowException:
                raise
            except Exception as exc:  # noqa: BLE001 - decoders raise many types
                raise _bad(f"cannot decode image {path!r}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}") from None
            xs.append(prepare_pixels(image, int(meta["size"]), int(meta["bands"]), bool(meta["ndvi"])))
        return torch.stack(xs) if xs else torch.zeros((0, int(meta["bands"]) + int(meta["ndvi"]), 1, 1))

    def predict(self, context, model_input, params=None):
        import torch

        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        dim = int(self.meta["dim"])
        x = self._inputs(df)
        out = np.zeros((len(df), dim), dtype=np.float32)
        with torch.no_grad():
            for s in range(0, len(df), 512):
                out[s:s + 512] = self.net(x[s:s + 512]).numpy()
        return pd.DataFrame(out, columns=[f"emb_{i}" for i in range(dim)], index=df.index)


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "pandas", "numpy")] + [f"torch=={version('torch').split('+')[0]}"]


def log_placeemb_model(script_path: str | Path, meta: dict, name: str = MODEL_NAME):
    """Log a scripted place embedder as a pyfunc model of the active run; return the ModelInfo."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        meta_path = Path(tmp) / "meta.json"
        meta_path.write_text(json.dumps(meta))
        return mlflow.pyfunc.log_model(
            name=name, python_model=__file__,
            artifacts={MODEL_KEY: str(script_path), META_KEY: str(meta_path)},
            pip_requirements=_pip_requirements(),
            metadata={"urbanrepml": {"family": "placeemb", **meta}},
        )


if __name__ not in ("urbanrepml.tracking.placeemb_pyfunc", "__main__"):
    # Loaded by MLflow as the model's code file ("models from code").
    mlflow.models.set_model(PlaceEmbedderModel())
