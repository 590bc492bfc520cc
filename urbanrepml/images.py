"""Image datasets: the one index-table contract, and the per-image embedding table.

**Index table** (parquet; one row per image). The frame is indexed by ``image_id`` (unique,
non-empty strings) and has these columns:

===============  =========================================================================
``path``         the image file, or the raster scene a window is cut from; relative to the
                 index file's folder, or absolute
``window``       ``"col_off,row_off,width,height"`` (pixels) for a raster window, else null
``lat``, ``lon`` EPSG:4326 degrees (float64); the project says lat, lon everywhere
``group``        sequence / capture / scene id: what a split must never cut through
``captured_at``  timestamp (``datetime64``, tz-naive; UTC where the source says so), may be null
``split``        ``train`` / ``val`` / ``test`` or null (not assigned)
===============  =========================================================================

Optional text columns: ``identity`` (the same place or object seen in several images),
``meta_concept``, ``parent_concept``, ``country``. Schema metadata (key ``urbanrepml.images``):
dataset name, source kind, producer run id, and free ``extra`` settings.

:func:`validate_index` checks all of it (unique ids, coordinates in range with a hint when
they look swapped, files present, known splits, no split cutting through a group);
:func:`write_index` validates and writes atomically, :func:`read_index` reads and validates.

**Image embedding table** (parquet): index ``image_id``, float32 columns ``dim_0..dim_<D-1>``,
finite values, schema metadata (dataset, encoder, weights digest, index digest, producer run
id). :func:`write_point_csv` writes the same vectors as ``dim_*`` columns plus a WKT ``POINT
(lon lat)`` ``geometry`` column, the CSV layout a Regional-SatCLIP style location encoder reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from urbanrepml.errors import UrbanReprError

IMAGE_ID = "image_id"
REQUIRED_COLUMNS = ("path", "window", "lat", "lon", "group", "captured_at", "split")
OPTIONAL_COLUMNS = ("identity", "meta_concept", "parent_concept", "country")
TEXT_COLUMNS = ("path", "window", "group", "split", *OPTIONAL_COLUMNS)
SPLITS = ("train", "val", "test")
SOURCE_KINDS = ("chips", "photos", "mapillary", "satclip", "concepts", "buildings")
INDEX_META_KEY = b"urbanrepml.images"
EMBEDDING_META_KEY = b"urbanrepml.image_embeddings"
EMBEDDING_PREFIX = "dim"
FORMAT_VERSION = 1

_UMASK = os.umask(0o022)  # read once, at import: os.umask can only be read by setting it
os.umask(_UMASK)
_WINDOW = re.compile(r"^\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*$")


@dataclass
class IndexMeta:
    """What an index table says about itself (stored in the parquet schema metadata)."""

    dataset: str
    source_kind: str
    producer_run_id: str | None = None
    extra: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


@dataclass
class ImageIndex:
    """A validated index: ``frame`` (index ``image_id``), its metadata and the folder relative paths start from."""

    frame: pd.DataFrame
    meta: IndexMeta
    root: Path | None = None
    path: Path | None = None

    def image_paths(self) -> np.ndarray:
        """Absolute path of every row's file, in row order (object array of str)."""
        return resolve_paths(self.frame["path"], self.root)

    def windows(self) -> list[tuple[int, int, int, int] | None]:
        """Every row's raster window ``(col_off, row_off, width, height)``, or None for a whole file."""
        return [None if _missing(w) else parse_window(w, where="window") for w in self.frame["window"]]


@dataclass
class EmbeddingMeta:
    """What an image embedding table says about itself."""

    dataset: str
    encoder: str
    weights_digest: str
    index_digest: str = ""
    producer_run_id: str | None = None
    extra: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


@dataclass
class ImageEmbeddings:
    """A validated image embedding table: ``frame`` (index ``image_id``, float32 ``dim_<i>``) and metadata."""

    frame: pd.DataFrame
    meta: EmbeddingMeta
    path: Path | None = None


# ------------------------------------------------------------------ building frames


def parse_window(text: str, *, where: str) -> tuple[int, int, int, int]:
    """``"col_off,row_off,width,height"`` -> four ints (width and height positive)."""
    m = _WINDOW.match(str(text))
    if not m or int(m.group(3)) <= 0 or int(m.group(4)) <= 0:
        raise UrbanReprError(f"{where}: window {text!r} is not 'col_off,row_off,width,height' "
                             "(non-negative integers, positive width and height)")
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4))


def format_windows(col_off: np.ndarray, row_off: np.ndarray, width: np.ndarray | int, height: np.ndarray | int) -> np.ndarray:
    """Vectorised windows -> an object array of ``"col_off,row_off,width,height"`` strings."""
    cols = np.broadcast_arrays(np.asarray(col_off), np.asarray(row_off), np.asarray(width), np.asarray(height))
    return np.array([f"{a},{b},{c},{d}" for a, b, c, d in zip(*(c.astype(np.int64).tolist() for c in cols), strict=False)], dtype=object)


def index_frame(
    image_id: Sequence[str],
    path: Sequence[str],
    lat: Sequence[float],
    lon: Sequence[float],
    group: Sequence[str],
    *,
    window: Sequence[str | None] | None = None,
    captured_at: Sequence | None = None,
    split: Sequence[str | None] | None = None,
    **optional: Sequence[str | None] | None,
) -> pd.DataFrame:
    """Columns -> a frame in contract layout and dtypes (not validated; :func:`validate_index` does that).

    ``optional`` takes ``identity``, ``meta_concept``, ``parent_concept`` and ``country``; a None
    value leaves the column out.
    """
    unknown = set(optional) - set(OPTIONAL_COLUMNS)
    if unknown:
        raise ValueError(f"unknown optional column(s): {sorted(unknown)}")
    n = len(image_id)
    index = pd.Index(_text(image_id), name=IMAGE_ID)
    none = [None] * n
    frame = pd.DataFrame(
        {
            "path": text_column(path, index),
            "window": text_column(window if window is not None else none, index),
            "lat": np.asarray(lat, dtype=np.float64),
            "lon": np.asarray(lon, dtype=np.float64),
            "group": text_column(group, index),
            "captured_at": to_timestamps(captured_at if captured_at is not None else none, where="captured_at").to_numpy(),
            "split": text_column(split if split is not None else none, index),
        },
        index=index,
    )
    for name in OPTIONAL_COLUMNS:
        if optional.get(name) is not None:
            frame[name] = text_column(optional[name], index)
    return frame


def text_column(values, index: pd.Index) -> pd.Series:
    """Values -> an ``object`` Series of str with None for missing.

    These are the contract's text columns, whatever string dtype pandas would infer.
    """
    return pd.Series(_text(list(values)), index=index, dtype=object)


def to_timestamps(values: Sequence, *, where: str) -> pd.Series:
    """Dates/times (strings, datetimes, None) -> tz-naive ``datetime64[ns]`` (aware values converted to UTC)."""
    series = pd.Series(list(values) if not isinstance(values, pd.Series) else values.to_numpy(), dtype=object)
    try:
        parsed = pd.to_datetime(series, utc=True, errors="raise", format="mixed")
    except (ValueError, TypeError, OverflowError) as exc:
        bad = _first_unparsable(series)
        raise UrbanReprError(f"{where}: {bad!r} is not a date or time ({exc}); use ISO 8601, e.g. 2019-08-15T10:30:00") from None
    return pd.Series(parsed.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]"))


def _first_unparsable(series: pd.Series):
    for v in series:
        try:
            pd.to_datetime(v, utc=True)
        except (ValueError, TypeError, OverflowError):
            return v
    return None


def _missing(v) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and np.isnan(v))


def _text(values) -> np.ndarray:
    """Values -> object array of str, None for missing."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = None if _missing(v) else str(v)
    return out


def resolve_paths(paths: Sequence[str], root: Path | None) -> np.ndarray:
    """Relative paths joined to ``root`` (absolute ones kept) -> object array of absolute path strings."""
    base = Path(root) if root is not None else Path.cwd()
    cache: dict[str, str] = {}
    out = np.empty(len(paths), dtype=object)
    for i, p in enumerate(paths):
        r = cache.get(p)
        if r is None:
            q = Path(p)
            r = cache[p] = str(q if q.is_absolute() else (base / q))
        out[i] = r
    return out


# ------------------------------------------------------------------ validation


def validate_index(frame: pd.DataFrame, meta: IndexMeta, *, where: str, root: Path | None, check_files: bool = True) -> None:
    """Check an index frame against the contract; raise :class:`UrbanReprError` naming ``where`` and the problem.

    Args:
        frame: Indexed by ``image_id``, with the required columns.
        meta: Its metadata (source kind checked).
        where: The file or dataset named in messages.
        root: Folder relative paths start from (the index file's folder).
        check_files: Check that every referenced file exists.
    """
    if frame.index.name != IMAGE_ID:
        raise UrbanReprError(f"{where}: index must be named '{IMAGE_ID}', got {frame.index.name!r}")
    if len(frame) == 0:
        raise UrbanReprError(f"{where}: the index has no images")
    if meta.source_kind not in SOURCE_KINDS:
        raise UrbanReprError(f"{where}: unknown source kind {meta.source_kind!r}; expected one of {', '.join(SOURCE_KINDS)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise UrbanReprError(f"{where}: missing column(s) {missing}; an index needs {', '.join(REQUIRED_COLUMNS)}")
    extra = [c for c in frame.columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if extra:
        raise UrbanReprError(f"{where}: unknown column(s) {extra[:3]}; allowed: {', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}")
    ids = frame.index
    if ids.isna().any() or any(not isinstance(v, str) or not v for v in ids):
        raise UrbanReprError(f"{where}: every '{IMAGE_ID}' must be a non-empty string")
    if ids.has_duplicates:
        dup = list(dict.fromkeys(ids[ids.duplicated()]))[:3]
        raise UrbanReprError(f"{where}: duplicate image ids, e.g. {dup}; give every image its own id")
    for col in TEXT_COLUMNS:
        if col in frame.columns and any(not _missing(v) and not isinstance(v, str) for v in frame[col]):
            raise UrbanReprError(f"{where}: column '{col}' must hold text or null")
    for col in ("path", "group"):
        empty = frame[col].isna() | (frame[col] == "")
        if empty.any():
            raise UrbanReprError(f"{where}: {int(empty.sum())} image(s) have no '{col}', e.g. {list(ids[empty.to_numpy()][:3])}")
    _check_coordinates(frame, where)
    if not pd.api.types.is_datetime64_any_dtype(frame["captured_at"]):
        raise UrbanReprError(f"{where}: column 'captured_at' must be a timestamp column, got {frame['captured_at'].dtype}")
    windows = frame["window"].dropna()
    for image_id, w in windows.items():
        parse_window(w, where=f"{where}: image {image_id!r}")
    split = frame["split"]
    bad = ~split.isna() & ~split.isin(SPLITS)
    if bad.any():
        raise UrbanReprError(f"{where}: unknown split value(s) {sorted(set(split[bad]))[:3]}; use {', '.join(SPLITS)} or null")
    per_group = split.fillna("<none>").groupby(frame["group"].to_numpy()).nunique()
    cut = per_group[per_group > 1]
    if len(cut):
        g = cut.index[0]
        found = sorted(set(split[frame["group"] == g].fillna("null")))
        raise UrbanReprError(f"{where}: {len(cut)} group(s) are cut across splits, e.g. group {g!r} in {found}; "
                             "assign splits by group (urbanrepml.analysis.splits)")
    if check_files:
        paths = pd.unique(frame["path"])
        absolute = resolve_paths(paths, root)
        absent = [p for p, a in zip(paths, absolute, strict=False) if not os.path.isfile(a)]
        if absent:
            hint = f" (relative paths start from {root})" if root is not None and not Path(absent[0]).is_absolute() else ""
            raise UrbanReprError(f"{where}: {len(absent)} image file(s) are missing, e.g. {absent[0]}{hint}")


def _check_coordinates(frame: pd.DataFrame, where: str) -> None:
    try:
        lat = frame["lat"].to_numpy(dtype=np.float64)
        lon = frame["lon"].to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise UrbanReprError(f"{where}: 'lat' and 'lon' must be numbers") from None
    finite = np.isfinite(lat) & np.isfinite(lon)
    if not finite.all():
        raise UrbanReprError(f"{where}: {int((~finite).sum())} image(s) have no finite lat/lon, e.g. {list(frame.index[~finite][:3])}")
    lat_bad = np.abs(lat) > 90
    lon_bad = np.abs(lon) > 180
    if lat_bad.any() and not (np.abs(lon) > 90).any() and not lon_bad.any():
        raise UrbanReprError(f"{where}: lat and lon look swapped ({int(lat_bad.sum())} lat value(s) beyond ±90, e.g. "
                             f"{lat[lat_bad][0]:g}, while every lon fits in ±90); swap the columns (lat is y, lon is x)")
    if lat_bad.any():
        raise UrbanReprError(f"{where}: {int(lat_bad.sum())} lat value(s) outside [-90, 90], e.g. {lat[lat_bad][0]:g} "
                             f"(image {frame.index[lat_bad][0]!r}); lat/lon must be EPSG:4326 degrees")
    if lon_bad.any():
        raise UrbanReprError(f"{where}: {int(lon_bad.sum())} lon value(s) outside [-180, 180], e.g. {lon[lon_bad][0]:g} "
                             f"(image {frame.index[lon_bad][0]!r}); lat/lon must be EPSG:4326 degrees")


# ------------------------------------------------------------------ reading and writing


def _temp_beside(path: Path) -> str:
    """A new temporary file next to ``path``, with the permissions a plain new file would get (umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)
    return tmp


def _atomic_parquet(arrow: pa.Table, path: Path) -> Path:
    tmp = _temp_beside(path)
    try:
        pq.write_table(arrow, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _with_meta(frame: pd.DataFrame, key: bytes, meta) -> pa.Table:
    arrow = pa.Table.from_pandas(frame, preserve_index=True)
    return arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), key: json.dumps(meta.__dict__, sort_keys=True).encode()})


def portable_frame(index: ImageIndex, dest_folder: Path) -> pd.DataFrame:
    """The frame with paths that still resolve from ``dest_folder``.

    Relative paths are made absolute when the index's root is another folder.
    """
    frame = index.frame
    root = Path(index.root).resolve() if index.root is not None else None
    if root is None or root == Path(dest_folder).resolve():
        return frame
    relative = np.array([not Path(p).is_absolute() for p in frame["path"]])
    if not relative.any():
        return frame
    frame = frame.copy()
    frame.loc[relative, "path"] = resolve_paths(frame["path"][relative].tolist(), root)
    return frame


def write_index(index: ImageIndex, path: str | Path, *, root: str | Path | None = None, check_files: bool = True) -> Path:
    """Validate ``index`` and write it atomically (temporary file, then rename) to ``path``; return the path.

    Args:
        index: The index; relative paths in it start from ``index.root``.
        path: Destination parquet file.
        root: The folder the file will be read from, where relative paths start (default: ``path``'s folder;
            give the final folder when ``path`` is a staging file, see :func:`publish_on_success`).
        check_files: Check that every referenced file exists.
    """
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    frame = portable_frame(index, root)
    validate_index(frame, index.meta, where=str(path), root=root, check_files=check_files)
    _atomic_parquet(_with_meta(frame, INDEX_META_KEY, index.meta), path)
    index.frame, index.root, index.path = frame, root.resolve(), path
    return path


@contextlib.contextmanager
def publish_on_success(*paths: str | Path) -> Iterator[list[Path]]:
    """Staging paths (in a temporary folder beside each of ``paths``) to write to.

    They are moved onto ``paths`` only when the body succeeds, so a failed run leaves the previous files
    untouched and no partial file behind.
    """
    created: list[Path] = []  # folders made here, removed again (when empty) if the body fails
    try:
        with contextlib.ExitStack() as stack:
            staged = []
            for p in map(Path, paths):
                missing_dirs = [d for d in (p.parent, *p.parent.parents) if not d.exists()]
                p.parent.mkdir(parents=True, exist_ok=True)
                created.extend(missing_dirs)
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix=".staging-", dir=p.parent))
                staged.append(Path(tmp) / p.name)
            yield staged
            missing = [s for s in staged if not s.is_file()]
            if missing:
                raise RuntimeError(f"nothing was written to the staging file {missing[0]}")
            for s, p in zip(staged, map(Path, paths), strict=False):
                os.replace(s, p)
    except BaseException:
        for d in created:  # deepest first
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def _read_arrow(path: Path, key: bytes, what: str) -> tuple[pa.Table, dict]:
    if not path.is_file():
        raise UrbanReprError(f"{what} {path} does not exist")
    try:
        arrow = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
        raise UrbanReprError(f"{path}: not a readable parquet file ({exc})") from None
    raw = (arrow.schema.metadata or {}).get(key)
    if raw is None:
        raise UrbanReprError(f"{path}: no '{key.decode()}' metadata; is this an {what}? (write it with urbanrepml.images)")
    try:
        return arrow, json.loads(raw)
    except ValueError as exc:
        raise UrbanReprError(f"{path}: unreadable {what} metadata ({exc})") from None


def read_index(path: str | Path, *, check_files: bool = True) -> ImageIndex:
    """Read and validate an index table; relative paths start from the file's folder."""
    path = Path(path)
    arrow, raw = _read_arrow(path, INDEX_META_KEY, "image index")
    try:
        meta = IndexMeta(**raw)
    except TypeError as exc:
        raise UrbanReprError(f"{path}: unreadable image index metadata ({exc})") from None
    frame = arrow.to_pandas()
    if IMAGE_ID in frame.columns and frame.index.name != IMAGE_ID:
        frame = frame.set_index(IMAGE_ID)
    for col in TEXT_COLUMNS:
        if col in frame.columns:
            frame[col] = text_column(frame[col], frame.index)
    root = path.parent.resolve()
    validate_index(frame, meta, where=str(path), root=root, check_files=check_files)
    return ImageIndex(frame=frame, meta=meta, root=root, path=path)


# ------------------------------------------------------------------ image embeddings


def embedding_frame(values: np.ndarray, image_ids: Sequence[str]) -> pd.DataFrame:
    """(N, D) numbers + ids -> a frame indexed by ``image_id`` with float32 columns ``dim_0..``."""
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"embeddings must be 2-D, got shape {arr.shape}")
    return pd.DataFrame(arr, index=pd.Index(_text(list(image_ids)), name=IMAGE_ID),
                        columns=[f"{EMBEDDING_PREFIX}_{i}" for i in range(arr.shape[1])])


def validate_embeddings(frame: pd.DataFrame, *, where: str) -> None:
    """Index ``image_id`` (unique), float32 columns ``dim_<i>`` in order, finite values."""
    if frame.index.name != IMAGE_ID:
        raise UrbanReprError(f"{where}: index must be named '{IMAGE_ID}', got {frame.index.name!r}")
    if len(frame) == 0:
        raise UrbanReprError(f"{where}: the embedding table has no rows")
    if frame.index.has_duplicates:
        raise UrbanReprError(f"{where}: duplicate image ids, e.g. {list(frame.index[frame.index.duplicated()][:3])}")
    expected = [f"{EMBEDDING_PREFIX}_{i}" for i in range(frame.shape[1])]
    if list(frame.columns) != expected or not expected:
        raise UrbanReprError(f"{where}: columns must be {EMBEDDING_PREFIX}_0..{EMBEDDING_PREFIX}_<D-1> in order, "
                             f"found {list(frame.columns[:3])}")
    if any(frame[c].dtype != np.float32 for c in frame.columns):
        raise UrbanReprError(f"{where}: embedding columns must be float32")
    finite = np.isfinite(frame.to_numpy()).all(axis=1)
    if not finite.all():
        raise UrbanReprError(f"{where}: NaN or inf in {int((~finite).sum())} row(s), e.g. {list(frame.index[~finite][:3])}")


def write_embeddings(table: ImageEmbeddings, path: str | Path) -> Path:
    """Validate and write an image embedding table atomically; return the path."""
    path = Path(path)
    validate_embeddings(table.frame, where=str(path))
    _atomic_parquet(_with_meta(table.frame, EMBEDDING_META_KEY, table.meta), path)
    table.path = path
    return path


def read_embeddings(path: str | Path) -> ImageEmbeddings:
    """Read and validate an image embedding table."""
    path = Path(path)
    arrow, raw = _read_arrow(path, EMBEDDING_META_KEY, "image embedding table")
    try:
        meta = EmbeddingMeta(**raw)
    except TypeError as exc:
        raise UrbanReprError(f"{path}: unreadable image embedding metadata ({exc})") from None
    frame = arrow.to_pandas()
    if IMAGE_ID in frame.columns and frame.index.name != IMAGE_ID:
        frame = frame.set_index(IMAGE_ID)
    validate_embeddings(frame, where=str(path))
    return ImageEmbeddings(frame=frame, meta=meta, path=path)


def write_point_csv(frame: pd.DataFrame, lat: np.ndarray, lon: np.ndarray, path: str | Path) -> Path:
    """``dim_*`` columns + ``geometry`` (WKT ``POINT (lon lat)``, EPSG:4326) as CSV, written atomically.

    Args:
        frame: A validated embedding frame (index ``image_id``).
        lat: Latitude of each row, in the frame's order.
        lon: Longitude of each row.
        path: Destination ``.csv``.
    """
    path = Path(path)
    out = frame.reset_index(drop=True).copy()
    out["geometry"] = [f"POINT ({x!r} {y!r})"
                       for x, y in zip(np.asarray(lon, dtype=float).tolist(), np.asarray(lat, dtype=float).tolist(), strict=False)]
    tmp = _temp_beside(path)
    try:
        out.to_csv(tmp, index=False, float_format="%.7g")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
