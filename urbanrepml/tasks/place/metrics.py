"""Retrieval metrics of queries against a gallery: recall@k (k capped by the gallery size) and mAP.

A query's positives are the gallery items of its identity. ``recall@k`` is the share of queries
with a positive among their k most similar gallery items (k larger than the gallery counts as the
whole gallery); ``mAP`` is the mean over queries of the average precision of the ranked gallery
(queries without a positive are not counted). Similarity is the dot product (cosine for unit rows).
:func:`retrieval_metrics` works on blocks of queries with whole-array sorts;
:func:`retrieval_metrics_loop` is the plain per-query loop it is checked and benchmarked against.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from urbanrepml.errors import UrbanReprError


def _codes(q_ident, g_ident) -> tuple[np.ndarray, np.ndarray]:
    names, inv = np.unique(np.concatenate([np.asarray(q_ident).astype(str), np.asarray(g_ident).astype(str)]),
                           return_inverse=True)
    return inv[:len(q_ident)], inv[len(q_ident):]


def _check(q: np.ndarray, g: np.ndarray) -> None:
    if len(g) == 0 or len(q) == 0:
        raise UrbanReprError(f"retrieval needs queries and a gallery; got {len(q)} queries, {len(g)} gallery items")
    if q.shape[1] != g.shape[1]:
        raise UrbanReprError(f"queries have {q.shape[1]} dims, the gallery {g.shape[1]}")
    if not (np.isfinite(q).all() and np.isfinite(g).all()):
        raise UrbanReprError("embeddings hold NaN or inf; check the features the model was given")


def retrieval_metrics(q: np.ndarray, q_ident: Sequence, g: np.ndarray, g_ident: Sequence,
                      ks: Sequence[int] = (1, 10, 100), block: int = 256) -> dict[str, float]:
    """``recall_<k>`` for each k, ``map`` and ``queries`` (those with a positive) - see the module docstring."""
    q, g = np.asarray(q, dtype=np.float32), np.asarray(g, dtype=np.float32)
    _check(q, g)
    qc, gc = _codes(q_ident, g_ident)
    first_hit, ap, has = [], [], []
    for s in range(0, len(q), block):
        sim = q[s:s + block] @ g.T
        order = np.argsort(-sim, axis=1, kind="stable")
        hits = gc[order] == qc[s:s + block, None]
        n_pos = hits.sum(1)
        ok = n_pos > 0
        first_hit.append(np.where(ok, hits.argmax(1), len(g)))
        prec = np.cumsum(hits, axis=1) / np.arange(1, len(g) + 1)
        ap.append(np.where(ok, (prec * hits).sum(1) / np.maximum(n_pos, 1), 0.0))
        has.append(ok)
    first, ap_all, ok_all = np.concatenate(first_hit), np.concatenate(ap), np.concatenate(has)
    n = int(ok_all.sum())
    if n == 0:
        raise UrbanReprError("no query has a view of its identity in the gallery; nothing to measure")
    out = {f"recall_{k}": float((first[ok_all] < min(k, len(g))).mean()) for k in ks}
    out["map"] = float(ap_all[ok_all].mean())
    out["queries"] = float(n)
    return out


def retrieval_metrics_loop(q: np.ndarray, q_ident: Sequence, g: np.ndarray, g_ident: Sequence,
                           ks: Sequence[int] = (1, 10, 100)) -> dict[str, float]:
    """The same numbers as :func:`retrieval_metrics`, one query at a time in Python (the reference)."""
    q, g = np.asarray(q, dtype=np.float32), np.asarray(g, dtype=np.float32)
    _check(q, g)
    g_ident = [str(x) for x in g_ident]
    hits_at = {k: 0 for k in ks}
    aps, n = [], 0
    for i in range(len(q)):
        sims = [float(np.dot(q[i], g[j])) for j in range(len(g))]
        order = sorted(range(len(g)), key=lambda j: -sims[j])
        rel = [g_ident[j] == str(q_ident[i]) for j in order]
        if not any(rel):
            continue
        n += 1
        first = rel.index(True)
        for k in ks:
            hits_at[k] += first < min(k, len(g))
        found, precs = 0, []
        for rank, r in enumerate(rel, 1):
            if r:
                found += 1
                precs.append(found / rank)
        aps.append(sum(precs) / len(precs))
    if n == 0:
        raise UrbanReprError("no query has a view of its identity in the gallery; nothing to measure")
    out = {f"recall_{k}": hits_at[k] / n for k in ks}
    out["map"] = float(np.mean(aps))
    out["queries"] = float(n)
    return out
