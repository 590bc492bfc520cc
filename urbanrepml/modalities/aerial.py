"""Aerial modality: per-cell image tiles -> an image encoder loaded from local weights -> per-cell embedding.

Tiles come from either

- a local orthophoto GeoTIFF/COG (``imagery`` = a file): for each cell, a square
  ``tile_px`` x ``tile_px`` tile centred on the cell centroid, with side = 2 x the
  average H3 edge length of the resolution (the hexagon's width), sampled from
  the raster at that ground resolution (one decimated, averaged read over the
  area, then vectorised nearest sampling of all tiles; pixel centres are
  reprojected with pyproj when the raster is not in EPSG:4326); or
- a folder of tiles named ``<region_id>.png`` / ``.jpg`` / ``.tif`` (``imagery`` = a
  folder, or the area's ``sources.images``), resized to ``tile_px``.

Cells with less than half of the tile covered by valid imagery are left out.
Pixels are scaled to [0, 1] (uint8 / 255; other dtypes by the 2nd-98th percentile
of the area) and normalised with the ImageNet mean/std; 1-band imagery is repeated
to RGB, alpha and further bands are dropped.

Encoders (``weights``): a torch file holding a full ``nn.Module`` or a
``state_dict`` for :class:`BuiltinCNN`; a Hugging Face model folder (needs the
``transformers`` package: ``pip install -e ".[hf]"``); or nothing, which
means :class:`BuiltinCNN` with fixed random weights (seed 0), named
``builtin-random-cnn`` in the run. 4-D encoder outputs are average-pooled; the
embedding is the flattened output.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.areas import Area
from urbanrepml.config import StudyArea
from urbanrepml.constants import REGION_ID
from urbanrepml.errors import UrbanReprError
from urbanrepml.modalities.base import Modality, ModalityResult
from urbanrepml.models.cnn import builtin_cnn
from urbanrepml.params import param
from urbanrepml.paths import cache_dir
from urbanrepml.sources.tiles import (
    MIN_VALID_FRACTION,
    iter_orthophoto_tiles,
    normalise,
    tile_files,
    tiles_from_folder,
)

BATCH = 128
BUILTIN = "builtin-random-cnn"


def load_encoder(weights: str | None):
    """-> (callable taking a float tensor (N, 3, H, W) and returning (N, D), encoder name)."""
    import torch
    from torch import nn

    if not weights:
        return builtin_cnn(), BUILTIN
    path = Path(weights).expanduser()
    if not path.exists():
        raise UrbanReprError(f"encoder weights {path} do not exist")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UrbanReprError(f"encoder folder {path} has no config.json; pass a Hugging Face model folder or a torch file")
        try:
            import transformers
        except ImportError:
            raise UrbanReprError(
                f"encoder folder {path} is a Hugging Face model, but the 'transformers' package is not installed; "
                "install it, or pass a torch file (full nn.Module or BuiltinCNN state_dict)"
            ) from None
        try:
            model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        except Exception as exc:  # noqa: BLE001
            raise UrbanReprError(f"cannot load Hugging Face model from {path} ({type(exc).__name__}: {exc})") from None

        def hf_encode(x):
            out = model(pixel_values=x)
            pooled = getattr(out, "pooler_output", None)
            return pooled if pooled is not None else out.last_hidden_state.mean(dim=1)

        return hf_encode, f"hf:{path.name}"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a pickled full module needs weights_only=False
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001
            raise UrbanReprError(f"encoder weights {path} are not a readable torch file ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, nn.Module):
        return obj.eval(), f"torch-module:{path.name}"
    if isinstance(obj, dict):
        state = obj.get("state_dict", obj)
        if not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise UrbanReprError(f"encoder weights {path} hold a dict that is not a state_dict")
        out_ch = state.get("features.6.weight")
        model = builtin_cnn(int(out_ch.shape[0]) if out_ch is not None else 64)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise UrbanReprError(f"encoder weights {path} do not match the built-in CNN ({first}); save a full nn.Module instead") from None
        return model.eval(), f"builtin-cnn:{path.name}"
    raise UrbanReprError(f"encoder weights {path} hold a {type(obj).__name__}, expected an nn.Module or a state_dict")


def encode(encoder, tiles: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """(N, 3, H, W) float32 normalised tiles -> (N, D) float32 embeddings, in batches, without gradients."""
    import torch

    outs = []
    with torch.no_grad():
        for i in range(0, len(tiles), batch):
            y = encoder(torch.from_numpy(np.ascontiguousarray(tiles[i:i + batch])))
            if isinstance(y, (tuple, list)):
                y = y[0]
            if y.ndim == 4:
                y = y.mean(dim=(2, 3))
            outs.append(y.reshape(y.shape[0], -1).float().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def folder_manifest(folder: Path) -> Path:
    """A manifest of a tile folder (names, sizes, SHA-256), cached under the data dir, logged as the folder's input."""
    from urbanrepml.tables import file_digest

    lines = [f"{p.name}\t{p.stat().st_size}\t{file_digest(p)}" for p in tile_files(folder)]
    if not lines:
        raise UrbanReprError(f"tile folder {folder} holds no .png/.jpg/.tif tiles")
    text = "\n".join(lines) + "\n"
    out = cache_dir() / "aerial" / f"tiles-{hashlib.sha256(text.encode()).hexdigest()[:16]}.tsv"
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.is_file():
        out.write_text(text)
    return out


class AerialModality(Modality):
    """Per-cell image tiles -> encoder embedding (``aerial_0..``)."""

    name = "aerial"

    @dataclass
    class Params:
        """The ``aerial`` entry point's own settings."""

        imagery: str | None = param(None, "orthophoto GeoTIFF or folder of <region_id>.png tiles")
        weights: str | None = param(None, "torch file or Hugging Face folder; empty = built-in random CNN")
        tile_px: int = param(64, "tile side in pixels")

    def __init__(self, imagery: str | None = None, weights: str | None = None, tile_px: int = 64):
        if not 8 <= int(tile_px) <= 1024:
            raise UrbanReprError(f"tile_px must be between 8 and 1024, got {tile_px}")
        self.imagery = imagery or ""
        self.weights = weights or ""
        self.tile_px = int(tile_px)
        self.encoder = "from-weights" if weights else BUILTIN

    def _imagery(self, spec: StudyArea) -> Path:
        if self.imagery:
            path = Path(self.imagery).expanduser().resolve()
            if not path.exists():
                raise UrbanReprError(f"imagery {path} does not exist")
            return path
        if spec.sources.images is not None:
            return spec.sources.images
        raise UrbanReprError("aerial: no imagery; pass imagery=<orthophoto GeoTIFF or tile folder> "
                             f"or set images = \"tiles/\" under [sources] of {spec.source_file}")

    def source_files(self, spec: StudyArea) -> dict[str, Path]:
        path = self._imagery(spec)
        files = {f"{path.name}.manifest.tsv": folder_manifest(path)} if path.is_dir() else {path.name: path}
        if self.weights:
            weights = Path(self.weights).expanduser()
            if weights.is_file():
                files[weights.name] = weights
            elif (weights / "config.json").is_file():
                files[f"{weights.name}/config.json"] = weights / "config.json"
        return files

    def compute(self, spec: StudyArea, area: Area, resolution: int) -> ModalityResult:
        path = self._imagery(spec)
        encoder, encoder_name = load_encoder(self.weights or None)
        chunks = [tiles_from_folder(path, area, resolution, self.tile_px)] if path.is_dir() else \
            iter_orthophoto_tiles(path, area, resolution, self.tile_px)
        positions, embeddings = [], []
        for pos, tiles in chunks:  # encode chunk by chunk: memory is bounded by a chunk of tiles
            positions.append(pos)
            embeddings.append(encode(encoder, normalise(tiles)))
        if not positions:
            raise UrbanReprError(f"imagery {path}: no cell of {area.name!r} has at least {MIN_VALID_FRACTION:.0%} of its tile covered")
        pos, emb = np.concatenate(positions), np.concatenate(embeddings)
        index = pd.Index(area.region_ids(resolution)[pos], name=REGION_ID)
        features = pd.DataFrame(emb, index=index, columns=[f"emb_{i}" for i in range(emb.shape[1])])
        builtin_note = " (fixed random weights, seed 0: a baseline, not a trained model)" if encoder_name == BUILTIN else ""
        notes = [f"encoder={encoder_name}" + builtin_note,
                 f"{len(pos)} tiles of {self.tile_px}x{self.tile_px} px from {path.name}"]
        return ModalityResult(features=features, metrics={"tiles": len(pos)},
                              params={"encoder": encoder_name, "embedding_dim": emb.shape[1]}, notes=notes)
