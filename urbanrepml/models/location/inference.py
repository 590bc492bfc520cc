"""Evaluating an encoder on coordinate arrays: numpy (lat, lon) in, numpy embeddings out, in batches, no gradients."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def encode(encoder: nn.Module, lat: np.ndarray, lon: np.ndarray, batch: int = 8192) -> np.ndarray:
    """Location embeddings (N, D) float32 of the points ``lat``, ``lon`` (degrees, in that order)."""
    encoder = encoder.eval()
    latlon = torch.from_numpy(np.column_stack([np.asarray(lat, np.float64), np.asarray(lon, np.float64)]))
    outs = [encoder(latlon[i:i + batch]).float().cpu() for i in range(0, len(latlon), batch)]
    return torch.cat(outs).numpy() if outs else np.zeros((0, int(encoder.out_dim)), np.float32)
