"""A folder of photos with GPS in their EXIF -> index rows (one per photo with a position).

- Photos: ``.jpg``, ``.jpeg``, ``.png``, ``.tif``, ``.tiff``, ``.webp`` anywhere under the folder.
  Only the headers are read (Pillow opens lazily), so this is fast on large photos.
- Position: EXIF GPS latitude/longitude with their N/S and E/W references. Photos without GPS
  (or with the 0, 0 that some cameras write without a fix) are skipped and counted; when no
  photo has GPS that is an error.
- ``captured_at``: ``DateTimeOriginal`` (with ``OffsetTimeOriginal`` it is converted to UTC),
  else the GPS date and time (UTC), else the ``MAPCaptureTime`` (UTC) that Mapillary apps write
  into the image description, else ``DateTime``; null when none is there.
- ``group``: the photo's sequence from a sidecar JSON ``{"<sequence id>": ["01.jpg", ...]}``
  (OpenSfM's ``sequence_database.json``; used automatically when the folder holds one), names
  relative to the folder; else the ``MAPSequenceUUID`` of a Mapillary image description; else
  one group per folder (the folder's path under the root; the root folder's own name for the root).
- ``image_id``: the photo's path under the folder without its suffix (``01``, ``day2/0007``).

A file that is not a readable image is an error naming it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.errors import UrbanReprError
from urbanrepml.images import index_frame
from urbanrepml.sources.imagery.base import BuildResult, require_file

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp")
SIDECAR = "sequence_database.json"
GPS_IFD = 0x8825
EXIF_IFD = 0x8769
_DATETIME_ORIGINAL, _OFFSET_ORIGINAL, _DATETIME, _DESCRIPTION = 36867, 36881, 306, 270
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON, _GPS_TIME, _GPS_DATE = 1, 2, 3, 4, 7, 29


def _dms(value) -> float:
    """EXIF (degrees, minutes, seconds) rationals -> decimal degrees."""
    d, m, s = (float(v) for v in value)
    return d + m / 60.0 + s / 3600.0


def _ref(value) -> str:
    return (value.decode(errors="ignore") if isinstance(value, bytes) else str(value)).strip().upper()[:1]


def gps_position(gps: dict) -> tuple[float, float] | None:
    """(lat, lon) from an EXIF GPS IFD, or None when it is missing, malformed or (0, 0)."""
    try:
        lat, lon = _dms(gps[_GPS_LAT]), _dms(gps[_GPS_LON])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    if not (np.isfinite(lat) and np.isfinite(lon)) or (lat == 0 and lon == 0):
        return None
    if _ref(gps.get(_GPS_LAT_REF, "N")) == "S":
        lat = -lat
    if _ref(gps.get(_GPS_LON_REF, "E")) == "W":
        lon = -lon
    return lat, lon


def _exif_time(text) -> datetime | None:
    try:
        return datetime.strptime(str(text).strip().rstrip("\x00"), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def mapillary_description(ifd0: dict) -> dict:
    """The JSON a Mapillary app writes into ``ImageDescription`` (``MAPCaptureTime``, ``MAPSequenceUUID``), or {}."""
    text = ifd0.get(_DESCRIPTION)
    if isinstance(text, bytes):
        text = text.decode(errors="ignore")
    if not isinstance(text, str) or not text.lstrip().startswith("{"):
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def capture_time(exif_ifd: dict, gps: dict, ifd0: dict) -> datetime | None:
    """When the photo was taken (see the module docstring); tz-aware when the EXIF says the offset."""
    when = _exif_time(exif_ifd.get(_DATETIME_ORIGINAL, ""))
    if when is not None:
        offset = str(exif_ifd.get(_OFFSET_ORIGINAL, "")).strip()
        try:
            sign = -1 if offset.startswith("-") else 1
            hours, minutes = offset.lstrip("+-").split(":")
            return when.replace(tzinfo=timezone(sign * timedelta(hours=int(hours), minutes=int(minutes))))
        except ValueError:
            return when
    try:
        date = datetime.strptime(str(gps[_GPS_DATE]).strip().rstrip("\x00"), "%Y:%m:%d")
        h, m, s = (float(v) for v in gps[_GPS_TIME])
        return (date + timedelta(hours=h, minutes=m, seconds=s)).replace(tzinfo=UTC)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        pass
    try:
        return datetime.strptime(str(mapillary_description(ifd0)["MAPCaptureTime"]), "%Y_%m_%d_%H_%M_%S_%f").replace(tzinfo=UTC)
    except (KeyError, ValueError):
        pass
    return _exif_time(ifd0.get(_DATETIME, ""))


def read_photo_exif(path: Path) -> tuple[tuple[float, float] | None, datetime | None, str | None]:
    """((lat, lon) or None, capture time or None, Mapillary sequence or None) of one photo.

    A file Pillow cannot open is an error.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            exif = im.getexif()
            gps = dict(exif.get_ifd(GPS_IFD))
            exif_ifd = dict(exif.get_ifd(EXIF_IFD))
            ifd0 = dict(exif)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UrbanReprError(f"photo {path} is not a readable image ({type(exc).__name__}: {exc}); remove or replace it") from None
    sequence = mapillary_description(ifd0).get("MAPSequenceUUID")
    return gps_position(gps), capture_time(exif_ifd, gps, ifd0), str(sequence) if sequence else None


def photo_files(folder: Path) -> list[Path]:
    """Photos under ``folder`` (recursively), sorted by path."""
    if not folder.is_dir():
        raise UrbanReprError(f"photo folder {folder} does not exist or is not a folder")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES and not p.name.startswith("."))


def read_sequences(path: Path) -> dict[str, str]:
    """A sidecar ``{"<sequence id>": ["<photo>", ...]}`` -> ``{photo path (posix, relative): sequence id}``."""
    require_file(path, "sequence file")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UrbanReprError(f"sequence file {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise UrbanReprError(f"sequence file {path} must map each sequence id to a list of photo names, "
                             'e.g. {"sequence_1": ["01.jpg", "02.jpg"]}')
    out: dict[str, str] = {}
    for seq, names in data.items():
        for name in names:
            out[Path(str(name)).as_posix()] = str(seq)
    return out


def build_photos(source: Path, *, sequences: str | None = None, workers: int = 4) -> BuildResult:
    """Index the photos of folder ``source`` (see the module docstring).

    Args:
        source: The photo folder.
        sequences: A sidecar JSON of sequences, absolute or relative to the folder (default:
            ``sequence_database.json`` in the folder, if any).
        workers: Threads reading EXIF headers.
    """
    from concurrent.futures import ThreadPoolExecutor

    files = photo_files(source)
    if not files:
        raise UrbanReprError(f"no photo ({', '.join(PHOTO_SUFFIXES)}) in {source}")
    if sequences:
        given = Path(sequences).expanduser()
        sidecar = source / given if not given.is_absolute() and (source / given).is_file() else given
    else:
        sidecar = source / SIDECAR if (source / SIDECAR).is_file() else None
    seq_of = read_sequences(sidecar) if sidecar is not None else {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        found = list(pool.map(read_photo_exif, files))
    rows = []
    no_gps: list[str] = []
    for path, (position, when, map_sequence) in zip(files, found, strict=False):
        rel = path.relative_to(source)
        if position is None:
            no_gps.append(rel.as_posix())
            continue
        folder = rel.parent.as_posix()
        group = (seq_of.get(rel.as_posix()) or seq_of.get(rel.name) or map_sequence
                 or (source.resolve().name if folder == "." else folder))
        rows.append((rel.with_suffix("").as_posix(), str(path.resolve()), position[0], position[1], group, when,
                     rel.as_posix() in seq_of or rel.name in seq_of))
    if not rows:
        raise UrbanReprError(f"none of the {len(files)} photo(s) in {source} has a GPS position in its EXIF "
                             f"(e.g. {no_gps[0]}); geotag them or use a metadata file (kind mapillary)")
    ids, paths, lat, lon, group, when, in_sidecar = zip(*rows, strict=False)
    frame = index_frame(image_id=ids, path=paths, lat=lat, lon=lon, group=group,
                        captured_at=[pd.Timestamp(w) if w is not None else None for w in when])
    notes = [f"{len(rows)} photo(s) with GPS in {source.name}, {len(no_gps)} without GPS skipped"
             + (f" (e.g. {no_gps[0]})" if no_gps else "")]
    counts = {"photos_found": len(files), "photos_skipped_no_gps": len(no_gps),
              "photos_without_time": int(sum(w is None for w in when))}
    if sidecar is not None:
        counts["photos_not_in_sequences"] = int(len(rows) - sum(in_sidecar))
    settings = {"sequences": str(sidecar) if sidecar is not None else "none: Mapillary sequence id, else one group per folder"}
    return BuildResult(frame=frame, counts=counts, notes=notes, settings=settings)
