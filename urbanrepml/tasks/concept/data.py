"""The concept dataset as the three stages see it: labels, splits, geocells, cached stem features, GPS embeddings.

- Images and labels: an image index (:mod:`urbanrepml.images`) with ``meta_concept``, ``parent_concept``,
  ``country`` and a stored ``split`` (the ``concepts`` stage writes one, stratified by meta concept);
  images without a split are left out. The same split serves all three stages.
- Hierarchy: :func:`~urbanrepml.tasks.concept.hierarchy.extract_hierarchy` (validated).
- Geocells: :func:`~urbanrepml.tasks.concept.geocells.semantic_geocells` of the training images; every
  image is assigned to the nearest cell of its country.
- Stem features: the frozen part of the encoder (:class:`~urbanrepml.models.concept.backbone.SplitBackbone`)
  run once per image and cached under ``<data dir>/cache/concept_stem/``, keyed by the images (ids,
  files, windows), the encoder, its weights digest, input size and cut.
- GPS embeddings: a frozen location encoder at each image's (lat, lon): ``geoclip`` (GeoCLIP's pretrained
  512-d encoder) or ``rff`` (fixed random Fourier features of the unit vector, 256-d, no weights).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from urbanrepml.errors import UrbanReprError
from urbanrepml.geodesy import to_unit
from urbanrepml.images import ImageIndex
from urbanrepml.paths import cache_dir
from urbanrepml.tasks.concept.geocells import Geocells, check_countries, semantic_geocells
from urbanrepml.tasks.concept.hierarchy import ConceptHierarchy, extract_hierarchy

LOCATION_ENCODERS = ("geoclip", "rff")


@dataclass
class ConceptData:
    """Everything the stages train on (rows in index order, images without a split dropped)."""

    index: ImageIndex
    frame: pd.DataFrame
    hierarchy: ConceptHierarchy
    meta: np.ndarray
    parent: np.ndarray
    split: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    country: np.ndarray
    geocells: Geocells
    cell: np.ndarray
    notes: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.frame)

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    @property
    def split_digest(self) -> str:
        """SHA-256 of (image id, split) of every row and the hierarchy: what held-out numbers are comparable on."""
        h = hashlib.sha256(self.hierarchy.digest.encode())
        for i, s in zip(self.frame.index, self.split, strict=True):
            h.update(f"{i}\0{s}\n".encode())
        return h.hexdigest()


def load_concept_data(index: ImageIndex, *, min_samples_per_cell: int, countries: list[str] | None = None,
                      seed: int = 0) -> ConceptData:
    """Labels, split and geocells of an index (see the module docstring); bad labels fail with one line."""
    where = str(index.path or index.meta.dataset)
    frame = index.frame
    if int(min_samples_per_cell) <= 0:
        raise UrbanReprError(f"parameter min_samples_per_cell must be >= 1, got {min_samples_per_cell}")
    if "country" not in frame.columns:
        raise UrbanReprError(f"{where}: no 'country' column; build the dataset with the concepts stage")
    check_countries(frame["country"], countries, where=where)
    if countries:
        frame = frame[frame["country"].astype(str).isin(countries)]
    hierarchy = extract_hierarchy(frame, where=where)
    frame = frame[frame["split"].notna()]
    split = frame["split"].astype(str).to_numpy()
    for s in ("train", "val", "test"):
        if not (split == s).any():
            raise UrbanReprError(f"{where}: the {s} split is empty; rebuild the dataset with a split that fills train, "
                                 "val and test (concepts --split concept)")
    meta = hierarchy.meta_index(frame["meta_concept"].astype(str))
    parent = hierarchy.parent_of(meta)
    lat, lon = frame["lat"].to_numpy(np.float64), frame["lon"].to_numpy(np.float64)
    country = frame["country"].astype(str).to_numpy()
    train = split == "train"
    cells = semantic_geocells(lat[train], lon[train], country[train], min_samples_per_cell, seed=seed, where=where)
    cell = cells.assign(lat, lon, country)
    sub = ImageIndex(frame=frame, meta=index.meta, root=index.root, path=index.path)
    return ConceptData(sub, frame, hierarchy, meta, parent, split, lat, lon, country, cells, cell)


def _images_key(index: ImageIndex) -> str:
    h = hashlib.sha256()
    for image_id, path, window in zip(index.frame.index, index.image_paths(), index.frame["window"], strict=False):
        h.update(f"{image_id}\0{path}\0{window or ''}\n".encode())
    return h.hexdigest()


def stem_features(index: ImageIndex, backbone, *, batch_size: int = 64, workers: int = 2,
                  use_cache: bool = True) -> tuple[np.ndarray, bool]:
    """``(N, C, h, w)`` float32 stem features of every image (cached); and whether the cache answered."""
    from urbanrepml.models.encoders.preprocess import prepare
    from urbanrepml.sources.imagery.decode import ImageLoader, iter_batches

    key = hashlib.sha256(f"{_images_key(index)}|{backbone.encoder_name}|{backbone.weights_digest}|"
                         f"{backbone.input_size}|{backbone.trainable_blocks}|{backbone.bands}|{backbone.context}".encode()).hexdigest()[:32]
    path = cache_dir() / "concept_stem" / f"{backbone.encoder_name}-{key}.npy"
    if use_cache and path.is_file():
        arr = np.load(path)
        if arr.shape == (len(index.frame), *backbone.stem_shape):
            return arr, True
    size, mean, std = backbone.input_size, backbone.mean, backbone.std
    loader = ImageLoader()
    items = list(zip(index.frame.index, index.image_paths(), index.windows(), strict=False))

    def decode(item):
        image_id, p, window = item
        try:
            pixels = loader.load(p, window, min_side=size, name=image_id, context=backbone.context)
            return prepare(pixels, size, mean, std, backbone.bands)
        except ValueError as exc:
            raise UrbanReprError(f"image {image_id}: {exc}") from None

    out = np.empty((len(items), *backbone.stem_shape), dtype=np.float32)
    done = 0
    backbone.stem.eval()
    for batch in iter_batches(items, decode, batch_size, max(1, workers)):
        with torch.inference_mode():
            out[done:done + len(batch)] = backbone.stem(torch.stack(batch)).numpy()
        done += len(batch)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{np.random.randint(1 << 30)}.tmp.npy")
        np.save(tmp, out)
        tmp.replace(path)
    return out, False


def rff_location(lat, lon, dim: int = 256, scales: tuple[float, ...] = (1.0, 16.0, 256.0, 4096.0)) -> np.ndarray:
    """Fixed random Fourier features of the unit vector (seeded; no weights): (N, dim)."""
    xyz = to_unit(lat, lon)
    rng = np.random.default_rng(12345)
    per = dim // (2 * len(scales))
    feats = []
    for s in scales:
        b = rng.normal(size=(3, per)) * s
        proj = xyz @ b
        feats += [np.cos(proj), np.sin(proj)]
    return np.concatenate(feats, axis=1).astype(np.float32)


def location_embeddings(lat, lon, encoder: str = "geoclip") -> np.ndarray:
    """(N, D) embeddings of a frozen location encoder (``geoclip`` or ``rff``)."""
    if encoder == "rff":
        return rff_location(lat, lon)
    if encoder != "geoclip":
        raise UrbanReprError(f"location_encoder must be one of {', '.join(LOCATION_ENCODERS)}, got {encoder!r}")
    from urbanrepml.models.location.geoclip import build_geoclip

    enc = build_geoclip()
    latlon = torch.from_numpy(np.column_stack([lat, lon]).astype(np.float32))
    out = []
    with torch.no_grad():
        for i in range(0, len(latlon), 2048):
            out.append(enc(latlon[i:i + 2048]).numpy())
    return np.concatenate(out).astype(np.float32)


def resolve_index_file(dataset: str) -> Path:
    """An index parquet: ``dataset`` when it is a file, else ``<data dir>/images/<dataset>/index.parquet``."""
    from urbanrepml.paths import data_dir

    path = Path(dataset).expanduser()
    if path.is_file():
        return path
    built = data_dir() / "images" / dataset / "index.parquet"
    if built.is_file():
        return built
    raise UrbanReprError(f"no concept dataset {dataset!r}: neither a file nor {built}; build it first with "
                         f"`python -m urbanrepml concepts --name {dataset}`")
