"""GTFS modality: transit feeds -> stops, departures on one service day, and an accessibility potential per cell.

Inputs: the area's ``sources.gtfs`` zips (one or more feeds), read with pandas
(no GTFS library). Output: index ``region_id``, columns

- ``stops``: stops/platforms (``location_type`` 0 or empty) whose position lies in the cell;
- ``departures``: departures on the service day from stops in the cell;
- ``accessibility``: ``A_i = sum_s dep_s * exp(-d(i, s) / decay_km)`` over stops ``s``
  with ``d(i, s) <= max_km``, where ``d`` is the haversine distance (R = 6371.0088 km)
  from the centroid of cell ``i`` to stop ``s`` and ``dep_s`` the stop's departures.
  Stops outside the area count for cells within ``max_km`` of them.

Only cells where one of the three is non-zero are in the table.

Departures: a departure is one ``stop_times.txt`` row of a trip that runs on the
day (rows with ``pickup_type`` 1, "no pickup", do not count). A trip runs when its
``service_id`` is active: ``calendar.txt`` has the weekday flag set and the date
within ``start_date..end_date``, then ``calendar_dates.txt`` adds (``exception_type``
1) or removes (2) the service on that date. A trip listed in ``frequencies.txt``
runs once per start time ``start_time, start_time + headway_secs, ...`` strictly
before ``end_time`` (i.e. ``ceil((end - start) / headway)`` times per row), and
each start yields all of its stop_times rows.

``service_date="auto"`` picks the Monday-Friday date with the most departures over
all feeds (earliest on ties) among the dates the feeds cover: every calendar_dates
date, plus the whole calendar range when it spans at most 371 days, else the 371
days from where the most weekday service is active (see :func:`candidate_dates`).
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.areas import Area, h3ops
from urbanrepml.config import StudyArea
from urbanrepml.constants import REGION_ID
from urbanrepml.errors import UrbanReprError
from urbanrepml.modalities.base import Modality, ModalityResult
from urbanrepml.params import param
from urbanrepml.sources.osm import EARTH_RADIUS_M, haversine_m

EARTH_RADIUS_KM = EARTH_RADIUS_M / 1000  # 6371.0088, the haversine of osm.haversine_m
MAX_AUTO_DAYS = 371
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass
class Feed:
    """The parts of one GTFS feed this modality uses (ids as strings)."""

    path: Path
    stops: pd.DataFrame          # stop_id, stop_lat, stop_lon, location_type
    trip_rows: pd.Series         # trip_id -> departures per run of the trip (stop_times rows)
    stop_rows: pd.DataFrame      # stop_id, trip_id: one row per counted stop_times row
    trips: pd.DataFrame          # trip_id, service_id
    calendar: pd.DataFrame       # service_id, weekday flags, start_date, end_date (may be empty)
    calendar_dates: pd.DataFrame  # service_id, date, exception_type (may be empty)
    runs: pd.Series              # trip_id -> runs per day (1, or the frequencies.txt start count)


def _read_member(zf: zipfile.ZipFile, members: dict[str, str], name: str, path: Path, columns: tuple[str, ...],
                 required: tuple[str, ...]) -> pd.DataFrame | None:
    if name not in members:
        return None
    try:
        with zf.open(members[name]) as raw:
            frame = pd.read_csv(io.TextIOWrapper(raw, encoding="utf-8-sig"), dtype=str, keep_default_na=False,
                                skipinitialspace=True)
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame()
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, pd.errors.ParserError, EOFError) as exc:
        raise UrbanReprError(f"GTFS feed {path}: {name} is unreadable ({type(exc).__name__}: {exc})") from None
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise UrbanReprError(f"GTFS feed {path}: {name} lacks column(s) {missing}")
    keep = [c for c in columns if c in frame.columns]
    return frame[keep].apply(lambda s: s.str.strip())


def gtfs_seconds(times: pd.Series) -> np.ndarray:
    """``"H:MM:SS"`` (hours may exceed 24) -> seconds, as int64."""
    parts = times.str.strip().str.split(":", expand=True)
    if parts.shape[1] != 3:
        raise ValueError("times must be H:MM:SS")
    return (parts[0].astype(int) * 3600 + parts[1].astype(int) * 60 + parts[2].astype(int)).to_numpy(np.int64)


def read_feed(path: str | Path) -> Feed:
    """Read one GTFS zip; one clear :class:`UrbanReprError` line for a corrupt zip or missing files/columns."""
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UrbanReprError(f"GTFS feed {path} is not a readable zip file ({exc}); re-download or re-export the feed") from None
    with zf:
        members = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}
        missing = [n for n in ("stops.txt", "stop_times.txt", "trips.txt") if n not in members]
        if missing:
            raise UrbanReprError(f"GTFS feed {path} lacks {', '.join(missing)}; a feed needs stops.txt, stop_times.txt and trips.txt")
        if "calendar.txt" not in members and "calendar_dates.txt" not in members:
            raise UrbanReprError(f"GTFS feed {path} has neither calendar.txt nor calendar_dates.txt, so no day has service")
        stops = _read_member(zf, members, "stops.txt", path, ("stop_id", "stop_lat", "stop_lon", "location_type"),
                             ("stop_id", "stop_lat", "stop_lon"))
        stop_times = _read_member(zf, members, "stop_times.txt", path, ("trip_id", "stop_id", "pickup_type"),
                                  ("trip_id", "stop_id"))
        trips = _read_member(zf, members, "trips.txt", path, ("trip_id", "service_id"), ("trip_id", "service_id"))
        calendar = _read_member(zf, members, "calendar.txt", path, ("service_id", *WEEKDAYS, "start_date", "end_date"),
                                ("service_id", *WEEKDAYS, "start_date", "end_date"))
        calendar_dates = _read_member(zf, members, "calendar_dates.txt", path, ("service_id", "date", "exception_type"),
                                      ("service_id", "date", "exception_type"))
        frequencies = _read_member(zf, members, "frequencies.txt", path, ("trip_id", "start_time", "end_time", "headway_secs"),
                                   ("trip_id", "start_time", "end_time", "headway_secs"))
    if calendar is None:
        calendar = pd.DataFrame(columns=["service_id", *WEEKDAYS, "start_date", "end_date"])
    if calendar_dates is None:
        calendar_dates = pd.DataFrame(columns=["service_id", "date", "exception_type"])

    lat = pd.to_numeric(stops["stop_lat"], errors="coerce")
    lon = pd.to_numeric(stops["stop_lon"], errors="coerce")
    location = stops["location_type"] if "location_type" in stops else pd.Series("", index=stops.index)
    stops = pd.DataFrame({"stop_id": stops["stop_id"], "stop_lat": lat, "stop_lon": lon,
                          "location_type": location.replace("", "0")})
    stops = stops[stops["stop_lat"].between(-90, 90) & stops["stop_lon"].between(-180, 180)]

    if "pickup_type" in stop_times:
        stop_times = stop_times[stop_times["pickup_type"] != "1"]
    stop_rows = stop_times[["stop_id", "trip_id"]].reset_index(drop=True)
    trip_rows = stop_rows.groupby("trip_id").size()

    runs = pd.Series(1, index=trips["trip_id"].unique(), dtype=np.int64)
    if frequencies is not None and len(frequencies):
        try:
            start = gtfs_seconds(frequencies["start_time"])
            end = gtfs_seconds(frequencies["end_time"])
            headway = frequencies["headway_secs"].astype(int).to_numpy()
        except (ValueError, TypeError) as exc:
            raise UrbanReprError(f"GTFS feed {path}: frequencies.txt has unreadable times or headways ({exc})") from None
        if (headway <= 0).any():
            raise UrbanReprError(f"GTFS feed {path}: frequencies.txt has headway_secs <= 0")
        starts = np.where(end > start, -((start - end) // headway), 0)  # ceil((end - start) / headway)
        per_trip = pd.Series(starts, index=frequencies["trip_id"].to_numpy()).groupby(level=0).sum()
        runs.loc[runs.index.intersection(per_trip.index)] = per_trip.reindex(runs.index.intersection(per_trip.index))
    return Feed(path, stops, trip_rows, stop_rows, trips, calendar, calendar_dates, runs)


def _parse_dates(values: pd.Series, path: Path, what: str) -> np.ndarray:
    parsed = pd.to_datetime(values, format="%Y%m%d", errors="coerce")
    if parsed.isna().any():
        bad = list(values[parsed.isna()][:3])
        raise UrbanReprError(f"GTFS feed {path}: {what} has dates not in YYYYMMDD form, e.g. {bad}")
    return parsed.to_numpy("datetime64[D]")


def feed_services(feed: Feed) -> np.ndarray:
    """Sorted service ids of a feed (calendar, calendar_dates and trips), as strings."""
    return np.unique(np.concatenate([feed.calendar["service_id"].to_numpy(str), feed.calendar_dates["service_id"].to_numpy(str),
                                     feed.trips["service_id"].to_numpy(str)]))


def service_matrix(feed: Feed, dates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(services, active) where ``active[d, k]`` says service ``services[k]`` runs on ``dates[d]`` (datetime64[D])."""
    cal, exc = feed.calendar, feed.calendar_dates
    services = feed_services(feed)
    active = np.zeros((len(dates), len(services)), dtype=bool)
    if len(cal):
        k = np.searchsorted(services, cal["service_id"].to_numpy(str))
        start = _parse_dates(cal["start_date"], feed.path, "calendar.txt")
        end = _parse_dates(cal["end_date"], feed.path, "calendar.txt")
        flags = cal[list(WEEKDAYS)].to_numpy() == "1"                          # (rows, 7)
        weekday = ((dates.astype("datetime64[D]").astype(np.int64) - 4) % 7)   # 1970-01-01 was a Thursday -> 0 = Monday
        on = flags[:, weekday].T & (dates[:, None] >= start[None]) & (dates[:, None] <= end[None])  # (dates, rows)
        for j in range(on.shape[1]):  # calendar rows are few (one per service)
            active[:, k[j]] |= on[:, j]
    if len(exc):
        exc_dates = _parse_dates(exc["date"], feed.path, "calendar_dates.txt")
        d = np.searchsorted(dates, exc_dates)
        hit = (d < len(dates)) & (dates[np.minimum(d, len(dates) - 1)] == exc_dates)
        k = np.searchsorted(services, exc["service_id"].to_numpy(str))
        kind = exc["exception_type"].to_numpy(str)
        active[d[hit & (kind == "1")], k[hit & (kind == "1")]] = True
        active[d[hit & (kind == "2")], k[hit & (kind == "2")]] = False
    return services, active


def service_departures(feed: Feed, services: np.ndarray) -> np.ndarray:
    """Departures per service on a day it runs: sum over its trips of stop_times rows x runs.

    A trip listed twice in trips.txt counts once (its first row), as in :func:`stop_departures`.
    """
    trips = feed.trips.drop_duplicates("trip_id")
    per_trip = feed.trip_rows.reindex(trips["trip_id"]).fillna(0).to_numpy() * \
        feed.runs.reindex(trips["trip_id"]).fillna(1).to_numpy()
    k = np.searchsorted(services, trips["service_id"].to_numpy(str))
    return np.bincount(k, weights=per_trip, minlength=len(services))


def busiest_calendar_start(feeds: list[Feed]) -> np.datetime64 | None:
    """Where the most calendar.txt service is active.

    That is the earliest date on which the sum over active calendar rows of (departures per running day
    x share of Monday-Friday flags set) peaks (an event sweep: ``+w`` at start_date, ``-w`` the day after
    end_date). Rows are counted 1 each when no row has departures.
    """
    starts, ends, weights = [], [], []
    for f in feeds:
        if not len(f.calendar):
            continue
        services = feed_services(f)
        dep = service_departures(f, services)[np.searchsorted(services, f.calendar["service_id"].to_numpy(str))]
        weekdays = (f.calendar[list(WEEKDAYS[:5])].to_numpy() == "1").mean(axis=1)
        starts.append(_parse_dates(f.calendar["start_date"], f.path, "calendar.txt"))
        ends.append(_parse_dates(f.calendar["end_date"], f.path, "calendar.txt"))
        weights.append(dep * weekdays)
    if not starts:
        return None
    start, end, w = np.concatenate(starts), np.concatenate(ends), np.concatenate(weights)
    keep = end >= start
    if not keep.any():
        return None
    start, end, w = start[keep], end[keep], w[keep]
    if not (w > 0).any():
        w = np.ones(len(w))
    events, inverse = np.unique(np.concatenate([start, end + np.timedelta64(1, "D")]), return_inverse=True)
    level = np.cumsum(np.bincount(inverse, weights=np.concatenate([w, -w]), minlength=len(events)))
    return events[int(np.argmax(np.round(level, 9)))]  # argmax: the earliest of equal peaks


def candidate_dates(feeds: list[Feed]) -> np.ndarray:
    """Dates the feeds cover: every calendar_dates date, plus calendar dates in a window of MAX_AUTO_DAYS days.

    When the union of the calendar ranges spans at most MAX_AUTO_DAYS days the window is all of it; else it
    starts where the most service is active (:func:`busiest_calendar_start`), moved back to stay inside the
    union, so one long-lived service (say 2015-2030) does not pull the search to the wrong year.
    """
    starts, ends, extra = [], [], []
    for f in feeds:
        if len(f.calendar):
            starts.append(_parse_dates(f.calendar["start_date"], f.path, "calendar.txt").min())
            ends.append(_parse_dates(f.calendar["end_date"], f.path, "calendar.txt").max())
        if len(f.calendar_dates):
            extra.append(_parse_dates(f.calendar_dates["date"], f.path, "calendar_dates.txt"))
    dates = [np.concatenate(extra)] if extra else []
    if starts:
        first, last = min(starts), max(ends)
        span = np.timedelta64(MAX_AUTO_DAYS - 1, "D")
        if last - first > span:
            anchor = busiest_calendar_start(feeds)
            first = max(first, min(anchor if anchor is not None else first, last - span))
            last = first + span
        if last >= first:
            dates.append(np.arange(first, last + np.timedelta64(1, "D"), dtype="datetime64[D]"))
    return np.unique(np.concatenate(dates)) if dates else np.array([], dtype="datetime64[D]")


def choose_service_date(feeds: list[Feed]) -> tuple[np.datetime64, float]:
    """The Monday-Friday date with the most departures over all feeds (earliest on ties), and that count."""
    dates = candidate_dates(feeds)
    totals = np.zeros(len(dates))
    for f in feeds:
        services, active = service_matrix(f, dates)
        totals += active.astype(np.float64) @ service_departures(f, services)
    weekday = (dates.astype(np.int64) - 4) % 7 < 5
    if not len(dates) or totals[weekday].max(initial=0) <= 0:
        names = ", ".join(str(f.path.name) for f in feeds)
        raise UrbanReprError(f"GTFS feeds {names} have no departures on any weekday they cover; pass service_date=YYYY-MM-DD")
    best = int(np.argmax(np.where(weekday, totals, -1)))
    return dates[best], float(totals[best])


def parse_service_date(value: str) -> np.datetime64:
    text = str(value).strip().replace("-", "")
    try:
        return np.datetime64(dt.datetime.strptime(text, "%Y%m%d").date(), "D")
    except ValueError:
        raise UrbanReprError(f"service_date must be 'auto' or a date YYYY-MM-DD, got {value!r}") from None


def stop_departures(feed: Feed, date: np.datetime64) -> pd.Series:
    """Departures per stop_id on ``date`` (only stops with at least one)."""
    services, active = service_matrix(feed, np.array([date], dtype="datetime64[D]"))
    running = set(services[active[0]])
    trips = feed.trips.drop_duplicates("trip_id")
    trips = trips[trips["service_id"].isin(running)]
    weight = feed.runs.reindex(trips["trip_id"]).fillna(1)
    rows = feed.stop_rows[feed.stop_rows["trip_id"].isin(weight.index)]
    # a trip listed twice in trips.txt counts once (its first row, as in service_departures);
    # its stop_times rows each count `runs` times
    per_row = weight.reindex(rows["trip_id"]).to_numpy()
    return pd.Series(per_row, index=rows["stop_id"].to_numpy()).groupby(level=0).sum()


def _unit_xyz(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    la, lo = np.radians(lat), np.radians(lon)
    return np.column_stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)])


def accessibility(cell_lat: np.ndarray, cell_lon: np.ndarray, stop_lat: np.ndarray, stop_lon: np.ndarray,
                  departures: np.ndarray, decay_km: float, max_km: float) -> np.ndarray:
    """``A_i = sum_s dep_s * exp(-d(i,s)/decay_km)`` for haversine ``d <= max_km`` (cKDTree on the unit sphere)."""
    from scipy.spatial import cKDTree

    out = np.zeros(len(cell_lat))
    if len(stop_lat) == 0 or len(cell_lat) == 0:
        return out
    chord = 2 * np.sin(min(max_km / EARTH_RADIUS_KM, np.pi) / 2) * (1 + 1e-9)
    tree = cKDTree(_unit_xyz(stop_lat, stop_lon))
    hits = tree.query_ball_point(_unit_xyz(cell_lat, cell_lon), r=chord, return_sorted=False)
    lengths = np.fromiter((len(h) for h in hits), dtype=np.int64, count=len(hits))
    if lengths.sum() == 0:
        return out
    cell_idx = np.repeat(np.arange(len(cell_lat)), lengths)
    stop_idx = np.concatenate([np.asarray(h, dtype=np.int64) for h in hits if len(h)])
    d = haversine_m(cell_lon[cell_idx], cell_lat[cell_idx], stop_lon[stop_idx], stop_lat[stop_idx]) / 1000.0
    keep = d <= max_km
    weights = departures[stop_idx[keep]] * np.exp(-d[keep] / decay_km)
    return np.bincount(cell_idx[keep], weights=weights, minlength=len(cell_lat))


class GTFSModality(Modality):
    """Stops, departures on one service day, and a distance-decayed accessibility potential per cell."""

    name = "gtfs"

    @dataclass
    class Params:
        """The ``gtfs`` entry point's own settings."""

        service_date: str = param("auto", "YYYY-MM-DD, or auto = the weekday with most departures")
        decay_km: float = param(1.0, "distance decay of the accessibility potential")
        max_km: float = param(3.0, "stops farther than this from a cell do not count")

    def __init__(self, service_date: str = "auto", decay_km: float = 1.0, max_km: float = 3.0):
        if not float(decay_km) > 0:
            raise UrbanReprError(f"decay_km must be > 0, got {decay_km}")
        if not float(max_km) > 0:
            raise UrbanReprError(f"max_km must be > 0, got {max_km}")
        if str(service_date).strip().lower() != "auto":
            parse_service_date(service_date)
        self.service_date = str(service_date).strip()
        self.decay_km = float(decay_km)
        self.max_km = float(max_km)

    def source_files(self, spec: StudyArea) -> dict[str, Path]:
        if not spec.sources.gtfs:
            raise UrbanReprError(f"study area {spec.name!r} ({spec.source_file}) lists no GTFS feeds; "
                                 "add gtfs = [\"feed.zip\"] under [sources]")
        return {p.name: p for p in spec.sources.gtfs}

    def compute(self, spec: StudyArea, area: Area, resolution: int) -> ModalityResult:
        feeds = [read_feed(p) for p in self.source_files(spec).values()]
        if self.service_date.lower() == "auto":
            date, _ = choose_service_date(feeds)
        else:
            date = parse_service_date(self.service_date)
        cells = area.cells(resolution)
        stops_in_cell = np.zeros(len(cells))
        deps_in_cell = np.zeros(len(cells))
        src_lat, src_lon, src_dep = [], [], []
        metrics: dict[str, float] = {}
        for i, feed in enumerate(feeds):
            stops = feed.stops
            deps = stop_departures(feed, date).reindex(stops["stop_id"]).fillna(0).to_numpy()
            metrics[f"departures_feed{i}"] = float(deps.sum())
            pos = h3ops.positions(cells, h3ops.latlon_to_cells(stops["stop_lat"].to_numpy(), stops["stop_lon"].to_numpy(), resolution))
            inside = pos >= 0
            platform = (stops["location_type"] == "0").to_numpy()
            stops_in_cell += np.bincount(pos[inside & platform], minlength=len(cells))
            deps_in_cell += np.bincount(pos[inside], weights=deps[inside], minlength=len(cells))
            served = deps > 0
            src_lat.append(stops["stop_lat"].to_numpy()[served])
            src_lon.append(stops["stop_lon"].to_numpy()[served])
            src_dep.append(deps[served])
        day = str(date)
        if sum(metrics.values()) == 0:
            names = ", ".join(f.path.name for f in feeds)
            raise UrbanReprError(f"GTFS feeds {names} have no service on {day}; choose another service_date (or 'auto')")
        lat, lon = h3ops.cell_centroids(cells)
        access = accessibility(lat, lon, np.concatenate(src_lat), np.concatenate(src_lon), np.concatenate(src_dep),
                               self.decay_km, self.max_km)
        keep = (stops_in_cell > 0) | (deps_in_cell > 0) | (access > 0)
        features = pd.DataFrame({"stops": stops_in_cell[keep], "departures": deps_in_cell[keep], "accessibility": access[keep]},
                                index=pd.Index(h3ops.cells_to_str(cells[keep]), name=REGION_ID))
        metrics.update({"stops_in_area": float(stops_in_cell.sum()), "departures_in_area": float(deps_in_cell.sum())})
        notes = [f"service day {day} ({WEEKDAYS[(int(date.astype(np.int64)) - 4) % 7]}), "
                 f"{'chosen automatically' if self.service_date.lower() == 'auto' else 'given'}; "
                 f"A_i = sum_s dep_s exp(-d/{self.decay_km:g} km), d <= {self.max_km:g} km"]
        empty = [f.path.name for i, f in enumerate(feeds) if metrics[f"departures_feed{i}"] == 0]
        if empty:
            notes.append(f"warning: no service on {day} in {', '.join(empty)}")
        return ModalityResult(features=features, metrics=metrics, params={"service_date": day}, notes=notes)
