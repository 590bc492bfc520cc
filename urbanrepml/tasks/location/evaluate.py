"""After training: per-cell tables of location embeddings, RAG features, and the dense grid for the map.

- :func:`cell_table`: the encoder at the centres of given cells -> a contract embedding table
  (so ``probe -P table=...`` and fusion read it like any modality table).
- :func:`rag_features`: for query points, the location embedding and the retrieval-augmented
  vector from a bank (:class:`~urbanrepml.models.location.retrieval.LocationService`), the
  query's own record excluded; :func:`rag_table` puts ``[location, combined]`` per cell.
- :func:`rag_vs_knn`: held-out queries predicted from the rest of the bank, by retrieval (RAG)
  and by the k geographically nearest records: mean cosine to the truth, side by side.
- :func:`grid` and :func:`pca_rgb`: a regular lat/lon grid over the region and the first three
  principal components of its embeddings as colours.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from urbanrepml.areas import h3ops
from urbanrepml.errors import UrbanReprError
from urbanrepml.tables import EmbeddingTable, TableMeta, to_embedding_frame
from urbanrepml.tasks.location.data import LocatedEmbeddings
from urbanrepml.tasks.location.metrics import geo_knn, prediction_cosines
from urbanrepml.tasks.location.task import encode


def cell_table(encoder, cells: np.ndarray, study_area: str, prefix: str, run_id: str | None = None,
               extra: dict | None = None, values: np.ndarray | None = None) -> EmbeddingTable:
    """A contract table of ``encoder`` at the centres of ``cells`` (sorted ``uint64`` of one resolution).

    ``values`` (N, D), when given, are used instead of evaluating ``encoder`` (e.g. RAG features).
    """
    lat, lon = h3ops.cell_centroids(cells)
    if values is None:
        values = encode(encoder, lat, lon)
    ids = h3ops.cells_to_str(cells)
    frame, names = to_embedding_frame(values, ids, prefix)
    resolution = int(h3ops.cell_resolution(cells[:1])[0])
    meta = TableMeta(modality=prefix, resolution=resolution, study_area=study_area, prefix=prefix, producer_run_id=run_id,
                     feature_names=names, extra={k: str(v) for k, v in (extra or {}).items()})
    return EmbeddingTable(frame, meta)


def own_positions(bank_ids: np.ndarray, query_ids: np.ndarray) -> np.ndarray:
    """Position of each query's own record in the bank (by id), -1 where it has none."""
    lookup = pd.Index(np.asarray(bank_ids, dtype=object))
    if lookup.has_duplicates:
        lookup = lookup.drop_duplicates(keep="first")
        positions = pd.Index(np.asarray(bank_ids, dtype=object)).get_indexer(lookup)
        found = lookup.get_indexer(np.asarray(query_ids, dtype=object))
        return np.where(found >= 0, positions[np.maximum(found, 0)], -1).astype(np.int64)
    return lookup.get_indexer(np.asarray(query_ids, dtype=object)).astype(np.int64)


def check_k(k: int, bank_size: int, where: str = "k") -> None:
    """``1 <= k < bank size`` (the query's own record is never retrieved), else one clear line."""
    if bank_size < 2:
        raise UrbanReprError(f"the retrieval bank has {bank_size} record(s); it needs at least 2")
    if not 1 <= int(k) < bank_size:
        raise UrbanReprError(f"{where} must be between 1 and {bank_size - 1} (the bank holds {bank_size} records, "
                             f"a query's own record excluded), got {k}")


@torch.no_grad()
def rag_features(service, lat: np.ndarray, lon: np.ndarray, k: int, own: np.ndarray | None = None,
                 batch: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(location embedding (N, D), combined retrieved vector (N, V), retrieved positions (N, k)) of each query."""
    check_k(k, service.bank_size())
    latlon = torch.from_numpy(np.column_stack([lat, lon]).astype(np.float64))
    own_t = torch.from_numpy(np.full(len(lat), -1, np.int64) if own is None else np.asarray(own, np.int64))
    embs, combos, idxs = [], [], []
    for i in range(0, len(latlon), batch):
        emb, combined, idx, _ = service.retrieve(latlon[i:i + batch], int(k), own_t[i:i + batch])
        embs.append(emb.numpy())
        combos.append(combined.numpy())
        idxs.append(idx.numpy())
    return np.concatenate(embs), np.concatenate(combos), np.concatenate(idxs)


def rag_table(service, cells: np.ndarray, bank: LocatedEmbeddings, k: int, study_area: str, prefix: str,
              run_id: str | None = None) -> EmbeddingTable:
    """``[location embedding, retrieved combination]`` at the centres of ``cells``; a cell's own record is excluded."""
    lat, lon = h3ops.cell_centroids(cells)
    own = own_positions(bank.ids, h3ops.cells_to_str(cells)) if bank.kind == "cells" else None
    emb, combined, _ = rag_features(service, lat, lon, k, own)
    return cell_table(None, cells, study_area, prefix, run_id, {"k": k, "bank": bank.source, "bank_records": bank.n},
                      values=np.concatenate([emb, combined], axis=1))


def rag_vs_knn(service, data: LocatedEmbeddings, queries: np.ndarray, k: int, mean: np.ndarray, std: np.ndarray) -> dict:
    """Predict the stored embedding of each query record from the others: RAG vs the k nearest by distance.

    Returns ``{"rag_cos", "geo_knn_cos", "queries"}``: mean cosines to the truth (standardised with ``mean``/``std``).
    """
    queries = np.asarray(queries, dtype=np.int64)
    _, combined, _ = rag_features(service, data.lat[queries], data.lon[queries], k, own=queries)
    near = geo_knn(data.lat, data.lon, data.lat[queries], data.lon[queries], k, queries)
    knn = data.x[near].mean(axis=1)
    truth = data.x[queries]
    return {"rag_cos": prediction_cosines(combined, truth, mean, std),
            "geo_knn_cos": prediction_cosines(knn, truth, mean, std), "queries": float(len(queries))}


def grid(bounds: tuple[float, float, float, float], size: int) -> tuple[np.ndarray, np.ndarray]:
    """``size`` x ``size`` points over ``(lat_min, lat_max, lon_min, lon_max)``: lat (rows, north first), lon (columns)."""
    if not 8 <= int(size) <= 2000:
        raise UrbanReprError(f"map_size must be between 8 and 2000 points per side, got {size}")
    lat_min, lat_max, lon_min, lon_max = bounds
    lats = np.linspace(lat_max, lat_min, int(size))
    lons = np.linspace(lon_min, lon_max, int(size))
    return np.repeat(lats, len(lons)), np.tile(lons, len(lats))


def pca_rgb(embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First three principal components of ``embedding`` (N, D) scaled to [0, 1] (2nd-98th percentile).

    Returns the (N, 3) colours and the three components' shares of the variance.
    """
    x = np.asarray(embedding, dtype=np.float64)
    x = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    comps = x @ vt[:3].T
    if comps.shape[1] < 3:
        comps = np.pad(comps, ((0, 0), (0, 3 - comps.shape[1])))
    lo, hi = np.percentile(comps, 2, axis=0), np.percentile(comps, 98, axis=0)
    rgb = np.clip((comps - lo) / np.where(hi > lo, hi - lo, 1.0), 0, 1)
    share = (s[:3] ** 2) / max(float((s ** 2).sum()), 1e-12)
    return rgb, share
