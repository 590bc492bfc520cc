"""Index a gallery of place embeddings and answer top-k queries (cosine similarity, numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from urbanrepml.errors import UrbanReprError


class Gallery:
    """Embeddings of known views with their ids (and identities), searched by cosine similarity.

    Args:
        embeddings: ``(N, D)`` finite vectors (normalised here).
        ids: the N view ids.
        identities: the N identities (optional; returned with the hits).
    """

    def __init__(self, embeddings: np.ndarray, ids: Sequence[str], identities: Sequence[str] | None = None):
        e = np.asarray(embeddings, dtype=np.float32)
        if e.ndim != 2 or len(e) != len(ids):
            raise UrbanReprError(f"gallery: {len(ids)} ids for embeddings of shape {e.shape}")
        if not np.isfinite(e).all():
            raise UrbanReprError("gallery: embeddings hold NaN or inf")
        self.embeddings = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        self.ids = np.asarray(ids, dtype=object)
        self.identities = np.asarray(identities, dtype=object) if identities is not None else None

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (Q, k), scores (Q, k))`` of the k most similar gallery views, best first."""
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if not 1 <= k <= len(self):
            raise UrbanReprError(f"gallery of {len(self)} view(s) cannot answer top-{k} queries; use k <= {len(self)}")
        if q.shape[1] != self.embeddings.shape[1]:
            raise UrbanReprError(f"queries have {q.shape[1]} dims, the gallery {self.embeddings.shape[1]}")
        if not np.isfinite(q).all():
            raise UrbanReprError("queries hold NaN or inf")
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        sim = q @ self.embeddings.T
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < len(self) else np.tile(np.arange(len(self)), (len(q), 1))
        part = np.take_along_axis(sim, top, axis=1)
        order = np.argsort(-part, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        return self.ids[top], np.take_along_axis(part, order, axis=1)
