"""Concept-geolocation models as MLflow pyfunc models (one class for the three stages).

- Stage 0 and stage 1 models carry their checkpoint (artifact ``checkpoint``) for the next stage;
  their ``predict`` refuses (use the stage-2 model to geolocate).
- The stage-2 model (artifacts ``network``: a TorchScript of the whole network from pixels to outputs,
  ``meta``: JSON with the concept names, geocell centres, offset scale, input size and normalisation)
  answers a DataFrame with ``path`` (an image file; or a GeoTIFF with ``window`` =
  ``"col_off,row_off,width,height"``) with one row per image: ``lat``, ``lon``, ``geocell``,
  ``cell_prob``, ``meta_1..3`` and ``meta_prob_1..3`` (the top meta concepts), ``parent``,
  ``parent_prob`` and ``attention`` (JSON list of lists: the cross-attention over the patch grid).

Logged as code ("models from code"): loading needs mlflow, numpy, pandas, torch and Pillow (rasterio
for windows), not this package. Keep the top-level imports to those.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

CHECKPOINT_KEY = "checkpoint"
NETWORK_KEY = "network"
META_KEY = "meta"
MODEL_NAME = "model"


def _bad(message: str) -> MlflowException:
    return MlflowException(message, error_code="INVALID_PARAMETER_VALUE")


def _load_pixels(path: str, window, context: int = 0) -> np.ndarray:
    """``(H, W, bands)`` pixels in the file's dtype.

    A GeoTIFF (or its window, widened by ``context`` pixels on each side, zeros beyond the scene) is read
    through rasterio; other images as RGB.
    """
    has_window = window is not None and isinstance(window, str) and window.strip()
    if has_window or Path(path).suffix.lower() in (".tif", ".tiff"):
        import rasterio
        from rasterio.windows import Window

        with rasterio.open(path) as src:
            if not has_window:
                return np.moveaxis(src.read(), 0, -1)
            c, r, w, h = (int(v) for v in window.split(","))
            if context > 0:
                win = Window(c - context, r - context, w + 2 * context, h + 2 * context)
                return np.moveaxis(src.read(window=win, boundless=True, fill_value=0), 0, -1)
            return np.moveaxis(src.read(window=Window(c, r, w, h)), 0, -1)
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _prepare(image: np.ndarray, size: int, mean, std, bands=None):
    import torch
    import torch.nn.functional as F

    if image.ndim == 2:
        image = image[:, :, None]
    if bands is not None:  # the bands training read as R, G, B
        if max(bands) >= image.shape[2]:
            raise ValueError(f"the image has {image.shape[2]} band(s); the model reads band {max(bands) + 1}")
        rgb = image[:, :, list(bands)]
    else:
        rgb = image[:, :, :3] if image.shape[2] >= 3 else np.repeat(image[:, :, :1], 3, 2)
    if rgb.dtype == np.uint8:  # as training reads pixels (urbanrepml.models.encoders.preprocess.to_unit_rgb)
        unit = rgb.astype(np.float32) / 255.0
    else:  # other dtypes (e.g. 16-bit reflectance): the image's own 2-98 percentile stretch
        vals = rgb.astype(np.float32)
        lo, hi = np.percentile(vals, [2, 98]) if vals.size else (0.0, 1.0)
        unit = np.clip((vals - lo) / max(float(hi - lo), 1e-9), 0.0, 1.0).astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray(unit)).permute(2, 0, 1)[None]
    h, w = x.shape[2], x.shape[3]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=nh < h or nw < w)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, :, top:top + size, left:left + size]
    m = torch.tensor(mean, dtype=torch.float32)[None, :, None, None]
    s = torch.tensor(std, dtype=torch.float32)[None, :, None, None]
    return ((x - m) / s)[0]


class ConceptGeoModel(mlflow.pyfunc.PythonModel):
    """See the module docstring."""

    _skip_type_hint_validation = True

    def load_context(self, context):
        self.meta = json.loads(Path(context.artifacts[META_KEY]).read_text())
        self.checkpoint_path = context.artifacts.get(CHECKPOINT_KEY)
        self.network = None
        if NETWORK_KEY in context.artifacts:
            import torch

            self.network = torch.jit.load(context.artifacts[NETWORK_KEY], map_location="cpu").eval()

    def predict(self, context, model_input, params=None):
        import torch

        if self.network is None:
            raise _bad(f"a concept-geolocation stage-{self.meta.get('stage')} model feeds the next stage; "
                       "predict with the stage-2 model (urbanrepml-conceptgeo-<dataset>)")
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        if "path" not in model_input.columns:
            raise _bad(f"concept geolocation input needs a 'path' column; got {list(model_input.columns)}")
        m = self.meta
        size, mean, std = int(m["input_size"]), m["mean"], m["std"]
        windows = model_input["window"] if "window" in model_input.columns else [None] * len(model_input)
        try:
            x = torch.stack([_prepare(_load_pixels(str(p), w, int(m.get("context", 0))), size, mean, std, m.get("bands"))
                             for p, w in zip(model_input["path"], windows, strict=True)])
        except (OSError, ValueError) as exc:
            raise _bad(f"cannot read an input image: {exc}") from None
        with torch.no_grad():
            cell_logits, offsets, meta_logits, parent_logits, attn = self.network(x)
        centres = np.asarray(m["centres"], dtype=np.float64)
        cell_p = cell_logits.softmax(1).numpy()
        cell = cell_p.argmax(1)
        xyz = centres[cell] + offsets.numpy().astype(np.float64) * float(m["offset_scale"])
        xyz /= np.linalg.norm(xyz, axis=1, keepdims=True)
        lat = np.degrees(np.arcsin(np.clip(xyz[:, 2], -1, 1)))
        lon = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))
        mp, pp = meta_logits.softmax(1).numpy(), parent_logits.softmax(1).numpy()
        order = np.argsort(-mp, axis=1)[:, :3]
        out = pd.DataFrame({"lat": lat, "lon": lon, "geocell": cell.astype(np.int64),
                            "cell_prob": cell_p.max(1).astype(np.float64)}, index=model_input.index)
        metas, parents = m["metas"], m["parents"]
        for k in range(order.shape[1]):
            out[f"meta_{k + 1}"] = [metas[i] for i in order[:, k]]
            out[f"meta_prob_{k + 1}"] = mp[np.arange(len(mp)), order[:, k]].astype(np.float64)
        out["parent"] = [parents[i] for i in pp.argmax(1)]
        out["parent_prob"] = pp.max(1).astype(np.float64)
        g = int(m["grid"])
        a = attn.numpy()
        out["attention"] = [json.dumps(np.round((row.reshape(g, g) if g * g == row.size else row).astype(np.float64), 4).tolist())
                            for row in a]
        return out


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{n}=={version(n)}" for n in ("mlflow", "pandas", "numpy", "pillow")] + [f"torch=={version('torch').split('+')[0]}"]


def log_concept_model(meta: dict, *, checkpoint: str | Path | None = None, network: str | Path | None = None,
                      family: str, name: str = MODEL_NAME):
    """Log a stage's model on the active run (metadata ``{"urbanrepml": {"family": family, ...}}``); the ModelInfo."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        meta_path = Path(tmp) / "meta.json"
        meta_path.write_text(json.dumps(meta))
        artifacts = {META_KEY: str(meta_path)}
        if checkpoint is not None:
            artifacts[CHECKPOINT_KEY] = str(checkpoint)
        if network is not None:
            artifacts[NETWORK_KEY] = str(network)
        summary = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))}
        return mlflow.pyfunc.log_model(name=name, python_model=__file__, artifacts=artifacts,
                                       pip_requirements=_pip_requirements(),
                                       metadata={"urbanrepml": {"family": family, **summary}})


def stage_checkpoint(model_uri: str) -> Path:
    """The local checkpoint file of a stage-0/1 model (downloaded)."""
    from urbanrepml.errors import UrbanReprError

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    except (MlflowException, OSError) as exc:
        raise UrbanReprError(f"cannot download model {model_uri!r}: {str(exc).splitlines()[0]}") from None
    found = sorted(local.rglob("*.ckpt"))
    if not found:
        raise UrbanReprError(f"model {model_uri!r} holds no checkpoint (*.ckpt)")
    return found[0]


if __name__ not in ("urbanrepml.tracking.concept_pyfunc", "__main__"):
    mlflow.models.set_model(ConceptGeoModel())
