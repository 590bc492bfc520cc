"""Street-view building metadata (JSONL) -> index rows: one ``identity`` per building, several views.

Each line is one view, or one building with its views::

    {"building_id": "b17", "path": "views/b17_0.jpg", "lat": 52.37, "lon": 4.89, "captured_at": "2021-05-02"}
    {"building_id": "b18", "lat": 52.38, "lon": 4.90, "views": [{"path": "b18_0.jpg"}, {"path": "b18_1.jpg", "lat": 52.3801}]}

Keys: ``building_id`` (also ``identity``, ``building``), ``path`` (also ``image_path``, ``file``),
``lat``/``lon`` (also ``latitude``/``lng``/``longitude``; a view without them takes the
building's), optional ``image_id`` (else ``<building_id>_<k>``) and ``captured_at``.
``identity`` and ``group`` are both the building, so every view of a building stays in one split.
Paths are relative to the JSONL file's folder or absolute.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from urbanrepml.errors import UrbanReprError
from urbanrepml.images import index_frame
from urbanrepml.sources.imagery.base import (
    BuildResult,
    epoch_or_text_times,
    require_file,
)

_ID = ("building_id", "identity", "building")
_PATH = ("path", "image_path", "file")
_LAT = ("lat", "latitude")
_LON = ("lon", "lng", "longitude")


def _get(obj: dict, names: tuple[str, ...], default=None):
    for n in names:
        if n in obj and obj[n] is not None:
            return obj[n]
    return default


def _number(value, what: str, where: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UrbanReprError(f"{where}: {what} {value!r} is not a number") from None


def build_buildings(source: Path) -> BuildResult:
    """Index the views of a building metadata JSONL file (see the module docstring)."""
    require_file(source, "building metadata")
    rows = []
    for n, line in enumerate(source.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}: line {n}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise UrbanReprError(f"{where} is not JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise UrbanReprError(f"{where} must be a JSON object")
        building = _get(obj, _ID)
        if building is None or str(building).strip() == "":
            raise UrbanReprError(f"{where} has no building_id; every view needs the building it shows")
        views = obj.get("views")
        if views is None:
            views = [obj]
        if not isinstance(views, list) or not views:
            raise UrbanReprError(f"{where}: 'views' must be a non-empty list of objects with a path")
        for view in views:
            if not isinstance(view, dict) or _get(view, _PATH) is None:
                raise UrbanReprError(f"{where}: a view has no path (path, image_path or file)")
            lat, lon = _get(view, _LAT, _get(obj, _LAT)), _get(view, _LON, _get(obj, _LON))
            if lat is None or lon is None:
                raise UrbanReprError(f"{where}: a view of building {building!r} has no lat/lon, nor has the building")
            rows.append((_get(view, ("image_id", "id")), str(_get(view, _PATH)), _number(lat, "lat", where),
                         _number(lon, "lon", where), str(building), _get(view, ("captured_at",), obj.get("captured_at"))))
    if not rows:
        raise UrbanReprError(f"{source}: no view in the file")
    ids, paths, lat, lon, building, when = (list(c) for c in zip(*rows, strict=False))
    seen: dict[str, int] = {}
    for i, (given, b) in enumerate(zip(ids, building, strict=False)):
        if given is None:
            seen[b] = seen.get(b, 0) + 1
            ids[i] = f"{b}_{seen[b]}"
    frame = index_frame(image_id=[str(i) for i in ids], path=paths, lat=lat, lon=lon, group=building,
                        captured_at=epoch_or_text_times(when, where=str(source)), identity=building)
    per = np.bincount(np.unique(building, return_inverse=True)[1])
    counts = {"buildings": len(per), "views": len(frame), "buildings_single_view": int((per == 1).sum())}
    notes = [f"{len(frame)} view(s) of {len(per)} building(s) from {source.name}"]
    return BuildResult(frame=frame, root=source.parent.resolve(), counts=counts, notes=notes)
