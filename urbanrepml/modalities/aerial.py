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
``transformers`` package, which this project does not install); or nothing, which
means :class:`BuiltinCNN` with fixed random weights (seed 0), named
``builtin-random-cnn`` in the run. 4-D encoder outputs are average-pooled; the
embedding is the flattened output.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.areas import REGION_ID, Area, h3ops
from urbanrepml.config import StudyArea
from urbanrepml.errors import UrbanReprError
from urbanrepml.modalities.base import Modality, ModalityResult
from urbanrepml.paths import cache_dir

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
TILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MIN_VALID_FRACTION = 0.5
BATCH = 128
BUILTIN = "builtin-random-cnn"


def builtin_cnn(embed_dim: int = 64, seed: int = 0):
    """The built-in encoder: 4 strided conv blocks + global average pooling -> ``embed_dim``, fixed seeded init."""
    import torch
    from torch import nn

    class BuiltinCNN(nn.Module):
        def __init__(self):
            super().__init__()
            chans = [3, 16, 32, 64, embed_dim]
            layers = []
            for c_in, c_out in zip(chans[:-1], chans[1:]):
                layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
            self.features = nn.Sequential(*layers)

        def forward(self, x):
            return self.features(x).mean(dim=(2, 3))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BuiltinCNN()
    return model.eval()


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


def _unit_range(pixels: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """(lo, hi) that map raw pixels to [0, 1]: 0..255 for uint8, else the 2nd-98th percentile of valid pixels."""
    if pixels.dtype == np.uint8:
        return 0.0, 255.0
    vals = pixels[valid] if valid.any() else pixels.ravel()
    if vals.size > 1_000_000:  # a fixed subsample is plenty for two percentiles
        vals = vals[np.random.default_rng(0).choice(vals.size, 1_000_000, replace=False)]
    lo, hi = np.percentile(vals, [2, 98]) if vals.size else (0.0, 1.0)
    return float(lo), float(max(hi, lo + 1e-9))


def _scale(pixels: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((pixels.astype(np.float32) - lo) / (hi - lo), 0, 1)


def _to_unit(pixels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Raw pixels -> [0, 1] float32 (uint8 / 255, else 2-98 percentile stretch over valid pixels)."""
    return _scale(pixels, *_unit_range(pixels, valid))


def _rgb(bands: np.ndarray) -> np.ndarray:
    """(B, ...) -> (3, ...): first three bands, or one band repeated."""
    if bands.shape[0] >= 3:
        return bands[:3]
    return np.repeat(bands[:1], 3, axis=0)


def _normalise(tiles: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> ImageNet-normalised float32."""
    return ((tiles - IMAGENET_MEAN[None, :, None, None]) / IMAGENET_STD[None, :, None, None]).astype(np.float32)


def tile_side_deg(resolution: int, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tile side in degrees (lon, lat) per cell: 2 x average edge length of the resolution."""
    import h3

    side_km = 2 * h3.average_hexagon_edge_length(resolution, unit="km")
    dlat = np.full(len(lat), side_km / 111.32)
    dlon = side_km / (111.32 * np.maximum(np.cos(np.radians(lat)), 0.01))
    return dlon, dlat


def tiles_from_orthophoto(path: Path, area: Area, resolution: int, tile_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut one tile per area cell from a GeoTIFF -> (positions of kept cells, (N, 3, tile_px, tile_px) in [0, 1])."""
    chunks = list(iter_orthophoto_tiles(path, area, resolution, tile_px))
    if not chunks:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 3, tile_px, tile_px), dtype=np.float32)
    return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])


def iter_orthophoto_tiles(path: Path, area: Area, resolution: int, tile_px: int, chunk_values: int = 4_000_000):
    """Like :func:`tiles_from_orthophoto`, in chunks of about ``chunk_values`` sample points (bounded memory)."""
    import rasterio
    from pyproj import Transformer
    from rasterio.enums import Resampling
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, from_bounds

    from urbanrepml.modalities.rasterstats import _is_wgs84, _open, area_bounds_lonlat

    cells = area.cells(resolution)
    with _open(path) as src:
        if src.crs is None:
            raise UrbanReprError(f"imagery {path} has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:4326 {path.name}) and retry")
        wgs84 = _is_wgs84(src.crs)
        box = area_bounds_lonlat(area, resolution)
        if not wgs84:
            box = transform_bounds("EPSG:4326", src.crs, *box, densify_pts=21)
        raw = from_bounds(*box, transform=src.transform)
        c0, r0 = np.floor(raw.col_off), np.floor(raw.row_off)
        c1, r1 = np.ceil(raw.col_off + raw.width), np.ceil(raw.row_off + raw.height)
        try:
            window = Window(c0, r0, c1 - c0, r1 - r0).intersection(Window(0, 0, src.width, src.height))
        except Exception:  # noqa: BLE001 - rasterio WindowError: no intersection
            window = None
        if window is None or window.width <= 0 or window.height <= 0:
            raise UrbanReprError(f"imagery {path} does not overlap study area {area.name!r}")
        lat, lon = h3ops.cell_centroids(cells)
        dlon, dlat = tile_side_deg(resolution, lat)
        # Read at about the tile's ground resolution (never finer than the file).
        mid = np.array([[lon.mean()], [lat.mean()]])
        to_src = None if wgs84 else Transformer.from_crs("EPSG:4326", src.crs, always_xy=True)
        if to_src is not None:
            x0, y0 = to_src.transform(mid[0] - dlon.mean() / 2, mid[1])
            x1, y1 = to_src.transform(mid[0] + dlon.mean() / 2, mid[1])
            tile_w_src = float(np.hypot(x1 - x0, y1 - y0)[0])
        else:
            tile_w_src = float(dlon.mean())
        step = max(tile_w_src / tile_px / abs(src.transform.a), 1.0)
        out_w = max(1, int(round(window.width / step)))
        out_h = max(1, int(round(window.height / step)))
        data = src.read(window=window, out_shape=(src.count, out_h, out_w), masked=True,
                        resampling=Resampling.average if step > 1 else Resampling.nearest)
        valid_px = ~np.ma.getmaskarray(data).any(axis=0)
        if src.nodata is not None:
            valid_px &= ~(np.ma.getdata(data) == src.nodata).any(axis=0)
        pixels = _rgb(np.ma.getdata(data))  # raw dtype; scaled to [0, 1] per chunk below
        lo, hi = _unit_range(pixels, np.broadcast_to(valid_px, pixels.shape))
        del data
        win_transform = src.window_transform(window) * rasterio.Affine.scale(window.width / out_w, window.height / out_h)
    # Tile sample points: (N, tile_px, tile_px) lon/lat grid of pixel centres around each centroid.
    frac = (np.arange(tile_px) + 0.5) / tile_px - 0.5
    per_chunk = max(1, chunk_values // (tile_px * tile_px))
    inv = ~win_transform
    for s in range(0, len(cells), per_chunk):
        sl = slice(s, s + per_chunk)
        x = lon[sl, None, None] + dlon[sl, None, None] * frac[None, None, :]
        y = lat[sl, None, None] - dlat[sl, None, None] * frac[None, :, None]
        x, y = np.broadcast_arrays(x, y)
        if to_src is not None:
            x, y = to_src.transform(x, y)
        col = np.floor(inv.a * x + inv.b * y + inv.c).astype(np.int64)
        row = np.floor(inv.d * x + inv.e * y + inv.f).astype(np.int64)
        inside = (col >= 0) & (col < out_w) & (row >= 0) & (row < out_h)
        col_c, row_c = np.clip(col, 0, out_w - 1), np.clip(row, 0, out_h - 1)
        ok = inside & valid_px[row_c, col_c]
        good = ok.reshape(len(ok), -1).mean(axis=1) >= MIN_VALID_FRACTION
        if not good.any():
            continue
        tiles = _scale(pixels[:, row_c[good], col_c[good]], lo, hi)      # (3, n, px, px)
        tiles = np.where(ok[good][None], tiles, 0.0).transpose(1, 0, 2, 3)
        yield np.arange(len(cells))[sl][good], np.ascontiguousarray(tiles, dtype=np.float32)


def tiles_from_folder(folder: Path, area: Area, resolution: int, tile_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Tiles named ``<region_id>.<png|jpg|tif>`` -> (positions of the area cells found, (N, 3, px, px) in [0, 1])."""
    from PIL import Image

    files = tile_files(folder)
    ids = pd.Index(area.region_ids(resolution))
    pos, tiles = [], []
    for f in files:
        p = ids.get_indexer([f.stem.lower()])[0]
        if p < 0:
            continue
        try:
            if f.suffix.lower() in (".tif", ".tiff"):
                import rasterio

                with rasterio.open(f) as src:
                    arr = src.read()
                arr = _to_unit(arr, np.ones(arr.shape, bool))
                img = np.stack([np.asarray(Image.fromarray((a * 255).astype(np.uint8)).resize((tile_px, tile_px), Image.BILINEAR))
                                for a in _rgb(arr)]) / 255.0
            else:
                with Image.open(f) as im:
                    img = np.asarray(im.convert("RGB").resize((tile_px, tile_px), Image.BILINEAR)).transpose(2, 0, 1) / 255.0
        except Exception as exc:  # noqa: BLE001 - PIL/rasterio raise many types
            raise UrbanReprError(f"image tile {f} is unreadable ({type(exc).__name__}: {exc})") from None
        pos.append(p)
        tiles.append(img.astype(np.float32))
    if not pos:
        raise UrbanReprError(f"no tile in {folder} is named after a cell of {area.name!r} at resolution {resolution} (<region_id>.png)")
    return np.array(pos), np.stack(tiles)


def tile_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in TILE_SUFFIXES and p.is_file())


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
        raise UrbanReprError(f"aerial: no imagery; pass imagery=<orthophoto GeoTIFF or tile folder> or set images = \"tiles/\" under [sources] of {spec.source_file}")

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
            embeddings.append(encode(encoder, _normalise(tiles)))
        if not positions:
            raise UrbanReprError(f"imagery {path}: no cell of {area.name!r} has at least {MIN_VALID_FRACTION:.0%} of its tile covered")
        pos, emb = np.concatenate(positions), np.concatenate(embeddings)
        index = pd.Index(area.region_ids(resolution)[pos], name=REGION_ID)
        features = pd.DataFrame(emb, index=index, columns=[f"emb_{i}" for i in range(emb.shape[1])])
        notes = [f"encoder={encoder_name}" + (" (fixed random weights, seed 0: a baseline, not a trained model)" if encoder_name == BUILTIN else ""),
                 f"{len(pos)} tiles of {self.tile_px}x{self.tile_px} px from {path.name}"]
        return ModalityResult(features=features, metrics={"tiles": len(pos)},
                              params={"encoder": encoder_name, "embedding_dim": emb.shape[1]}, notes=notes)
