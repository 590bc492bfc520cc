"""The one interface every stage-1 modality implements (SRAI's Embedder shape, adapted to files).

A modality reads the source files a study area names and returns per-cell
features at one resolution. It knows nothing of MLflow: :func:`run_modality_stage`
in :mod:`urbanrepml.stages.modality` does the tracking, writing and validation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from urbanrepml.areas import Area
from urbanrepml.config import StudyArea
from urbanrepml.errors import UrbanReprError
from urbanrepml.tables import combined_digest, file_digest


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


def sources_digest(files: dict[str, Path]) -> str:
    """The digest a modality table is keyed by: one SHA-256 over its source files' names and SHA-256s."""
    return combined_digest({name: file_digest(path) for name, path in files.items()})


def osm_source(spec: StudyArea) -> dict[str, Path]:
    if spec.sources.osm is None:
        raise UrbanReprError(f"study area {spec.name!r} ({spec.source_file}) names no OSM file; add osm = \"<file>.pbf\" under [sources]")
    return {spec.sources.osm.name: spec.sources.osm}


def quiet_lightning() -> None:
    """Keep Lightning's banner lines and known harmless warnings out of the run output; one torch thread.

    The models are tiny (a few thousand parameters): one thread is fastest and
    avoids oversubscribing a shared machine.
    """
    import logging
    import warnings

    import torch

    torch.set_num_threads(1)
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(pytorch_)?lightning.*")
    warnings.filterwarnings("ignore", message=".*NumPy array is not writable.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
