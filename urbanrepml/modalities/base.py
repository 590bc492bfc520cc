"""The one interface every stage-1 modality implements (SRAI's Embedder shape, adapted to files).

A modality reads the source files a study area names and returns per-cell
features at one resolution. It knows nothing of MLflow: :func:`run_modality_stage`
in :mod:`urbanrepml.modalities.stage` does the tracking, writing and validation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from urbanrepml.areas import Area
from urbanrepml.config import StudyArea


@dataclass
class ModalityResult:
    """What a modality computed.

    ``features``: index ``region_id`` (only cells with data), numeric columns with
    human-readable names (e.g. ``amenity_school``); the stage renames them to
    ``<prefix>_<i>`` and keeps the names in the table metadata.
    ``metrics``: extra numbers worth logging (e.g. ``stops_total``).
    ``params``: effective parameters resolved at run time (e.g. the chosen service date).
    ``notes``: human sentences for the run description (e.g. "built-in random CNN").
    """

    features: pd.DataFrame
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Modality(ABC):
    """Source files of a study area -> per-cell features at one resolution."""

    #: modality name, used as the table's modality, the run tag and the column prefix
    name: str = ""

    @abstractmethod
    def source_files(self, spec: StudyArea) -> dict[str, Path]:
        """Files this modality reads for ``spec`` (name -> path), digested and logged as inputs.

        Raise :class:`~urbanrepml.errors.UrbanReprError` if the area names none.
        """

    @abstractmethod
    def compute(self, spec: StudyArea, area: Area, resolution: int) -> ModalityResult:
        """Per-cell features for the cells of ``area`` at ``resolution``.

        Must raise :class:`~urbanrepml.errors.UrbanReprError` on bad input (corrupt
        file, no overlap, missing CRS...), with one line naming file and problem.
        """

    def params(self) -> dict[str, object]:
        """Parameters to log (constructor arguments)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}
