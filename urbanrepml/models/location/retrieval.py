"""Retrieval-augmented location embeddings: a bank of stored embeddings with coordinates, queried by location.

:class:`LocationService` is what a trained encoder serves (it is TorchScript-able, so the pyfunc
model loads it with torch alone):

- ``forward(latlon)``: the location embedding, (N, 2) lat/lon degrees -> (N, D);
- ``retrieve(latlon, k, exclude)``: additionally the bank's top-``k`` records by cosine between
  the query's location embedding and the bank's projected embeddings (``keys``, computed once
  with the trained projection), and the retrieved raw embeddings combined into one vector, a
  similarity-weighted mean with weights ``softmax(logit_scale * cosine)`` (the trained
  temperature). A query's own record is never retrieved: ``exclude`` names it by position
  (``-1`` for none), and any bank record at exactly the query's coordinates counts as its own.

The RAG feature of a location is ``[location embedding, combined vector]`` (concatenated).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from urbanrepml.errors import UrbanReprError

SAME_PLACE_DEGREES = 1e-9
_CELLS_PER_CHUNK = 1 << 22
CANDIDATE_SLACK = 8


class LocationService(nn.Module):
    """A location encoder and (optionally) a bank to retrieve from.

    Args:
        encoder: the location encoder, (N, 2) lat/lon degrees -> (N, D).
        keys: (M, D) L2-normalised projections of the bank's embeddings (``None``: no bank).
        values: (M, V) the bank's raw embeddings.
        latlon: (M, 2) the bank's coordinates, degrees (lat, lon).
        logit_scale: 1 / temperature of the trained model (weights of the combination).

    Shapes:
        ``forward(latlon)``: (N, 2) -> (N, D).
        ``retrieve(latlon, k, exclude)``: (N, 2), int, (N,) int64 -> embedding (N, D),
        combined (N, V), indices (N, k) int64, cosines (N, k).
    """

    def __init__(self, encoder: nn.Module, keys: Tensor | None = None, values: Tensor | None = None,
                 latlon: Tensor | None = None, logit_scale: float = 1.0):
        super().__init__()
        self.encoder = encoder
        self.out_dim = int(encoder.out_dim)
        if keys is None:
            keys, values, latlon = torch.zeros(0, self.out_dim), torch.zeros(0, 1), torch.zeros(0, 2, dtype=torch.float64)
        if values is None or latlon is None or not (len(keys) == len(values) == len(latlon)):
            raise UrbanReprError("a bank needs keys, values and coordinates with one row per record")
        self.register_buffer("keys", F.normalize(keys.float(), dim=1))
        self.register_buffer("values", values.float())
        self.register_buffer("bank_latlon", latlon.to(torch.float64))
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))
        self.same_place_degrees = SAME_PLACE_DEGREES
        self.cells_per_chunk = _CELLS_PER_CHUNK
        self.candidate_slack = CANDIDATE_SLACK

    @torch.jit.export
    def bank_size(self) -> int:
        return int(self.keys.shape[0])

    def forward(self, latlon: Tensor) -> Tensor:
        return self.encoder(latlon)

    def _excluded(self, candidates: Tensor, latlon: Tensor, exclude: Tensor) -> Tensor:
        """(c, w) bool: candidate is the query's own record (by position) or lies at exactly the query's place."""
        where = self.bank_latlon[candidates]  # (c, w, 2)
        same = ((where[:, :, 0] - latlon[:, 0:1]).abs() <= self.same_place_degrees) & \
               ((where[:, :, 1] - latlon[:, 1:2]).abs() <= self.same_place_degrees)
        return same | (candidates == exclude[:, None])

    @torch.jit.export
    def retrieve(self, latlon: Tensor, k: int, exclude: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        m = int(self.keys.shape[0])
        if m < 2:
            raise ValueError("the bank needs at least 2 records to retrieve from")
        if k < 1 or k >= m:
            raise ValueError("k must be between 1 and the bank size - 1")
        emb = self.encoder(latlon)
        q = F.normalize(emb, dim=1)
        ll = latlon.to(torch.float64)
        n = int(latlon.shape[0])
        chunk = max(1, self.cells_per_chunk // m)
        positions = torch.arange(m, device=latlon.device)
        combined, indices, cosines = [], [], []
        wide = min(m, k + self.candidate_slack)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            sims = q[start:stop] @ self.keys.T
            # The k best among a few more candidates, the query's own record(s) masked there; rows where
            # masking leaves fewer than k (many records at the query's place) are masked over the whole bank.
            cand_s, cand_i = sims.topk(wide, dim=1)
            out = self._excluded(cand_i, ll[start:stop], exclude[start:stop])
            short = (~out).sum(dim=1) < k
            if bool(short.any()):
                rows = short.nonzero().squeeze(1)
                full = self._excluded(positions[None, :].expand(int(rows.shape[0]), m), ll[start:stop][rows],
                                      exclude[start:stop][rows])
                row_s, row_i = sims[rows].masked_fill(full, float("-inf")).topk(wide, dim=1)
                cand_s[rows], cand_i[rows] = row_s, row_i
                out[rows] = row_s == float("-inf")
            top, pick = cand_s.masked_fill(out, float("-inf")).topk(k, dim=1)
            idx = cand_i.gather(1, pick)
            weights = torch.softmax(self.logit_scale * top, dim=1)
            weights = torch.nan_to_num(weights, nan=0.0)
            combined.append((weights[:, :, None] * self.values[idx]).sum(dim=1))
            indices.append(idx)
            cosines.append(top)
        if n == 0:
            v = int(self.values.shape[1])
            return emb, emb.new_zeros((0, v)), torch.zeros((0, k), dtype=torch.long), emb.new_zeros((0, k))
        return emb, torch.cat(combined), torch.cat(indices), torch.cat(cosines)


def service_from_model(model: nn.Module, values: Tensor | None = None, latlon: Tensor | None = None) -> LocationService:
    """A :class:`LocationService` of a trained :class:`~urbanrepml.models.location.contrastive.ContrastiveLocationModel`.

    With ``values`` (M, in_dim) and ``latlon`` (M, 2) the bank's keys are the model's projections of ``values``.
    """
    model = model.eval()
    with torch.no_grad():
        keys = None if values is None else model.project(values.float())
        scale = float(model.scale())
    return LocationService(model.encoder, keys, values, latlon, scale)
