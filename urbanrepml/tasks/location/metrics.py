"""Retrieval metrics of location embeddings (torch, chunked; no tracking).

Location -> embedding retrieval, own record excluded: for each query location, the bank's
records are ranked by cosine between the query's location embedding and their projected
embeddings; the query's own record is not in the ranking. The right answer is the bank record
whose stored embedding is most similar (cosine of the standardised embeddings) to the query's
own stored embedding - the record the location "should" retrieve when its own is unknown; ties
all count. ``top<k>`` is the share of queries with a right answer among the first k;
``top1_cos`` is the mean cosine between the query's stored embedding and that of its first
retrieved record (``oracle_cos``: the same for the right answer, the ceiling).

:func:`prediction_cosines` compares two ways of predicting a location's stored embedding from
the others: the retrieved records' similarity-weighted mean (RAG) and the mean of its k
geographically nearest records.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

TIE = 1e-6


def _chunks(n: int, m: int, budget: int = 1 << 22):
    step = max(1, budget // max(m, 1))
    for start in range(0, n, step):
        yield start, min(n, start + step)


@torch.no_grad()
def best_similarity(xq: Tensor, xb: Tensor, own: Tensor) -> Tensor:
    """For each query, the largest cosine between its stored embedding and any bank record but its own.

    Shapes:
        ``xq`` (Q, V) and ``xb`` (M, V) L2-normalised, ``own`` (Q,) int64 bank position or -1 -> (Q,).
    """
    out = []
    cols = torch.arange(xb.shape[0], device=xb.device)
    for a, b in _chunks(len(xq), len(xb)):
        s = xq[a:b] @ xb.T
        s = s.masked_fill(own[a:b, None] == cols[None, :], float("-inf"))
        out.append(s.max(dim=1).values)
    return torch.cat(out) if out else xq.new_zeros(0)


@torch.no_grad()
def retrieval_metrics(loc: Tensor, keys: Tensor, xq: Tensor, xb: Tensor, own: Tensor, ks: tuple[int, ...] = (1, 10),
                      best: Tensor | None = None) -> dict[str, float]:
    """``top<k>``, ``top1_cos`` and ``oracle_cos`` of location -> embedding retrieval (see the module docstring).

    Shapes:
        ``loc`` (Q, D) and ``keys`` (M, D) L2-normalised; ``xq`` (Q, V), ``xb`` (M, V) L2-normalised
        stored embeddings; ``own`` (Q,) the query's bank position or -1; ``best`` (Q,) from
        :func:`best_similarity` (computed when omitted).
    """
    sums = retrieval_sums(loc, keys, xq, xb, own, ks, best)
    q = max(sums.pop("queries"), 1.0)
    return {k: v / q for k, v in sums.items()}


@torch.no_grad()
def retrieval_sums(loc: Tensor, keys: Tensor, xq: Tensor, xb: Tensor, own: Tensor, ks: tuple[int, ...] = (1, 10),
                   best: Tensor | None = None) -> dict[str, float]:
    """The sums behind :func:`retrieval_metrics` (hits per k, cosines, ``queries``), for adding across batches."""
    best = best_similarity(xq, xb, own) if best is None else best
    kmax = min(max(ks), len(keys) - 1)
    cols = torch.arange(keys.shape[0], device=keys.device)
    sums = {f"top{k}": 0.0 for k in ks}
    sums.update({"top1_cos": 0.0, "oracle_cos": float(best.sum()), "queries": float(len(loc))})
    for a, b in _chunks(len(loc), len(keys)):
        s = (loc[a:b] @ keys.T).masked_fill(own[a:b, None] == cols[None, :], float("-inf"))
        idx = s.topk(kmax, dim=1).indices  # (c, kmax)
        target = torch.einsum("cv,ckv->ck", xq[a:b], xb[idx])  # cosine of the stored embeddings
        right = target >= best[a:b, None] - TIE
        for k in ks:
            sums[f"top{k}"] += float(right[:, :min(k, kmax)].any(dim=1).sum())
        sums["top1_cos"] += float(target[:, 0].sum())
    return sums


def normalise_rows(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Tensor:
    """Standardise with ``mean``/``std`` (zeros as 1) and L2-normalise: the space stored embeddings are compared in."""
    z = (np.asarray(x, np.float64) - mean) / np.where(std > 1e-12, std, 1.0)
    return F.normalize(torch.from_numpy(z.astype(np.float32)), dim=1)


def geo_knn(lat: np.ndarray, lon: np.ndarray, qlat: np.ndarray, qlon: np.ndarray, k: int, own: np.ndarray) -> np.ndarray:
    """Positions of the ``k`` geographically nearest bank records of each query, its own record excluded.

    Shapes:
        bank ``lat``/``lon`` (M,), queries ``qlat``/``qlon`` (Q,), ``own`` (Q,) -> (Q, k).
    """
    from scipy.spatial import cKDTree

    def xyz(la, lo):
        la, lo = np.deg2rad(la), np.deg2rad(lo)
        return np.column_stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)])

    _, idx = cKDTree(xyz(lat, lon)).query(xyz(qlat, qlon), k=k + 1)
    idx = np.atleast_2d(idx)
    keep = idx != own[:, None]
    # drop the own record where it came back, else the farthest of the k + 1
    return np.stack([row[mask][:k] for row, mask in zip(idx, keep, strict=True)])


def prediction_cosines(pred: np.ndarray, truth: np.ndarray, mean: np.ndarray, std: np.ndarray) -> float:
    """Mean cosine between predicted and true stored embeddings, both standardised with ``mean``/``std``."""
    a = normalise_rows(pred, mean, std)
    b = normalise_rows(truth, mean, std)
    return float((a * b).sum(dim=1).mean())
