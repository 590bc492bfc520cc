"""Stages: one module per entry point, the only place that joins the library with tracking.

Each stage module defines ``STAGES``, a mapping of entry-point name to :class:`~urbanrepml.stages.base.Stage`
(a ``Params`` dataclass built with :func:`urbanrepml.params.param`, and ``run(params)``). The six
modality entry points share :mod:`urbanrepml.stages.modality`, whose parameters are each
modality's own ``Params`` plus ``study_area`` and ``resolution``.

``entrypoints/<name>.py``, ``python -m urbanrepml <name>`` and MLproject are built from the same
``Params``; :func:`get_stage` finds a stage by name without importing the others.
"""

from __future__ import annotations

import importlib

from urbanrepml.errors import UrbanReprError
from urbanrepml.stages.base import Stage

# entry point -> module that defines it (imported on demand: the CLI starts fast)
ENTRY_POINTS: dict[str, str] = {
    "area": "urbanrepml.stages.area",
    "poi": "urbanrepml.stages.modality",
    "roads": "urbanrepml.stages.modality",
    "gtfs": "urbanrepml.stages.modality",
    "raster": "urbanrepml.stages.modality",
    "alphaearth": "urbanrepml.stages.modality",
    "aerial": "urbanrepml.stages.modality",
    "fuse": "urbanrepml.stages.fuse",
    "probe": "urbanrepml.stages.probe",
    "cluster": "urbanrepml.stages.cluster",
    "tune": "urbanrepml.stages.tune",
    "promote": "urbanrepml.stages.promote",
    "pipeline": "urbanrepml.stages.pipeline",
    "datasets": "urbanrepml.stages.datasets",
    "images": "urbanrepml.stages.images",
    "embed_images": "urbanrepml.stages.embed_images",
    "location": "urbanrepml.stages.modality",
    "locenc": "urbanrepml.stages.locenc",
    "locenc_embed": "urbanrepml.stages.locenc_embed",
    "geolocate": "urbanrepml.stages.geolocate",
    "geolocate_eval": "urbanrepml.stages.geolocate_eval",
    # concept-aware geolocation
    "concepts": "urbanrepml.stages.concepts",
    "concept_stage0": "urbanrepml.stages.concept",
    "concept_stage1": "urbanrepml.stages.concept",
    "concept_stage2": "urbanrepml.stages.concept",
    "concept_pipeline": "urbanrepml.stages.concept",
    # place and building embeddings
    "difficulty": "urbanrepml.stages.difficulty",
    "placeemb": "urbanrepml.stages.placeemb",
}


def get_stage(name: str) -> Stage:
    """The stage behind entry point ``name`` (one clear error for an unknown name)."""
    if name not in ENTRY_POINTS:
        raise UrbanReprError(f"unknown stage {name!r}; choose one of {', '.join(ENTRY_POINTS)}")
    return importlib.import_module(ENTRY_POINTS[name]).STAGES[name]


__all__ = ["ENTRY_POINTS", "Stage", "get_stage"]
