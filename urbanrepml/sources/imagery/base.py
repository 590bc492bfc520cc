"""What every index builder returns, and the small helpers they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.errors import UrbanReprError


@dataclass
class BuildResult:
    """An index frame in contract layout (see :mod:`urbanrepml.images`) and what building it found.

    Attributes:
        frame: Indexed by ``image_id``; ``path`` values absolute, or relative to ``root``.
        root: Folder relative paths start from (None when every path is absolute).
        counts: Numbers worth logging (skipped photos, dropped chips, ...), by name.
        notes: Lines for the run's note and the console.
        settings: Resolved settings (what a default turned into), logged on the run.
        embeddings: Vectors that came with the source (Regional-SatCLIP CSV), rows as ``frame``; else None.
        embeddings_name: What produced ``embeddings`` (recorded as the encoder name).
    """

    frame: pd.DataFrame
    root: Path | None = None
    counts: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)
    embeddings: np.ndarray | None = None
    embeddings_name: str = ""


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else one clear error."""
    if not path.is_file():
        raise UrbanReprError(f"{what} {path} does not exist or is not a file")
    return path


def read_table_file(path: Path, what: str) -> pd.DataFrame:
    """A CSV, JSONL (one JSON object per line) or parquet file -> a frame; one clear error otherwise."""
    require_file(path, what)
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv", ".txt"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=object, keep_default_na=True)
        if suffix in (".jsonl", ".ndjson", ".json"):
            return pd.read_json(path, lines=suffix != ".json", dtype=False)
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise UrbanReprError(f"{what} {path} is not readable ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    raise UrbanReprError(f"{what} {path}: unsupported file type {suffix!r}; use .csv, .jsonl or .parquet")


def pick_column(frame: pd.DataFrame, names: tuple[str, ...], *, where: str, required: bool = True) -> str | None:
    """The first of ``names`` that ``frame`` has (case-insensitive); an error naming them all when none is there."""
    lower = {str(c).lower(): c for c in frame.columns}
    for n in names:
        if n.lower() in lower:
            return lower[n.lower()]
    if required:
        raise UrbanReprError(f"{where}: no column {' / '.join(names)}; found {', '.join(map(str, frame.columns[:12]))}")
    return None


def numbers(values, *, what: str, where: str) -> np.ndarray:
    """Values -> float64, one clear error naming the first value that is not a number."""
    series = pd.to_numeric(pd.Series(values), errors="coerce")
    bad = series.isna() & pd.Series(values).notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise UrbanReprError(f"{where}: {what} {pd.Series(values).iloc[i]!r} in row {i + 1} is not a number")
    return series.to_numpy(dtype=np.float64)


def epoch_or_text_times(values, *, where: str) -> list:
    """Times as ISO text, or numbers in ms since the epoch -> values :func:`urbanrepml.images.to_timestamps` takes.

    Numbers in milliseconds since the epoch are what Mapillary's ``captured_at`` holds.
    """
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA or (isinstance(v, str) and not v.strip()):
            out.append(None)
            continue
        try:
            out.append(pd.Timestamp(float(v), unit="ms", tz="UTC"))
        except (TypeError, ValueError):
            out.append(v)
        except OverflowError:
            raise UrbanReprError(f"{where}: captured_at {v!r} is out of range for milliseconds since 1970") from None
    return out
