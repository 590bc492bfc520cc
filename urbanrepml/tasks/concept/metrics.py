"""Metrics of concept geolocation: concept top-k and macro recall, geocell accuracy, errors in km."""

from __future__ import annotations

import numpy as np

from urbanrepml.geodesy import error_summary, from_unit, haversine_km


def topk(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean()) if len(labels) else float("nan")


def macro_recall(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    rec = [float((pred[labels == c] == c).mean()) for c in range(n_classes) if (labels == c).any()]
    return float(np.mean(rec)) if rec else float("nan")


def concept_metrics(meta_logits, parent_logits, meta, parent, prefix: str) -> dict[str, float]:
    """``<prefix>meta_top1/top5/macro_recall`` and the same for ``parent``."""
    out = {}
    for name, logits, labels in (("meta", meta_logits, meta), ("parent", parent_logits, parent)):
        out[f"{prefix}{name}_top1"] = topk(logits, labels, 1)
        out[f"{prefix}{name}_top5"] = topk(logits, labels, 5)
        out[f"{prefix}{name}_macro_recall"] = macro_recall(logits.argmax(axis=1), labels, logits.shape[1])
    return out


def predicted_points(cell_logits: np.ndarray, offsets: np.ndarray, centres: np.ndarray, offset_scale: float):
    """(lat, lon) of centre(argmax cell) + offset * scale, back on the sphere."""
    cell = cell_logits.argmax(axis=1)
    return from_unit(centres[cell] + offsets * offset_scale)


def geo_metrics(cell_logits, offsets, centres, offset_scale, cells, lat, lon, thresholds, prefix: str) -> dict[str, float]:
    """``<prefix>cell_top1``, ``<prefix>cell_top5`` and the km summary (median, p90, ``acc_<t>km``)."""
    plat, plon = predicted_points(cell_logits, offsets, centres, offset_scale)
    err = haversine_km(plat, plon, lat, lon)
    out = {f"{prefix}cell_top1": topk(cell_logits, cells, 1), f"{prefix}cell_top5": topk(cell_logits, cells, 5)}
    out.update({f"{prefix}{k}": v for k, v in error_summary(err, thresholds).items()})
    return out
