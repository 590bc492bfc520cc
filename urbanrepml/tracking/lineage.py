"""Source files and tables as MLflow datasets, so the UI shows what each run read (by digest).

Datasets are shared by the runs of an experiment (unique by name and digest): two processes logging
the same file at once can race to create it, and the loser's ``UNIQUE constraint`` error is retried,
which then finds the dataset the winner created (:func:`log_dataset`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import mlflow
from mlflow.data.filesystem_dataset_source import FileSystemDatasetSource
from mlflow.data.meta_dataset import MetaDataset

from urbanrepml.tables import file_digest

DIGEST_CHARS = 32  # MLflow stores dataset digests in a 36-character column


class _LocalFileSource(FileSystemDatasetSource):
    """A local file as a dataset source (``file://`` URI)."""

    def __init__(self, uri: str):
        self._uri = uri

    @property
    def uri(self) -> str:
        return self._uri

    @staticmethod
    def _get_source_type() -> str:
        return "local"

    def load(self, dst_path=None) -> str:
        return self._uri

    @staticmethod
    def _can_resolve(raw_source) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source):
        return cls(str(raw_source))

    def to_dict(self) -> dict:
        return {"uri": self._uri}

    @classmethod
    def from_dict(cls, source_dict: dict):
        return cls(source_dict["uri"])


_RETRIES = 5


def _duplicate_dataset(exc: BaseException) -> bool:
    """Whether ``exc`` is the store refusing a dataset another process created a moment earlier."""
    text = str(exc)
    return "UNIQUE constraint failed: datasets" in text or (
        ("duplicate key value" in text or "IntegrityError" in text) and "datasets" in text)


def log_dataset(dataset, context: str) -> None:
    """``mlflow.log_input`` that tolerates an identical dataset created concurrently by another run."""
    for attempt in range(_RETRIES):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except Exception as exc:  # MlflowException wrapping the store's IntegrityError
            if not _duplicate_dataset(exc) or attempt == _RETRIES - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def log_source_files(files: Mapping[str, str | Path], context: str = "source") -> dict[str, str]:
    """Log each file as an input dataset named by its key, digest = SHA-256; return the full digests.

    The full digests are also logged as params ``digest.<name>`` (the dataset
    column holds only the first 32 hex characters).
    """
    digests: dict[str, str] = {}
    for name, path in files.items():
        path = Path(path).resolve()
        digest = file_digest(path)
        digests[name] = digest
        dataset = MetaDataset(source=_LocalFileSource(path.as_uri()), name=name, digest=digest[:DIGEST_CHARS])
        log_dataset(dataset, context)
    mlflow.log_params({f"digest.{k}": v[:16] for k, v in digests.items()})
    return digests


def log_table_input(name: str, path: str | Path, source_uri: str | None = None, context: str = "input") -> str:
    """Log an embedding table read by this run as an input dataset; ``source_uri`` e.g. ``runs:/<id>/tables/x``."""
    path = Path(path)
    digest = file_digest(path)
    source = _LocalFileSource(source_uri or path.resolve().as_uri())
    log_dataset(MetaDataset(source=source, name=name, digest=digest[:DIGEST_CHARS]), context)
    return digest


def log_frame_input(frame, name: str, source_path: str | Path, context: str = "input") -> None:
    """Log a pandas frame (e.g. the cells of an area) as an input dataset with its schema and profile."""
    source = _LocalFileSource(Path(source_path).resolve().as_uri())
    log_dataset(mlflow.data.from_pandas(frame, source=source, name=name), context)
