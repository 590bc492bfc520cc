"""Index builders: chips from GeoTIFF scenes, photos with EXIF GPS, and the four metadata kinds."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from pyproj import Transformer

from tests.data.images import make
from urbanrepml.errors import UrbanReprError
from urbanrepml.images import IndexMeta, validate_index
from urbanrepml.sources.imagery import BUILDERS
from urbanrepml.sources.imagery.chips import (
    build_chips,
    chip_nodata_share,
    date_from_name,
)
from urbanrepml.sources.imagery.photos import (
    build_photos,
    gps_position,
    read_photo_exif,
)


@pytest.fixture
def fx(tmp_path):
    return make.build_all(tmp_path / "fx")


def valid(result, kind):
    validate_index(result.frame, IndexMeta("t", kind), where="t", root=result.root)
    return result.frame


# ------------------------------------------------------------------ chips


def test_chip_counts_centres_dates_and_shared_identity(fx):
    frame = valid(build_chips(fx / "scenes", chip_px=10), "chips")
    # 3 x 4 chips per scene; the first scene's upper-left chip is all nodata
    assert frame.groupby("group").size().to_dict() == {"s_20190815": 11, "s_20200901": 12}
    first = frame[frame["group"] == "s_20190815"]
    assert "s_20190815_r0_c0" not in frame.index and first.loc["s_20190815_r0_c10", "window"] == "10,0,10,10"
    assert set(frame.loc[frame["group"] == "s_20190815", "captured_at"]) == {pd.Timestamp("2019-08-15")}
    assert set(frame.loc[frame["group"] == "s_20200901", "captured_at"]) == {pd.Timestamp("2020-09-01")}
    # Centre of chip (row 0, col 10): x = 500000 + 15 * 10 m, y = 5800000 - 5 * 10 m in UTM 33N.
    lat, lon = first.loc["s_20190815_r0_c10", ["lat", "lon"]]
    x, y = Transformer.from_crs("EPSG:4326", make.SCENE_CRS, always_xy=True).transform(lon, lat)
    assert x == pytest.approx(500150.0, abs=1e-3) and y == pytest.approx(5799950.0, abs=1e-3)
    # by hand: northing 5,799,950 m / 0.9996 (UTM scale) is the meridian arc to about 52.35 N; easting
    # 500000 is the zone's central meridian (15 E), and the centre lies 150 m east of it
    assert lat == pytest.approx(52.3498, abs=1e-3)
    assert lon == pytest.approx(15 + 150 / (111_320 * math.cos(math.radians(lat))), abs=2e-5)
    # the second scene is shifted 2 m east: its chips snap to the same grid, so places are shared
    second = frame[frame["group"] == "s_20200901"]
    assert set(second["identity"]) == {f"r{r}_c{c}" for r in range(3) for c in range(4)}
    shared = frame.groupby("identity")["group"].nunique()
    assert (shared == 2).sum() == 11 and shared["r0_c0"] == 1
    assert frame.loc["s_20200901_r20_c30", "identity"] == first.loc["s_20190815_r20_c30", "identity"] == "r2_c3"


@pytest.mark.parametrize("max_nodata, kept", [(0.0, 31), (0.25, 32), (0.5, 34), (1.0, 35)])
def test_nodata_filter_with_overlapping_chips(fx, max_nodata, kept):
    """Stride 5, chip 10: 5 x 7 chips; shares of the 10 x 10 nodata corner are 1, .5, .5, .25 for four chips."""
    result = build_chips(fx / "scenes" / "s_20190815.tif", chip_px=10, stride_px=5, max_nodata=max_nodata)
    assert len(result.frame) == kept and result.counts["chips_cut"] == 35
    assert result.counts["chips_dropped_nodata"] == 35 - kept


def test_nodata_share_summed_area_equals_a_loop():
    rng = np.random.default_rng(0)
    invalid = rng.random((23, 31)) < 0.3
    rows, cols = np.arange(0, 23 - 7 + 1, 3), np.arange(0, 31 - 7 + 1, 4)
    got = chip_nodata_share(invalid, rows, cols, 7)
    want = np.array([[invalid[r:r + 7, c:c + 7].mean() for c in cols] for r in rows])
    np.testing.assert_allclose(got, want)


def test_date_from_name_and_parameter(tmp_path):
    from pathlib import Path

    assert date_from_name(Path("m_4709963_se_14_1_20190815.tif")) == pd.Timestamp("2019-08-15")
    assert date_from_name(Path("tile_12345678.tif")) is None and date_from_name(Path("scene.tif")) is None
    make.write_scene(tmp_path / "scene.tif", make.scene_pixels(3))
    undated = build_chips(tmp_path / "scene.tif", chip_px=10)
    assert undated.frame["captured_at"].isna().all() and "no date in their name" in undated.notes[1]
    dated = build_chips(tmp_path / "scene.tif", chip_px=10, date="2018-05-06")
    assert set(dated.frame["captured_at"]) == {pd.Timestamp("2018-05-06")}
    with pytest.raises(UrbanReprError, match="parameter date: 'soon' is not a date"):
        build_chips(tmp_path / "scene.tif", chip_px=10, date="soon")


def test_chip_errors(tmp_path, fx):
    with pytest.raises(UrbanReprError, match=r"chip_px 50 is larger than scene s_20190815.tif \(40x30 px\); use chip_px <= 30"):
        build_chips(fx / "scenes", chip_px=50)
    make.write_scene(tmp_path / "empty.tif", np.zeros((4, 30, 40), np.uint8))
    with pytest.raises(UrbanReprError, match="scene .*empty.tif holds only nodata pixels"):
        build_chips(tmp_path / "empty.tif", chip_px=10)
    make.write_scene(tmp_path / "nocrs" / "x.tif", make.scene_pixels(4), crs=None)
    with pytest.raises(UrbanReprError, match="has no CRS"):
        build_chips(tmp_path / "nocrs", chip_px=10)
    with pytest.raises(UrbanReprError, match="no GeoTIFF scene"):
        build_chips(fx / "photos", chip_px=10)
    with pytest.raises(UrbanReprError, match="parameter chip_px must be positive"):
        build_chips(fx / "scenes", chip_px=0)
    with pytest.raises(UrbanReprError, match=r"max_nodata is a share of pixels in \[0, 1\]"):
        build_chips(fx / "scenes", chip_px=10, max_nodata=5)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.tif").write_bytes(b"not a tiff")
    with pytest.raises(UrbanReprError, match="is not a readable GeoTIFF"):
        build_chips(tmp_path / "broken", chip_px=10)


# ------------------------------------------------------------------ photos


def test_photos_gps_times_groups_and_skips(fx):
    result = build_photos(fx / "photos", sequences="sequences.json")
    frame = valid(result, "photos")
    assert sorted(frame.index) == ["a/01", "a/02", "a/03", "b/01", "b/02"]
    assert result.counts["photos_skipped_no_gps"] == 1 and result.counts["photos_found"] == 6
    assert "1 without GPS skipped (e.g. a/nogps.jpg)" in result.notes[0]
    for name, lat, lon, when, _ in make.PHOTOS:
        row = frame.loc[name.removesuffix(".jpg")]
        assert row["lat"] == pytest.approx(lat, abs=1e-6) and row["lon"] == pytest.approx(lon, abs=1e-6)
        expected = pd.Timestamp(when.replace(":", "-", 2)) if when else None
        assert (pd.isna(row["captured_at"]) and expected is None) or row["captured_at"] == expected
    # sidecar sequences first, then one group per folder
    assert frame["group"].to_dict() == {"a/01": "s1", "a/02": "s1", "a/03": "a", "b/01": "b", "b/02": "b"}
    assert result.counts["photos_not_in_sequences"] == 3
    without = build_photos(fx / "photos")
    assert set(without.frame["group"]) == {"a", "b"}


def test_photo_exif_details(tmp_path):
    make.write_photo(tmp_path / "s.jpg", -33.85608333, 151.20841667, "2021:03:04 05:06:07")
    (lat, lon), when, seq = read_photo_exif(tmp_path / "s.jpg")
    assert (lat, lon) == pytest.approx((-33.85608333, 151.20841667), abs=1e-7) and seq is None
    assert when.isoformat() == "2021-03-04T05:06:07"
    assert gps_position({1: "N", 2: (0.0, 0.0, 0.0), 3: "E", 4: (0.0, 0.0, 0.0)}) is None  # "no fix" zeros
    assert gps_position({1: "N", 2: (52.0, 30.0, 0.0)}) is None  # no longitude
    assert gps_position({1: b"S", 2: (1.0, 30.0, 0.0), 3: b"W", 4: (2.0, 0.0, 36.0)}) == pytest.approx((-1.5, -2.01))


def test_photo_errors(tmp_path):
    make.write_photo(tmp_path / "none" / "1.jpg")
    make.write_photo(tmp_path / "none" / "2.jpg")
    with pytest.raises(UrbanReprError, match=r"none of the 2 photo\(s\) in .* has a GPS position in its EXIF \(e\.g\. 1\.jpg\)"):
        build_photos(tmp_path / "none")
    make.write_photo(tmp_path / "bad" / "1.jpg", 1.0, 2.0)
    (tmp_path / "bad" / "2.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(UrbanReprError, match=r"photo .*2\.jpg is not a readable image"):
        build_photos(tmp_path / "bad")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UrbanReprError, match="no photo"):
        build_photos(tmp_path / "empty")
    with pytest.raises(UrbanReprError, match="does not exist or is not a folder"):
        build_photos(tmp_path / "missing")
    make.write_photo(tmp_path / "seq" / "1.jpg", 1.0, 2.0)
    (tmp_path / "seq" / "s.json").write_text('["1.jpg"]')
    with pytest.raises(UrbanReprError, match="must map each sequence id to a list of photo names"):
        build_photos(tmp_path / "seq", sequences="s.json")


# ------------------------------------------------------------------ metadata kinds


def test_mapillary_manifest(fx, tmp_path):
    result = BUILDERS["mapillary"](fx / "mapillary.jsonl")
    frame = valid(result, "mapillary")
    assert list(frame.index) == ["m0", "m1", "m2", "m3", "m4"] and result.root == fx.resolve()
    assert frame["group"].tolist() == ["a", "a", "a", "b", "b"]
    assert frame.loc["m1", "captured_at"] == pd.Timestamp(1_600_000_001_000, unit="ms")
    assert frame.loc["m3", "lat"] == pytest.approx(-33.8561)
    # CSV, API-style geometry and ISO times; a row without a path is skipped and counted
    (tmp_path / "photos").symlink_to(fx / "photos")
    pd.DataFrame({"image_id": ["x", "y"], "sequence": ["s", "s"], "captured_at": ["2020-01-01T00:00:00Z", ""],
                  "computed_geometry": ['{"type": "Point", "coordinates": [13.4, 52.5]}'] * 2,
                  "file": ["photos/a/01.jpg", None]}).to_json(tmp_path / "m.jsonl", orient="records", lines=True)
    lines = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    for x in lines:
        x["computed_geometry"] = json.loads(x["computed_geometry"])
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    result = BUILDERS["mapillary"](tmp_path / "m.jsonl")
    assert list(result.frame.index) == ["x"] and result.counts["rows_skipped_no_path"] == 1
    assert result.frame.loc["x", ["lat", "lon"]].tolist() == [52.5, 13.4]
    (tmp_path / "noseq.csv").write_text("id,lat,lon,sequence_id,path\n1,52,13,,photos/a/01.jpg\n")
    with pytest.raises(UrbanReprError, match=r"1 row\(s\) have no 'sequence_id', e\.g\. row 1"):
        BUILDERS["mapillary"](tmp_path / "noseq.csv")
    (tmp_path / "nolat.csv").write_text("id,sequence_id,path\n1,s,photos/a/01.jpg\n")
    with pytest.raises(UrbanReprError, match="no lat/lon columns"):
        BUILDERS["mapillary"](tmp_path / "nolat.csv")


def test_satclip_csv(fx, tmp_path):
    result = BUILDERS["satclip"](fx / "satclip.csv")
    frame = valid(result, "satclip")
    assert list(frame.index) == ["p0", "p1", "p2"] and result.embeddings.shape == (3, 3)
    assert frame.loc["p1", ["lat", "lon"]].tolist() == [-33.8561, 151.2084]
    np.testing.assert_array_equal(result.embeddings[2], np.array([0.7, 0.8, 0.9], np.float32))
    # a projected CRS is reprojected to lat/lon
    (tmp_path / "utm.csv").write_text("id,dim_0,geometry\nq,1.5,POINT (500000 5800000)\n")
    utm = BUILDERS["satclip"](tmp_path / "utm.csv", crs="EPSG:32633")
    assert utm.frame.loc["q", "lon"] == pytest.approx(15.0) and utm.frame.loc["q", "lat"] == pytest.approx(52.35, abs=0.01)


@pytest.mark.parametrize("body, message", [
    ("dim_0,geometry\n1,POINT (13.4 52.5)\n2,POINT (13.4\n",
     r"row 2: geometry 'POINT \(13.4' is not a WKT point like 'POINT \(13.4 52.5\)'"),
    ("dim_0,geometry\n1,\"LINESTRING (0 0, 1 1)\"\n", "row 1: geometry 'LINESTRING"),
    ("dim_0,geometry\n1,\n", "row 1: geometry 'nan' is not a WKT point"),
    ("dim_0,shape\n1,POINT (1 2)\n", "no column geometry"),
    ("x,geometry\n1,POINT (1 2)\n", "no embedding columns dim_0..dim_<n>"),
    ("dim_0,dim_2,geometry\n1,2,POINT (1 2)\n", "must be dim_0..dim_1 without gaps"),
    ("dim_0,geometry\nabc,POINT (1 2)\n", "an embedding value in dim_\\* is not a number"),
])
def test_satclip_bad_csv(tmp_path, body, message):
    (tmp_path / "e.csv").write_text(body)
    with pytest.raises(UrbanReprError, match=message) as err:
        BUILDERS["satclip"](tmp_path / "e.csv")
    assert "\n" not in str(err.value)


def test_satclip_swapped_coordinates_are_caught_by_the_contract(tmp_path):
    """POINT (lat lon) instead of POINT (lon lat) for Sydney: 151 as a latitude cannot be, swapping fits."""
    (tmp_path / "e.csv").write_text("dim_0,geometry\n1,POINT (-33.86 151.21)\n2,POINT (-33.87 151.2)\n")
    result = BUILDERS["satclip"](tmp_path / "e.csv")
    with pytest.raises(UrbanReprError, match=r"lat and lon look swapped .*swap the columns"):
        valid(result, "satclip")
    with pytest.raises(UrbanReprError, match="parameter crs: 'EPSG:999999' is not a known CRS"):
        BUILDERS["satclip"](tmp_path / "e.csv", crs="EPSG:999999")


def test_concepts_csv(fx, tmp_path):
    result = BUILDERS["concepts"](fx / "concepts.csv")
    frame = valid(result, "concepts")
    assert list(frame.index) == ["p1", "p2", "p3"] and frame["group"].tolist() == ["p1", "p2", "p3"]
    assert frame["meta_concept"].tolist() == ["bollard", "road sign", "utility pole"]
    assert frame["parent_concept"].tolist() == ["street furniture", "signage", "street furniture"]
    assert frame["country"].tolist() == ["DE", "DE", "AU"] and frame.loc["p3", "lon"] == 151.2084
    assert result.counts == {"panoramas": 3, "meta_concepts": 3, "countries": 2}
    # a panorama with two images keeps both, in one group
    (tmp_path / "photos").symlink_to(fx / "photos")
    text = (fx / "concepts.csv").read_text() + "p1,photos/a/02.jpg,bollard,street furniture,DE,52.5201,13.4052,\n"
    (tmp_path / "c.csv").write_text(text)
    frame = valid(BUILDERS["concepts"](tmp_path / "c.csv"), "concepts")
    assert list(frame.index) == ["p1_1", "p2", "p3", "p1_2"] and frame.loc["p1_2", "group"] == "p1"
    (tmp_path / "swapped.csv").write_text("pano_id,image_path,meta_name,parent_concept,country,lat,lng,note\n"
                                          "p,photos/a/01.jpg,x,y,AU,151.2,-33.8,\n")
    with pytest.raises(UrbanReprError, match="lat and lon look swapped"):
        valid(BUILDERS["concepts"](tmp_path / "swapped.csv"), "concepts")


def test_buildings_jsonl(fx, tmp_path):
    result = BUILDERS["buildings"](fx / "buildings.jsonl")
    frame = valid(result, "buildings")
    assert list(frame.index) == ["b1_1", "b1_2", "b2_1", "b2_2"]
    assert frame["identity"].tolist() == frame["group"].tolist() == ["b1", "b1", "b2", "b2"]
    assert frame.loc["b1_2", "lat"] == 52.5201 and frame.loc["b2_1", "captured_at"] == pd.Timestamp("2022-07-08")
    assert result.counts == {"buildings": 2, "views": 4, "buildings_single_view": 0}
    (tmp_path / "b.jsonl").write_text('{"path": "x.jpg", "lat": 1, "lon": 2}\n')
    with pytest.raises(UrbanReprError, match="line 1 has no building_id"):
        BUILDERS["buildings"](tmp_path / "b.jsonl")
    (tmp_path / "b.jsonl").write_text('{"building_id": "q", "views": [{"path": "x.jpg"}]}\n')
    with pytest.raises(UrbanReprError, match="a view of building 'q' has no lat/lon"):
        BUILDERS["buildings"](tmp_path / "b.jsonl")
    (tmp_path / "b.jsonl").write_text('{"building_id": "q",\n')
    with pytest.raises(UrbanReprError, match="line 1 is not JSON"):
        BUILDERS["buildings"](tmp_path / "b.jsonl")
