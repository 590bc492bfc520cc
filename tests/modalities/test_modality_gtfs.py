"""GTFS modality: a two-stop feed counted by hand, the bundled Porto Alegre feeds end to end, bad feeds."""

from __future__ import annotations

import math
import zipfile

import h3
import numpy as np
import pandas as pd
import pytest

from tests.support.processes import error_lines, load_entry
from urbanrepml.areas import build_area
from urbanrepml.config import load_study_area
from urbanrepml.datasets import fetch
from urbanrepml.errors import UrbanReprError
from urbanrepml.modalities.gtfs import EARTH_RADIUS_KM, GTFSModality, read_feed, stop_departures
from urbanrepml.stages.modality import run_modality_stage, table_path
from urbanrepml.tables import read_table

LAT1, LON1 = h3.cell_to_latlng(h3.latlng_to_cell(-30.03, -51.22, 9))  # S1 sits on a cell centroid
LAT2, LON2 = LAT1 + math.degrees(0.5 / EARTH_RADIUS_KM), LON1          # S2: exactly 0.5 km north of S1
BOX = [-51.24, -30.05, -51.20, -30.01]

FEED = {
    "stops.txt": f"stop_id,stop_name,stop_lat,stop_lon,location_type\nS1,One,{LAT1},{LON1},0\nS2,Two,{LAT2},{LON2},\n"
                 f"ST,Station,{LAT1},{LON1},1\n",
    "trips.txt": "route_id,service_id,trip_id\nR,WK,t1\nR,WK,t2\nR,SAT,t3\nR,SPECIAL,t4\nR,WK,t5\n",
    "stop_times.txt": "trip_id,arrival_time,departure_time,stop_id,stop_sequence,pickup_type\n"
                      "t1,08:00:00,08:00:00,S1,1,0\nt1,08:05:00,08:05:00,S2,2,0\n"
                      "t2,00:00:00,00:00:00,S1,1,\nt2,00:05:00,00:05:00,S2,2,\n"
                      "t3,09:00:00,09:00:00,S1,1,0\n"
                      "t4,10:00:00,10:00:00,S2,1,0\n"
                      "t5,11:00:00,11:00:00,S1,1,0\nt5,11:05:00,11:05:00,S2,2,1\n",
    # t2 runs at 06:00, 06:15, 06:30, 06:45 (end exclusive) and 07:00, 07:10: 6 runs
    "frequencies.txt": "trip_id,start_time,end_time,headway_secs\nt2,06:00:00,07:00:00,900\nt2,07:00:00,07:20:00,600\n",
    "calendar.txt": "service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,start_date,end_date\n"
                    "WK,1,1,1,1,1,0,0,20240101,20241231\nSAT,0,0,0,0,0,1,0,20240101,20241231\n",
    # Monday 2024-03-04: weekday service removed, a special service added
    "calendar_dates.txt": "service_id,date,exception_type\nWK,20240304,2\nSPECIAL,20240304,1\n",
}
# By hand. Tuesday: S1 = t1 + 6 x t2 + t5 = 8; S2 = t1 + 6 x t2 (t5 has no pickup at S2) = 7.
# Monday 2024-03-04: S1 = 0, S2 = t4 = 1. Saturday: S1 = t3 = 1. Sunday: nothing.


def write_feed(path, files):
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def hav(lat1, lon1, lat2, lon2):
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))


@pytest.fixture
def feed_area(tmp_path, data_dir, study_area_toml):
    write_feed(tmp_path / "feed.zip", FEED)
    spec = load_study_area(study_area_toml("gtfs_test", BOX, sources={"gtfs": ["feed.zip"]}, filename="area.toml"))
    return spec, build_area(spec, [9])


@pytest.mark.parametrize("day,s1,s2", [("2024-03-05", 8, 7), ("2024-03-04", 0, 1), ("20240309", 1, 0)])
def test_departures_by_hand(feed_area, day, s1, s2):
    spec, _ = feed_area
    from urbanrepml.modalities.gtfs import parse_service_date

    deps = stop_departures(read_feed(spec.sources.gtfs[0]), parse_service_date(day)).reindex(["S1", "S2"]).fillna(0)
    assert deps.tolist() == [s1, s2]


def test_cells_and_accessibility_by_hand(feed_area):
    spec, area = feed_area
    result = GTFSModality("2024-03-05", decay_km=1.0, max_km=3.0).compute(spec, area, 9)
    f = result.features
    c1, c2 = h3.latlng_to_cell(LAT1, LON1, 9), h3.latlng_to_cell(LAT2, LON2, 9)
    assert c1 != c2
    assert f.loc[c1, "stops"] == 1 and f.loc[c2, "stops"] == 1  # the station (location_type 1) is not a stop
    assert f.loc[c1, "departures"] == 8 and f.loc[c2, "departures"] == 7
    assert f.loc[c1, "accessibility"] == pytest.approx(8 + 7 * math.exp(-0.5), rel=1e-9)
    lat, lon = h3.cell_to_latlng(c2)
    expected = 8 * math.exp(-hav(lat, lon, LAT1, LON1)) + 7 * math.exp(-hav(lat, lon, LAT2, LON2))
    assert f.loc[c2, "accessibility"] == pytest.approx(expected, rel=1e-9)
    # Every area cell within 3 km of a stop, and only those, has a row; brute force over all cells.
    ids = area.region_ids(9)
    within = {c for c in ids if min(hav(*h3.cell_to_latlng(c), LAT1, LON1), hav(*h3.cell_to_latlng(c), LAT2, LON2)) <= 3.0}
    assert set(f.index) == within
    assert result.params == {"service_date": "2024-03-05"}
    # With max_km = 0.3 only S1 (distance 0) reaches S1's cell.
    short = GTFSModality("2024-03-05", decay_km=1.0, max_km=0.3).compute(spec, area, 9).features
    assert short.loc[c1, "accessibility"] == pytest.approx(8.0)


def test_auto_date_is_busiest_weekday(feed_area):
    spec, area = feed_area
    result = GTFSModality("auto").compute(spec, area, 9)
    assert result.params["service_date"] == "2024-01-01"  # first Monday of WK (15 departures); ties -> earliest
    assert result.metrics["departures_feed0"] == 15


def test_trip_listed_twice_counts_once_everywhere(tmp_path, data_dir):
    from urbanrepml.modalities.gtfs import feed_services, parse_service_date, service_departures

    files = dict(FEED, **{"trips.txt": FEED["trips.txt"] + "R,WK,t1\n"})  # t1 listed twice
    feed = read_feed(write_feed(tmp_path / "dup.zip", files))
    services = feed_services(feed)
    wk = service_departures(feed, services)[list(services).index("WK")]
    assert wk == 15 == stop_departures(feed, parse_service_date("2024-03-05")).sum()  # t1 2 + t2 6 x 2 + t5 1


def test_auto_date_ignores_long_lived_service(tmp_path, data_dir):
    """A 2015-2030 service with one departure must not pull the 371-day search window to 2015."""
    from urbanrepml.modalities.gtfs import MAX_AUTO_DAYS, candidate_dates, choose_service_date

    files = dict(FEED)
    files["trips.txt"] = FEED["trips.txt"] + "R,OLD,t6\n"
    files["stop_times.txt"] = FEED["stop_times.txt"] + "t6,12:00:00,12:00:00,S1,1,0\n"
    files["calendar.txt"] = FEED["calendar.txt"] + "OLD,1,1,1,1,1,0,0,20150101,20301231\n"
    feed = read_feed(write_feed(tmp_path / "long.zip", files))
    dates = candidate_dates([feed])
    assert len(dates) == MAX_AUTO_DAYS and dates[0] == np.datetime64("2024-01-01")  # 2024-03-04 lies inside
    date, total = choose_service_date([feed])
    assert str(date) == "2024-01-01" and total == 16  # WK 15 + OLD 1 (the old window would pick 2015-01-01: 1)


def test_bundled_feeds_auto_date():
    from urbanrepml.modalities.gtfs import choose_service_date

    folder = fetch("porto_alegre")
    date, total = choose_service_date([read_feed(folder / "poa_eptc.zip"), read_feed(folder / "poa_trensurb.zip")])
    assert str(date) == "2019-04-15" and total > 0


def test_bundled_feeds_end_to_end(tracking):
    from mlflow.tracking import MlflowClient

    table = run_modality_stage(GTFSModality(), "porto_alegre", 9)
    path = table_path("porto_alegre", "gtfs", 9)
    back = read_table(path, resolution=9, study_area="porto_alegre")
    assert back.meta.feature_names == ["stops", "departures", "accessibility"]
    assert back.meta.extra["service_date"] == "2019-04-15"
    run = MlflowClient().get_run(table.meta.producer_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["urbanrepml.modality"] == "gtfs"
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"poa_eptc.zip", "poa_trensurb.zip"}
    assert run.data.params["resolved.service_date"] == "2019-04-15"
    # Trensurb has no calendar_dates/frequencies: its Monday departures are the stop_times rows of FULLW trips.
    with zipfile.ZipFile(fetch("porto_alegre") / "poa_trensurb.zip") as zf:
        trips = pd.read_csv(zf.open("trips.txt"), dtype=str)
        st = pd.read_csv(zf.open("stop_times.txt"), dtype=str)
    expected = st["trip_id"].isin(trips.loc[trips["service_id"] == "FULLW", "trip_id"]).sum()
    assert run.data.metrics["departures_feed1"] == expected
    assert 0.9 < run.data.metrics["coverage"] <= 1.0
    assert back.frame["gtfs_1"].sum() == run.data.metrics["departures_in_area"]


@pytest.mark.parametrize("case,message", [
    ("no_stops", "lacks stops.txt"),
    ("no_stop_times", "lacks stop_times.txt"),
    ("no_service", "have no service on 2024-03-10"),
    ("corrupt", "is not a readable zip file"),
])
def test_bad_feeds_one_line_and_no_table(tracking, tmp_path, capsys, case, message, study_area_toml):
    feed = tmp_path / "bad.zip"
    if case == "corrupt":
        feed.write_bytes(b"PK\x03\x04 this is not really a zip")
    else:
        files = dict(FEED)
        files.pop({"no_stops": "stops.txt", "no_stop_times": "stop_times.txt"}.get(case, ""), None)
        write_feed(feed, files)
    toml = study_area_toml("gtfs_test", BOX, sources={"gtfs": ["bad.zip"]}, filename="area.toml")
    day = "2024-03-10" if case == "no_service" else "2024-03-05"
    entry = load_entry("gtfs")
    with pytest.raises(SystemExit) as exc:
        entry.main(["--study_area", str(toml), "--resolution", "9", "--service_date", day])
    assert exc.value.code == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not table_path("gtfs_test", "gtfs", 9).exists()


def test_bad_params():
    with pytest.raises(UrbanReprError, match="service_date must be"):
        GTFSModality("next tuesday")
    with pytest.raises(UrbanReprError, match="decay_km must be > 0"):
        GTFSModality(decay_km=0)
    assert np.isfinite(EARTH_RADIUS_KM)
