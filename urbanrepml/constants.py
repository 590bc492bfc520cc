"""Names used across the project: the cell index, tag keys, experiment and registered-model names.

One place builds every name, so the tracking store, the registry and the docs agree:

- ``REGION_ID``: the index of every per-cell table (SRAI's convention).
- ``tag(key)``: MLflow tag keys, ``urbanrepml.<key>``.
- ``experiment_name(study_area)``: ``urbanrepml-<study_area>``.
- ``registered_model_name(scope, family=None)``: ``urbanrepml-<area>`` for fused
  embeddings, ``urbanrepml-<family>-<scope>`` for every other model family.
- ``image_scope(dataset)`` / ``image_experiment_name(dataset)``: image-dataset stages run in
  scope ``images-<dataset>``, experiment ``urbanrepml-images-<dataset>``.
"""

from __future__ import annotations

REGION_ID = "region_id"
PROJECT = "urbanrepml"
TAG_PREFIX = f"{PROJECT}."

# Registry aliases.
CANDIDATE = "candidate"
CHAMPION = "champion"

# The modality name and column prefix of fused embedding tables.
FUSED = "fused"

# Tag keys written on runs (``tag(STAGE)`` -> ``urbanrepml.stage``).
STAGE = "stage"
STUDY_AREA = "study_area"
MODALITY = "modality"
MODEL = "model"
RESOLUTION = "resolution"
TABLE = "table"
COMPLETED = "completed"
# sha256 over the digests of the source files a modality table was built from (tables are looked up by it)
SOURCES_DIGEST = "sources_digest"


def tag(key: str) -> str:
    """MLflow tag key of ``key``: ``urbanrepml.<key>``."""
    return TAG_PREFIX + key


def experiment_name(study_area: str) -> str:
    """Experiment that direct runs on ``study_area`` go to: ``urbanrepml-<study_area>``."""
    return f"{PROJECT}-{study_area}"


def registered_model_name(scope: str, family: str | None = None) -> str:
    """Registered-model name: ``urbanrepml-<scope>`` for fused embeddings, else ``urbanrepml-<family>-<scope>``."""
    return f"{PROJECT}-{scope}" if family is None else f"{PROJECT}-{family}-{scope}"


# Image datasets (stages ``images`` and ``embed_images``): tag keys and names.
DATASET = "dataset"
ENCODER = "encoder"
SOURCE_KIND = "kind"
WEIGHTS_DIGEST = "weights_digest"
IMAGES = "images"


def image_scope(dataset: str) -> str:
    """Scope of the runs on image dataset ``dataset`` (in place of a study area): ``images-<dataset>``."""
    return f"{IMAGES}-{dataset}"


def image_experiment_name(dataset: str) -> str:
    """Experiment of the runs on image dataset ``dataset``: ``urbanrepml-images-<dataset>``."""
    return experiment_name(image_scope(dataset))
