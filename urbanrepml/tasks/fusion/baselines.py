"""Baselines that cost nothing and are logged beside every learned fusion model.

API
---
- ``concat_baseline(inputs) -> np.ndarray``: ``inputs.x`` (z-scored modality blocks + indicators).
- ``ring_weights(k, weighting) -> np.ndarray``: the K+1 raw weights ``w_0..w_K`` (before renormalising).
- ``ring_operator(edge_index, n, k, weighting) -> scipy.sparse.csr_matrix``: (n, n) operator S with
  ``S @ x`` = the ring aggregation below.
- ``ring_baseline(x, edge_index, n, k=2, weighting="exponential") -> np.ndarray`` float32 (n, D).
- ``ringconcat_baseline(x, edge_index, n=None, k=2) -> np.ndarray`` float32 (n, (K+1)·D):
  [cell ‖ mean of ring 1 ‖ ... ‖ mean of ring K] (an empty ring gives zeros).
- ``baseline_tables(inputs, area, ring_k=2, ring_weighting="exponential", run_id=None)
  -> {"concat": ..., "ring": ..., "ringconcat": ...}``: contract tables (prefixes
  ``concat``/``ring``/``ringconcat``, modalities ``baseline_<prefix>``), in memory;
  :mod:`urbanrepml.tracking.fusion` logs and reloads them. All are computed from ``inputs.x``,
  the same transformed inputs a learned model trains on.

Ring aggregation
----------------
Ring k of a cell is the set of cells at exact grid distance k *within the graph* given by the
1-ring ``edge_index`` (BFS distance, so at the area's border a ring only holds the cells that
exist). For each cell i::

    ring(i) = sum_{k in K_i} w_k * mean_{j in ring_k(i)} x_j  /  sum_{k in K_i} w_k

where K_i = {k in 0..K : ring_k(i) is not empty} (ring 0 is the cell itself), so a cell whose
outer rings are empty renormalises its weights over the rings it has. Weights:
``exponential`` w_k = exp(-k), ``logarithmic`` w_k = 1/log2(k+2), ``linear`` w_k = (K+1-k)/(K+1),
``flat`` w_k = 1. The output has the same dimension D as ``x``: one embedding per cell, the
weighted sum of the per-ring means (rings are summed, not concatenated).

The operator is built with scipy.sparse: ring memberships come from repeated products with the
adjacency (a BFS frontier per step), truncated at K, so memory is O(n * cells within K rings).
numpy/scipy only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from urbanrepml.errors import UrbanReprError
from urbanrepml.models.registry import Choice, IntRange, ModelSpec, register_model
from urbanrepml.tables import EmbeddingTable, TableMeta, to_embedding_frame

if TYPE_CHECKING:  # pragma: no cover
    from urbanrepml.areas import Area
    from urbanrepml.tasks.fusion.inputs import FusionInputs

WEIGHTINGS = ("exponential", "logarithmic", "linear", "flat")


def concat_baseline(inputs: FusionInputs) -> np.ndarray:
    """The concat baseline: ``inputs.x`` (z-scored blocks side by side + ``has_<modality>`` indicators)."""
    return np.asarray(inputs.x, dtype=np.float32)


def ring_weights(k: int, weighting: str) -> np.ndarray:
    """Raw weights w_0..w_K (float64) for ``weighting``; they are renormalised per cell later."""
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise UrbanReprError(f"ring_k must be a whole number >= 0, got {k!r}")
    k = int(k)
    steps = np.arange(k + 1, dtype=np.float64)
    if weighting == "exponential":
        return np.exp(-steps)
    if weighting == "logarithmic":
        return 1.0 / np.log2(steps + 2.0)
    if weighting == "linear":
        return (k + 1 - steps) / (k + 1)
    if weighting == "flat":
        return np.ones(k + 1)
    raise UrbanReprError(f"ring_weighting must be one of {', '.join(WEIGHTINGS)}; got {weighting!r}")


def _adjacency(edge_index: np.ndarray, n: int) -> sp.csr_matrix:
    edge_index = np.asarray(edge_index)
    if edge_index.ndim != 2 or edge_index.shape[0] != 2:
        raise UrbanReprError(f"edge_index must have shape (2, E), got {edge_index.shape}")
    if edge_index.size and (edge_index.min() < 0 or edge_index.max() >= n):
        raise UrbanReprError(f"edge_index refers to nodes outside 0..{n - 1}")
    src = edge_index[0].astype(np.int64)
    dst = edge_index[1].astype(np.int64)
    keep = src != dst
    # Symmetrise: the ring graph is undirected even if only one direction was given.
    rows = np.concatenate([src[keep], dst[keep]])
    cols = np.concatenate([dst[keep], src[keep]])
    adj = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n))
    adj.data[:] = 1.0  # duplicates summed above; back to 0/1
    return adj


def ring_memberships(edge_index: np.ndarray, n: int, k: int) -> list[sp.csr_matrix]:
    """R_0..R_K: (n, n) 0/1 matrices, R_k[i, j] = 1 iff the graph distance from i to j is exactly k."""
    adj = _adjacency(edge_index, n)
    ident = sp.identity(n, dtype=np.float32, format="csr")
    rings = [ident]
    reached = ident.copy()
    frontier = ident
    for _ in range(int(k)):
        step = (frontier @ adj).tocsr()
        step.data[:] = 1.0
        new = (step - step.multiply(reached)).tocsr()
        new.eliminate_zeros()
        rings.append(new)
        reached = (reached + new).tocsr()
        frontier = new
    return rings


def ring_operator(edge_index: np.ndarray, n: int, k: int = 2, weighting: str = "exponential") -> sp.csr_matrix:
    """(n, n) sparse operator S (float64) such that ``S @ x`` is the ring baseline (see module docstring)."""
    w = ring_weights(k, weighting)
    if n <= 0:
        raise UrbanReprError("ring baseline needs at least one cell")
    rings = ring_memberships(edge_index, n, k)
    counts = np.stack([np.asarray(r.sum(axis=1)).ravel() for r in rings], axis=1)  # (n, K+1)
    active = counts > 0
    weight = active * w[None, :]
    weight /= weight.sum(axis=1, keepdims=True)  # ring 0 is never empty, so the sum is > 0
    scale = np.where(active, weight / np.maximum(counts, 1), 0.0)
    op = sp.csr_matrix((n, n), dtype=np.float64)
    for ring, s in zip(rings, scale.T, strict=False):
        op = op + sp.diags(s) @ ring.astype(np.float64)
    return op.tocsr()


def ring_baseline(x: np.ndarray, edge_index: np.ndarray, n: int | None = None, k: int = 2,
                  weighting: str = "exponential") -> np.ndarray:
    """Σ_k w_k · mean(ring k) per cell, weights renormalised over non-empty rings; float32 (n, D)."""
    x = np.asarray(x)
    n = len(x) if n is None else int(n)
    if x.ndim != 2 or len(x) != n:
        raise UrbanReprError(f"x must be a (n, D) array with n = {n} rows, got shape {x.shape}")
    op = ring_operator(edge_index, n, k, weighting)
    return np.asarray(op @ x.astype(np.float64), dtype=np.float32)


def ringconcat_baseline(x: np.ndarray, edge_index: np.ndarray, n: int | None = None, k: int = 2) -> np.ndarray:
    """[x ‖ mean(ring 1) ‖ ... ‖ mean(ring k)] per cell, float32 (n, (k+1)·D); an empty ring's mean is 0."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x) if n is None else int(n)
    if x.ndim != 2 or len(x) != n:
        raise UrbanReprError(f"x must be a (n, D) array with n = {n} rows, got shape {x.shape}")
    ring_weights(k, "flat")  # validates k
    parts = [x]
    for ring in ring_memberships(edge_index, n, k)[1:]:
        counts = np.asarray(ring.sum(axis=1)).ravel()
        parts.append(sp.diags(1.0 / np.maximum(counts, 1)) @ (ring.astype(np.float64) @ x))
    return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)


def _baseline_table(values: np.ndarray, inputs: FusionInputs, prefix: str, run_id: str | None, extra: dict) -> EmbeddingTable:
    frame, _ = to_embedding_frame(values, inputs.region_ids, prefix)
    meta = TableMeta(
        modality=f"baseline_{prefix}", resolution=inputs.resolution, study_area=inputs.study_area, prefix=prefix,
        producer_run_id=run_id, input_digests=inputs.digests, feature_names=list(inputs.feature_names), extra=extra,
    )
    return EmbeddingTable(frame, meta)


def baseline_tables(inputs: FusionInputs, area: Area, ring_k: int = 2, ring_weighting: str = "exponential",
                    run_id: str | None = None) -> dict[str, EmbeddingTable]:
    """Concat, ring and ringconcat baselines of ``inputs`` as contract tables (producer ``run_id``), in memory."""
    edges = inputs.edge_index(area)
    ring = ring_baseline(inputs.x, edges, inputs.n_cells, ring_k, ring_weighting)
    extra = {"ring_k": str(int(ring_k)), "ring_weighting": ring_weighting}
    return {
        "concat": _baseline_table(concat_baseline(inputs), inputs, "concat", run_id, {}),
        "ring": _baseline_table(ring, inputs, "ring", run_id, extra),
        "ringconcat": _baseline_table(ringconcat_baseline(inputs.x, edges, inputs.n_cells, 2), inputs, "ringconcat",
                                      run_id, {"rings": "2"}),
    }


register_model(ModelSpec("concat", "fusion", "the modality blocks z-scored and concatenated (a free baseline)"))
register_model(ModelSpec("ring", "fusion", "weighted sum of the ring means of the concatenated inputs (a free baseline)",
                         defaults={"ring.k": 2, "ring.weighting": "exponential"},
                         search_space=lambda max_epochs: {"ring.k": IntRange(1, 4), "ring.weighting": Choice(WEIGHTINGS)}))
register_model(ModelSpec("ringconcat", "fusion", "the cell's inputs beside the means of its rings 1 and 2 (a free baseline)"))
