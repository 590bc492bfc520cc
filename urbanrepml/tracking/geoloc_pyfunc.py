"""A trained geolocator as an MLflow pyfunc model: images in; lat, lon, cell, top-k cells and probabilities out.

API
---
- ``GeolocatorModel(mlflow.pyfunc.PythonModel)``: artifacts ``model`` (TorchScript: prepared images
  -> logits over the classes) and ``meta`` (JSON: the classes' cells and centroids, the input kind
  and its preprocessing, ``top_k``, ``predict``). ``predict(context, model_input, params=None)`` takes

  * a DataFrame with a ``path`` column (image files or raster scenes) and optionally ``window``
    (``"col_off,row_off,width,height"`` in a raster scene), as in an image index; a ``pixels`` model
    trained with ``context`` > 0 reads that many pixels of surroundings around each window itself
    (zeros beyond the scene's edge), as in training; or
  * a numpy array ``(N, H, W, bands)`` (or ``(H, W, bands)``) of pixels, or a list of such arrays
    (for such a model: the window *with* its ``context`` pixels on each side, ``meta["context"]``);

  and returns one row per image, in order: ``lat``, ``lon`` (the predicted point), ``cell`` and
  ``prob`` (the top class), ``cell_1..cell_k`` and ``prob_1..prob_k`` (the top-k classes). Params:
  ``k`` and ``predict`` (``top1``: the top class's centroid; ``topk_mean``: the probability-weighted
  spherical mean of the top-k centroids).
- ``log_geoloc_model(script_path, meta, name="geoloc_model") -> ModelInfo``.

Preprocessing is the training's, written again here because the model is logged as code (MLflow
"models from code") and loads with mlflow, numpy, pandas and torch (Pillow / rasterio to decode files),
not this package: ``pixels`` models (``urbanrepml.tasks.geoloc.data.prepare_pixels``) and
``features`` models (``urbanrepml.models.encoders.preprocess.prepare``); a test checks both agree.
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
MODEL_NAME = "geoloc_model"
FAMILY_NAME = "geoloc"


def _bad(message: str) -> MlflowException:
    return MlflowException(message, error_code="INVALID_PARAMETER_VALUE")


def _decode(path: str, window, context: int = 0) -> np.ndarray:
    if str(path).lower().endswith((".tif", ".tiff")):
        import rasterio
        from rasterio.windows import Window

        with rasterio.open(path) as src:
            w = None
            if isinstance(window, str) and window.strip():
                col, row, width, height = (int(v) for v in window.split(","))
                w = Window(col - context, row - context, width + 2 * context, height + 2 * context)
            data = src.read(window=w, boundless=bool(w is not None and context), fill_value=0)
        return np.ascontiguousarray(data.transpose(1, 2, 0))
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode not in ("RGB", "L", "RGBA"):
            im = im.convert("RGB")
        arr = np.asarray(im)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _square(x, size: int):
    """(1, C, h, w) -> (1, C, size, size): shorter side to ``size``, centre square."""
    import torch.nn.functional as F

    h, w = x.shape[2], x.shape[3]
    if (h, w) == (size, size):
        return x
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=nh < h or nw < w)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[:, :, top:top + size, left:left + size]


def prepare(image: np.ndarray, meta: dict):
    """One ``(H, W, bands)`` image -> the model's ``(C, S, S)`` input (see the module docstring)."""
    import torch

    if image.ndim == 2:
        image = image[:, :, None]
    if meta["kind"] == "pixels":
        px, bands = int(meta["input_px"]), int(meta["bands"])
        x = _square(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float(), px)
        if x.shape[1] < bands:
            x = torch.cat([x, x[:, -1:].expand(-1, bands - x.shape[1], -1, -1)], dim=1)
        x = x[:, :bands]
        if meta["normalise"] == "chip":
            x = (x - x.mean(dim=(2, 3), keepdim=True)) / (x.std(dim=(2, 3), keepdim=True) + 1.0)
        else:
            x = x / 255.0
        return x[0]
    rgb = image[:, :, :3] if image.shape[2] >= 3 else np.repeat(image[:, :, :1], 3, axis=2)
    if rgb.dtype == np.uint8:
        rgb = rgb.astype(np.float32) / 255.0
    else:
        vals = rgb.astype(np.float32)
        lo, hi = np.percentile(vals, [2, 98]) if vals.size else (0.0, 1.0)
        rgb = np.clip((vals - lo) / max(float(hi - lo), 1e-9), 0.0, 1.0).astype(np.float32)
    x = _square(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None], int(meta["input_size"]))
    m = torch.tensor(meta["mean"], dtype=torch.float32)[None, :, None, None]
    s = torch.tensor(meta["std"], dtype=torch.float32)[None, :, None, None]
    return ((x - m) / s)[0].contiguous()


def _unit(lat, lon):
    la, lo = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


class GeolocatorModel(mlflow.pyfunc.PythonModel):
    """Where was this image taken (see the module docstring)."""

    _skip_type_hint_validation = True

    def load_context(self, context):
        import torch

        self.net = torch.jit.load(context.artifacts[MODEL_KEY], map_location="cpu").eval()
        self.meta = json.loads(Path(context.artifacts[META_KEY]).read_text())
        self.cells = np.asarray(self.meta["cells"], dtype=object)
        self.c_lat = np.asarray(self.meta["lat"], dtype=np.float64)
        self.c_lon = np.asarray(self.meta["lon"], dtype=np.float64)

    def _images(self, model_input) -> list[np.ndarray]:
        if isinstance(model_input, pd.DataFrame):
            if "path" not in model_input.columns:
                raise _bad(f"geolocator input needs a 'path' column (or pixel arrays); got {list(model_input.columns)}")
            windows = model_input["window"] if "window" in model_input.columns else [None] * len(model_input)
            context = int(self.meta.get("context", 0)) if self.meta["kind"] == "pixels" else 0
            return [_decode(str(p), w, context) for p, w in zip(model_input["path"], windows, strict=True)]
        if isinstance(model_input, np.ndarray):
            if model_input.ndim == 3:
                return [model_input]
            if model_input.ndim == 4:
                return list(model_input)
            raise _bad(f"pixel input must be (H, W, bands) or (N, H, W, bands), got shape {model_input.shape}")
        if isinstance(model_input, list | tuple):
            return [np.asarray(a) for a in model_input]
        raise _bad(f"geolocator input must be a DataFrame with 'path' or pixel arrays, got {type(model_input).__name__}")

    def predict(self, context, model_input, params=None):
        import torch

        params = params or {}
        k = max(1, min(int(params.get("k") or self.meta.get("top_k", 5)), len(self.cells)))
        mode = str(params.get("predict") or self.meta.get("predict", "top1"))
        if mode not in ("top1", "topk_mean"):
            raise _bad(f"predict must be top1 or topk_mean, got {mode!r}")
        images = self._images(model_input)
        probs = []
        with torch.no_grad():
            for s in range(0, len(images), 128):
                x = torch.stack([prepare(im, self.meta) for im in images[s:s + 128]])
                probs.append(torch.softmax(self.net(x), dim=1).numpy().astype(np.float64))
        p = np.concatenate(probs) if probs else np.zeros((0, len(self.cells)))
        idx = np.argsort(-p, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(p, idx, axis=1)
        if mode == "top1" or k == 1:
            lat, lon = self.c_lat[idx[:, 0]], self.c_lon[idx[:, 0]]
        else:
            v = (_unit(self.c_lat[idx], self.c_lon[idx]) * top[..., None]).sum(axis=1)
            v = v / np.linalg.norm(v, axis=1, keepdims=True)
            lat, lon = np.degrees(np.arcsin(np.clip(v[:, 2], -1, 1))), np.degrees(np.arctan2(v[:, 1], v[:, 0]))
        out = {"lat": lat, "lon": lon, "cell": self.cells[idx[:, 0]] if len(idx) else [], "prob": top[:, 0] if len(idx) else []}
        for j in range(k):
            out[f"cell_{j + 1}"] = self.cells[idx[:, j]]
            out[f"prob_{j + 1}"] = top[:, j]
        index = model_input.index if isinstance(model_input, pd.DataFrame) else None
        return pd.DataFrame(out, index=index)


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    reqs = [f"{name}=={version(name)}" for name in ("mlflow", "pandas", "numpy", "pillow", "rasterio")]
    return reqs + [f"torch=={version('torch').split('+')[0]}"]


def log_geoloc_model(script_path: str | Path, meta: dict, name: str = MODEL_NAME):
    """Log a scripted geolocator and its ``meta`` as a pyfunc model of the active run; return the ModelInfo."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        meta_path = Path(tmp) / "meta.json"
        meta_path.write_text(json.dumps(meta))
        summary = {key: v for key, v in meta.items() if key not in ("cells", "lat", "lon", "mean", "std")}
        return mlflow.pyfunc.log_model(name=name, python_model=__file__,
                                       artifacts={MODEL_KEY: str(script_path), META_KEY: str(meta_path)},
                                       pip_requirements=_pip_requirements(),
                                       metadata={"urbanrepml": {"family": FAMILY_NAME, **summary}})


if __name__ not in ("urbanrepml.tracking.geoloc_pyfunc", "__main__"):
    # Loaded by MLflow as the model's code file ("models from code").
    mlflow.models.set_model(GeolocatorModel())
