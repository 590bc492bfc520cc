"""Embedding tables: the one reader/writer/validator every stage uses.

Contract (DESIGN.md): parquet, index ``region_id`` (H3 strings, one resolution),
float32 columns ``<prefix>_<i>``, finite values, no duplicate cells, and schema
metadata (key ``urbanrepml``) with modality, resolution, study area, producer run
id, input digests and the human-readable feature names.

Writes are atomic (temporary file + rename), so a failed run never leaves a
partial table behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from urbanrepml.cells import cell_resolution, parse_cells
from urbanrepml.constants import REGION_ID
from urbanrepml.errors import UrbanReprError

META_KEY = b"urbanrepml"
FORMAT_VERSION = 1


@dataclass
class TableMeta:
    modality: str
    resolution: int
    study_area: str
    prefix: str
    producer_run_id: str | None = None
    input_digests: dict[str, str] = field(default_factory=dict)
    feature_names: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


@dataclass
class EmbeddingTable:
    """A validated table: ``frame`` (index ``region_id``, float32 columns) and its metadata."""

    frame: pd.DataFrame
    meta: TableMeta
    path: Path | None = None


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def combined_digest(digests: Mapping[str, str]) -> str:
    """One SHA-256 over named digests (e.g. a modality's source files), independent of their order."""
    h = hashlib.sha256()
    for name in sorted(digests):
        h.update(f"{name}={digests[name]}\n".encode())
    return h.hexdigest()


def to_embedding_frame(
    values: np.ndarray | pd.DataFrame, region_ids: Sequence[str] | pd.Index, prefix: str
) -> tuple[pd.DataFrame, list[str]]:
    """Numbers + cell ids -> a contract frame with columns ``<prefix>_<i>``; returns it and the original names."""
    if isinstance(values, pd.DataFrame):
        names = [str(c) for c in values.columns]
        values = values.to_numpy()
    else:
        names = [f"{prefix}_{i}" for i in range(np.asarray(values).shape[1])]
    arr = np.asarray(values, dtype=np.float32)
    frame = pd.DataFrame(arr, index=pd.Index(np.asarray(region_ids, dtype=object), name=REGION_ID),
                         columns=[f"{prefix}_{i}" for i in range(arr.shape[1])])
    return frame, names


def validate_frame(
    frame: pd.DataFrame,
    meta: TableMeta,
    *,
    where: str,
    area_cells: np.ndarray | None = None,
) -> None:
    """Check a frame against the contract; raise :class:`UrbanReprError` naming ``where`` and the problem."""
    if frame.index.name != REGION_ID:
        raise UrbanReprError(f"{where}: index must be named '{REGION_ID}', got {frame.index.name!r}")
    if len(frame) == 0:
        raise UrbanReprError(f"{where}: table has no rows")
    if frame.index.has_duplicates:
        dup = list(frame.index[frame.index.duplicated()][:3])
        raise UrbanReprError(f"{where}: duplicate cells in '{REGION_ID}', e.g. {dup}")
    cells = parse_cells(frame.index, what=f"{where} '{REGION_ID}'")
    res = np.unique(cell_resolution(cells))
    if len(res) > 1:
        raise UrbanReprError(f"{where}: mixed H3 resolutions {res.tolist()} in one table")
    if int(res[0]) != meta.resolution:
        raise UrbanReprError(f"{where}: cells are at resolution {int(res[0])} but metadata says {meta.resolution}")
    pattern = re.compile(rf"^{re.escape(meta.prefix)}_\d+$")
    bad_cols = [c for c in frame.columns if not pattern.match(str(c))]
    if bad_cols or frame.shape[1] == 0:
        raise UrbanReprError(f"{where}: columns must be named '{meta.prefix}_<i>', found {bad_cols[:3] or 'none'}")
    bad_dtype = [c for c in frame.columns if frame[c].dtype != np.float32]
    if bad_dtype:
        raise UrbanReprError(f"{where}: columns must be float32, {bad_dtype[:3]} are {frame[bad_dtype[0]].dtype}")
    values = frame.to_numpy()
    if not np.isfinite(values).all():
        rows = frame.index[~np.isfinite(values).all(axis=1)]
        raise UrbanReprError(f"{where}: NaN or inf in {len(rows)} row(s), e.g. cells {list(rows[:3])}")
    if area_cells is not None:
        outside = ~np.isin(cells, area_cells)
        if outside.any():
            raise UrbanReprError(
                f"{where}: {int(outside.sum())} cell(s) lie outside study area {meta.study_area!r}, "
                f"e.g. {list(frame.index[outside][:3])}"
            )


def _umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_table(table: EmbeddingTable, path: str | Path, *, area_cells: np.ndarray | None = None) -> Path:
    """Validate and write atomically. Returns the path."""
    path = Path(path)
    validate_frame(table.frame, table.meta, where=str(path), area_cells=area_cells)
    schema_meta = {META_KEY: json.dumps(table.meta.__dict__, sort_keys=True).encode()}
    arrow = pa.Table.from_pandas(table.frame, preserve_index=True)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **schema_meta})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(arrow, tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a published table reads like any other file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    table.path = path
    return path


@contextlib.contextmanager
def publish_on_success(table: EmbeddingTable, path: str | Path, *, area_cells: np.ndarray | None = None) -> Iterator[EmbeddingTable]:
    """Write ``table`` to a staging file beside ``path`` and yield it; move it to ``path`` only if the body succeeds.

    A run that fails after writing (logging, registration) leaves the previous
    table at ``path`` untouched and no partial file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=path.parent) as tmp:
        write_table(table, Path(tmp) / path.name, area_cells=area_cells)
        yield table
        os.replace(table.path, path)
        table.path = path


def read_table(
    path: str | Path,
    *,
    resolution: int | None = None,
    study_area: str | None = None,
    area_cells: np.ndarray | None = None,
) -> EmbeddingTable:
    """Read and validate a table; optional expectations on resolution, study area and cell set."""
    path = Path(path)
    if path.is_dir():
        raise UrbanReprError(f"embedding table {path} is a folder; name the .parquet file in it")
    if not path.is_file():
        raise UrbanReprError(f"embedding table {path} does not exist")
    try:
        arrow = pq.read_table(path)
    except Exception as exc:
        raise UrbanReprError(f"{path}: not a readable parquet file ({exc})") from None
    raw_meta = (arrow.schema.metadata or {}).get(META_KEY)
    if raw_meta is None:
        raise UrbanReprError(f"{path}: no '{META_KEY.decode()}' metadata; write tables with urbanrepml.tables.write_table")
    try:
        meta = TableMeta(**json.loads(raw_meta))
    except (TypeError, ValueError) as exc:
        raise UrbanReprError(f"{path}: unreadable table metadata ({exc})") from None
    frame = arrow.to_pandas()
    if REGION_ID in frame.columns and frame.index.name != REGION_ID:
        frame = frame.set_index(REGION_ID)
    validate_frame(frame, meta, where=str(path), area_cells=area_cells)
    if resolution is not None and meta.resolution != resolution:
        raise UrbanReprError(f"{path}: table is at resolution {meta.resolution}, expected {resolution}")
    if study_area is not None and meta.study_area != study_area:
        raise UrbanReprError(f"{path}: table belongs to study area {meta.study_area!r}, expected {study_area!r}")
    return EmbeddingTable(frame=frame, meta=meta, path=path)
