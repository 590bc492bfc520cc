"""Identities and views from an image index, model inputs, identity splits, queries and galleries.

- :func:`views_from_frame`: the index rows with an ``identity`` seen at least twice. The ``identity``
  column names the same place or object in several images: one NAIP chip position across years,
  the Berlin Cathedral in three photos (an index without the column but with a single ``group`` is
  one identity: pass ``group_as_identity``), one building of a buildings JSONL with its views.
  Identities with one view are excluded and counted; none with two is an error.
- :func:`pixel_inputs`: images -> ``(N, C, size, size)`` float32: each image resized, its first
  three or four bands z-scored *per image and band* (brightness, season and sensor gain differ
  between acquisitions; the layout does not), plus NDVI (also z-scored) when there is a NIR band.
- :func:`split_identities`: every identity to ``train``/``val``/``test``: whole H3 blocks of the
  identities' centres (``blocks``; held-out identities are also spatially apart) or a hash of
  the identity (``identity``). Validation picks checkpoints and tunes; test is only reported.
- :func:`query_gallery`: per identity one query view (the latest, by ``captured_at``, else the
  last by id) against a gallery of the other views of the same set of identities.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from urbanrepml.errors import UrbanReprError

SPLIT_METHODS = ("blocks", "identity")


@dataclass
class Views:
    """Views with identities, in index order: ``frame`` (the index rows kept) and the identity codes."""

    frame: pd.DataFrame
    identity: np.ndarray  # str per view
    codes: np.ndarray  # int per view
    excluded_single: int  # identities dropped for having one view

    @property
    def ids(self) -> np.ndarray:
        return self.frame.index.to_numpy(dtype=object)

    def __len__(self) -> int:
        return len(self.frame)


def views_from_frame(frame: pd.DataFrame, *, group_as_identity: bool = True, where: str = "index") -> Views:
    """Rows whose identity has at least two views (see the module docstring)."""
    if "identity" in frame.columns and frame["identity"].notna().any():
        ident = frame["identity"]
    elif group_as_identity and "group" in frame.columns:
        ident = frame["group"]
    else:
        raise UrbanReprError(f"{where} has no identity column; build it from chips, buildings JSONL or a manifest "
                             "with identities")
    ident = ident.astype(object).where(ident.notna(), None)
    known = frame[ident.notna()].copy()
    ident = ident[ident.notna()].astype(str)
    sizes = ident.groupby(ident).size()
    single = int((sizes < 2).sum())
    keep = ident.map(sizes).to_numpy() >= 2
    if not keep.any():
        raise UrbanReprError(f"{where}: no identity has two or more views ({single} identities with one view); "
                             "place embeddings need several views of the same place")
    kept = known[keep]
    names = ident[keep].to_numpy(dtype=object)
    codes = np.unique(names.astype(str), return_inverse=True)[1]
    return Views(kept, names, codes, single)


def drop_views(views: Views, drop: Sequence[str]) -> Views:
    """``views`` without the views ``drop`` (identities left with one view are excluded and counted)."""
    frame = views.frame.drop(index=list(drop))
    frame = frame.assign(identity=views.identity[~views.frame.index.isin(list(drop))])
    out = views_from_frame(frame, where="index after removing near-duplicates")
    out.excluded_single += views.excluded_single
    return out


def pixel_inputs(images: Sequence[np.ndarray], size: int = 32, ndvi: bool = True) -> np.ndarray:
    """Images ``(H, W, bands)`` -> ``(N, C, size, size)`` float32 (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    if not len(images):
        raise UrbanReprError("no images to prepare")
    bands = min(np.asarray(im).shape[2] if np.asarray(im).ndim == 3 else 1 for im in images)
    bands = 4 if bands >= 4 else (3 if bands == 3 else 1)
    use_ndvi = ndvi and bands == 4
    out = np.empty((len(images), bands + int(use_ndvi), size, size), dtype=np.float32)
    for i, im in enumerate(images):
        a = np.asarray(im, dtype=np.float32)
        a = a[..., None] if a.ndim == 2 else a
        x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(a[..., :bands], -1, 0)))[None]
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=min(x.shape[-2:]) > size)
        x = x[0].numpy()
        if use_ndvi:
            x = np.concatenate([x, ((x[3] - x[0]) / (x[3] + x[0] + 1.0))[None]])
        out[i] = (x - x.mean((1, 2), keepdims=True)) / (x.std((1, 2), keepdims=True) + 1e-3)
    return out


def load_images(frame: pd.DataFrame, paths: Sequence[str], windows: Sequence, context: int = 0) -> list[np.ndarray]:
    """Decode every view (raster windows from scenes read once).

    ``context`` > 0 widens every raster window by that many pixels on each side (zeros - nodata -
    beyond the scene's edge): the surroundings of a small chip (neighbouring fields, roads, water)
    tell places apart far better than the chip alone. Whole images (photos) are unchanged.
    """
    from urbanrepml.sources.imagery.decode import ImageLoader

    if context < 0:
        raise UrbanReprError(f"context must be >= 0 pixels, got {context}")
    loader = ImageLoader()
    if context == 0:
        return [loader.load(p, w, min_side=64, name=i) for i, p, w in zip(frame.index, paths, windows, strict=True)]
    padded: dict[str, np.ndarray] = {}
    out = []
    for i, p, w in zip(frame.index, paths, windows, strict=True):
        if w is None:
            out.append(loader.load(p, None, min_side=64, name=i))
            continue
        if p not in padded:
            whole = loader.load(p, None, name=i)
            padded[p] = np.pad(whole, ((context, context), (context, context), (0, 0)))
        c, r, width, height = w
        out.append(padded[p][r:r + height + 2 * context, c:c + width + 2 * context])
    return out


def _hash01(name: str, seed: int) -> float:
    return int.from_bytes(hashlib.blake2b(f"{seed}\0{name}".encode(), digest_size=8).digest(), "big") / 2.0 ** 64


def split_identities(views: Views, method: str = "blocks", test_fraction: float = 0.3, val_fraction: float = 0.15,
                     block_resolution: int = 8, seed: int = 0) -> pd.Series:
    """``train``/``val``/``test`` per identity (index: identity names); see the module docstring."""
    if method not in SPLIT_METHODS:
        raise UrbanReprError(f"split must be one of {', '.join(SPLIT_METHODS)}, got {method!r}")
    for name, v in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0 < v < 1:
            raise UrbanReprError(f"{name} must be in (0, 1), got {v}")
    if test_fraction + val_fraction >= 1:
        raise UrbanReprError(f"test_fraction + val_fraction must be < 1, got {test_fraction + val_fraction}")
    centres = pd.DataFrame({"identity": views.identity, "lat": views.frame["lat"].to_numpy(),
                            "lon": views.frame["lon"].to_numpy()}).groupby("identity")[["lat", "lon"]].mean()
    if len(centres) < 3:
        raise UrbanReprError(f"{len(centres)} identities with two or more views; a train/val/test split needs at least 3")
    if method == "identity":
        u = np.array([_hash01(n, seed) for n in centres.index])
        labels = np.where(u < test_fraction, "test", np.where(u < test_fraction + val_fraction, "val", "train"))
    else:
        from urbanrepml.tasks.location.data import block_split

        lat, lon = centres["lat"].to_numpy(), centres["lon"].to_numpy()
        test = block_split(lat, lon, block_resolution, test_fraction, seed)
        labels = np.where(test, "test", "train").astype(object)
        rest = np.flatnonzero(~test)
        if len(rest) >= 2:
            try:
                val = block_split(lat[rest], lon[rest], block_resolution, val_fraction / (1 - test_fraction), seed + 1)
            except UrbanReprError:
                val = np.zeros(len(rest), dtype=bool)
            labels[rest[val]] = "val"
    labels = pd.Series(labels, index=centres.index, name="split")
    missing = [s for s in ("train", "val", "test") if not (labels == s).any()]
    if missing:
        raise UrbanReprError(f"the {method} split of {len(centres)} identities leaves no {', '.join(missing)} identity; "
                             "use more identities, a finer block_resolution or split identity")
    return labels


def query_gallery(views: Views, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(queries, gallery)`` among ``views`` for the views in the bool mask ``members``."""
    frame = views.frame
    when = pd.to_datetime(frame["captured_at"]) if "captured_at" in frame.columns else pd.Series(pd.NaT, index=frame.index)
    order = pd.DataFrame({"pos": np.arange(len(frame)), "identity": views.identity,
                          "t": when.to_numpy(), "id": frame.index.astype(str)})[members]
    order = order.sort_values(["identity", "t", "id"], na_position="first")
    q = order.groupby("identity")["pos"].last().to_numpy()
    g = np.setdiff1d(order["pos"].to_numpy(), q)
    return np.sort(q), g
