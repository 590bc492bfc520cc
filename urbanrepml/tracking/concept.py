"""Concept-geolocation model families: one per stage, so a stage can refuse another stage's model.

- ``conceptgeo0`` (stage 0) and ``conceptgeo1`` (stage 1): logged on their runs as ``model``; a next stage
  reads them by ``runs:/<run id>/model`` (or a bare run id) or a registry URI and checks the family first
  (:func:`urbanrepml.tracking.family.require_family`).
- ``conceptgeo`` (stage 2): registered as ``urbanrepml-conceptgeo-<dataset>``; promotion by
  ``test_median_km`` (lower is better) on the same split (``urbanrepml.conceptgeo.split_digest``).
"""

from __future__ import annotations

from urbanrepml.tracking.family import ModelFamily

STAGE_FAMILIES = {
    0: ModelFamily("conceptgeo0", "val_loss", False, "Concept geolocation stage 0 (image-GPS-concept alignment) of {scope}",
                   "python -m urbanrepml concept_stage0 --dataset {scope}"),
    1: ModelFamily("conceptgeo1", "val_meta_top1", True, "Concept geolocation stage 1 (concept bottleneck) of {scope}",
                   "python -m urbanrepml concept_stage1 --dataset {scope}"),
    2: ModelFamily("conceptgeo", "test_median_km", False, "Concept-aware geolocation of {scope}",
                   "python -m urbanrepml concept_pipeline --dataset {scope}"),
}


def model_uri_of(value: str) -> str:
    """A model URI from a URI or a bare run id (``<id>`` -> ``runs:/<id>/model``)."""
    value = str(value).strip()
    return value if ":/" in value else f"runs:/{value}/model"
