"""Image fingerprints: a perceptual hash (pHash) to find near-duplicates, a thumbnail PCA to index neighbours.

- :func:`thumbnails`: every image -> a ``side`` x ``side`` grey thumbnail (mean of the first three
  bands, area-resized), and a small per-image z-scored multi-band thumbnail for the PCA;
- :func:`phash`: 64-bit perceptual hash: DCT of the 32 x 32 grey thumbnail, the 8 x 8 lowest
  frequencies compared with their median (DC left out of the median);
- :func:`hamming_pairs`: pairs of images whose hashes differ in at most ``max_bits`` bits;
- :func:`thumbnail_pca`: PCA of the z-scored thumbnails (``dim`` components): the fingerprint space
  in which :mod:`.bands` finds visual neighbours;
- :func:`near_duplicates` / :func:`duplicates_to_drop`: the pairs (logged) and, within an
  identity, the repeated views a run may remove (the first of each set is kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from urbanrepml.errors import UrbanReprError


@dataclass
class Fingerprints:
    """``phash`` ``(N,)`` uint64 and ``pca`` ``(N, dim)`` float32, in image order."""

    phash: np.ndarray
    pca: np.ndarray


def _resize(images: np.ndarray, side: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    return F.adaptive_avg_pool2d(x, side).numpy() if min(x.shape[-2:]) >= side else \
        F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False).numpy()


def thumbnails(images: Sequence[np.ndarray], side: int = 32) -> np.ndarray:
    """``(H, W, bands)`` images -> ``(N, side, side)`` grey thumbnails (float32, the images' own scale)."""
    out = np.empty((len(images), side, side), dtype=np.float32)
    for i, im in enumerate(images):
        im = np.asarray(im, dtype=np.float32)
        grey = im[..., :3].mean(-1) if im.ndim == 3 else im
        out[i] = _resize(grey[None, None], side)[0, 0]
    return out


def phash(grey: np.ndarray) -> np.ndarray:
    """``(N, 32, 32)`` grey thumbnails -> ``(N,)`` uint64 perceptual hashes."""
    from scipy.fft import dctn

    low = dctn(grey.astype(np.float64), axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(grey), 64)
    med = np.median(low[:, 1:], axis=1, keepdims=True)
    bits = (low > med).astype(np.uint8)
    return np.packbits(bits, axis=1).view(">u8").astype(np.uint64).ravel()


def hamming_pairs(hashes: np.ndarray, max_bits: int, block: int = 2048) -> np.ndarray:
    """``(P, 3)`` int64 rows ``(i, j, bits)`` with ``i < j`` and at most ``max_bits`` differing bits."""
    h = np.asarray(hashes, dtype=np.uint64)
    out = []
    for s in range(0, len(h), block):
        d = np.bitwise_count(h[s:s + block, None] ^ h[None, :]).astype(np.int64)
        i, j = np.nonzero(d <= max_bits)
        i = i + s
        keep = i < j
        out.append(np.column_stack([i[keep], j[keep], d[i[keep] - s, j[keep]]]))
    return np.concatenate(out) if out else np.zeros((0, 3), dtype=np.int64)


def thumbnail_pca(images: Sequence[np.ndarray], dim: int = 32, side: int = 8) -> np.ndarray:
    """Per-image, per-band z-scored ``side`` x ``side`` thumbnails (up to 4 bands) -> PCA ``(N, dim)`` float32."""
    bands = min(min(np.asarray(im).shape[2] if np.asarray(im).ndim == 3 else 1 for im in images), 4)
    thumbs = np.empty((len(images), bands, side, side), dtype=np.float32)
    for i, im in enumerate(images):
        im = np.asarray(im, dtype=np.float32)
        im = im[..., None] if im.ndim == 2 else im
        thumbs[i] = _resize(np.moveaxis(im[..., :bands], -1, 0)[None], side)[0]
    thumbs = (thumbs - thumbs.mean((2, 3), keepdims=True)) / (thumbs.std((2, 3), keepdims=True) + 1e-6)
    flat = thumbs.reshape(len(images), -1)
    flat = flat - flat.mean(0)
    dim = min(dim, *flat.shape)
    _, _, vt = np.linalg.svd(flat, full_matrices=False)
    return (flat @ vt[:dim].T).astype(np.float32)


def fingerprints(images: Sequence[np.ndarray], pca_dim: int = 32) -> Fingerprints:
    """Both fingerprints of every image."""
    if len(images) == 0:
        raise UrbanReprError("no images to fingerprint")
    return Fingerprints(phash(thumbnails(images, 32)), thumbnail_pca(images, pca_dim))


def near_duplicates(fp: Fingerprints, ids: Sequence[str], identity: Sequence[str], max_bits: int) -> pd.DataFrame:
    """Pairs of images with hashes at most ``max_bits`` apart: ``a``, ``b``, ``bits``, ``same_identity``."""
    pairs = hamming_pairs(fp.phash, max_bits)
    ids, identity = np.asarray(ids, dtype=object), np.asarray(identity, dtype=object)
    return pd.DataFrame({"a": ids[pairs[:, 0]], "b": ids[pairs[:, 1]], "bits": pairs[:, 2],
                         "same_identity": identity[pairs[:, 0]] == identity[pairs[:, 1]]})


def duplicates_to_drop(pairs: pd.DataFrame, ids: Sequence[str]) -> list[str]:
    """Views to remove: within each set of near-duplicate views of one identity, all but the first (in ``ids`` order)."""
    same = pairs[pairs["same_identity"]]
    if same.empty:
        return []
    pos = {v: i for i, v in enumerate(ids)}
    parent = {}

    def find(x):
        while parent.get(x, x) != x:
            x = parent[x] = parent.get(parent[x], parent[x])
        return x

    for a, b in zip(same["a"], same["b"], strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            keep, drop = (ra, rb) if pos[ra] < pos[rb] else (rb, ra)
            parent[drop] = keep
    return sorted((v for v in list(parent) if find(v) != v), key=pos.get)
