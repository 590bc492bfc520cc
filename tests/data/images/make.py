"""Tiny image-dataset fixtures, written on demand (nothing binary is committed).

``python tests/data/images/make.py OUT`` writes the full set into ``OUT``; tests call the same
functions on a temporary folder:

- ``scenes/``: two 4-band uint8 GeoTIFF scenes of 40 x 30 px, 10 m pixels, EPSG:32633, upper-left
  corner at (500000, 5800000); ``s_20190815.tif`` has a nodata (0) block in its upper-left
  10 x 10 px, ``s_20200901.tif`` is shifted 2 m east (snaps to the same chip grid);
- ``photos/``: geotagged JPEGs in two folders (``a/``: 3 photos, ``b/``: 2 photos) plus
  ``a/nogps.jpg`` without GPS and ``sequences.json`` putting ``a/01.jpg`` and ``a/02.jpg`` in
  sequence ``s1``;
- ``mapillary.jsonl``, ``satclip.csv``, ``concepts.csv`` and ``buildings.jsonl`` pointing at
  photos under ``photos/``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SCENE_CRS = "EPSG:32633"
ORIGIN = (500000.0, 5800000.0)
PIXEL = 10.0
SCENE_SHAPE = (30, 40)  # rows, cols

# (folder/name, lat, lon, EXIF time, colour)
PHOTOS = [
    ("a/01.jpg", 52.5200, 13.4050, "2021:03:04 05:06:07", (200, 40, 40)),
    ("a/02.jpg", 52.5201, 13.4052, "2021:03:04 05:06:17", (40, 200, 40)),
    ("a/03.jpg", 52.5203, 13.4055, "2021:03:04 05:07:00", (40, 40, 200)),
    ("b/01.jpg", -33.8561, 151.2084, "2022:07:08 09:10:11", (220, 220, 40)),
    ("b/02.jpg", -33.8562, 151.2086, None, (40, 220, 220)),
]


def scene_pixels(seed: int, shape: tuple[int, int] = SCENE_SHAPE, bands: int = 4) -> np.ndarray:
    """Random uint8 pixels in 1..255 (never the nodata value 0), ``(bands, rows, cols)``."""
    return np.random.default_rng(seed).integers(1, 256, size=(bands, *shape), dtype=np.uint8)


def write_scene(path: Path, data: np.ndarray, *, origin: tuple[float, float] = ORIGIN, pixel: float = PIXEL,
                crs: str | None = SCENE_CRS, nodata: float | None = 0) -> Path:
    """A GeoTIFF with north-up ``pixel`` m pixels whose upper-left corner is ``origin``."""
    import rasterio
    from affine import Affine

    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype.name, "transform": Affine(pixel, 0.0, origin[0], 0.0, -pixel, origin[1])}
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _dms(value: float):
    from PIL.TiffImagePlugin import IFDRational

    value = abs(value)
    d = int(value)
    m = int((value - d) * 60)
    s = round((value - d - m / 60) * 3600 * 10000)
    return (IFDRational(d), IFDRational(m), IFDRational(s, 10000))


def write_photo(path: Path, lat: float | None = None, lon: float | None = None, when: str | None = None,
                color: tuple[int, int, int] = (128, 128, 128), size: tuple[int, int] = (48, 36)) -> Path:
    """A JPEG, with EXIF GPS when ``lat``/``lon`` are given and ``DateTimeOriginal`` when ``when`` is."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if lat is not None and lon is not None:
        gps = exif.get_ifd(0x8825)
        gps[1], gps[2] = ("N" if lat >= 0 else "S"), _dms(lat)
        gps[3], gps[4] = ("E" if lon >= 0 else "W"), _dms(lon)
    if when:
        exif.get_ifd(0x8769)[36867] = when
    Image.new("RGB", size, color).save(path, exif=exif)
    return path


def write_scenes(root: Path) -> list[Path]:
    """The two scenes of ``scenes/``."""
    first = scene_pixels(1)
    first[:, :10, :10] = 0
    return [write_scene(root / "scenes" / "s_20190815.tif", first),
            write_scene(root / "scenes" / "s_20200901.tif", scene_pixels(2), origin=(ORIGIN[0] + 2.0, ORIGIN[1]))]


def write_photos(root: Path) -> Path:
    """``photos/`` with the geotagged photos, one photo without GPS and ``sequences.json``."""
    folder = root / "photos"
    for name, lat, lon, when, color in PHOTOS:
        write_photo(folder / name, lat, lon, when, color)
    write_photo(folder / "a" / "nogps.jpg", color=(10, 10, 10))
    (folder / "sequences.json").write_text(json.dumps({"s1": ["a/01.jpg", "a/02.jpg"]}))
    return folder


def write_metadata(root: Path) -> dict[str, Path]:
    """Metadata files of the four table kinds, referring to the photos (relative paths)."""
    lines = [{"id": f"m{i}", "lat": lat, "lon": lon, "sequence_id": name.split("/")[0],
              "captured_at": 1_600_000_000_000 + i * 1000, "path": f"photos/{name}"}
             for i, (name, lat, lon, _, _) in enumerate(PHOTOS)]
    (root / "mapillary.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (root / "satclip.csv").write_text(
        "dim_0,dim_1,dim_2,geometry\n"
        "0.1,0.2,0.3,POINT (13.405 52.52)\n"
        "0.4,0.5,0.6,POINT (151.2084 -33.8561)\n"
        "0.7,0.8,0.9,POINT (-0.1276 51.5072)\n")
    (root / "concepts.csv").write_text(
        "pano_id,image_path,meta_name,parent_concept,country,lat,lng,note\n"
        "p1,photos/a/01.jpg,bollard,street furniture,DE,52.5200,13.4050,\n"
        "p2,photos/a/03.jpg,road sign,signage,DE,52.5203,13.4055,yellow\n"
        "p3,photos/b/01.jpg,utility pole,street furniture,AU,-33.8561,151.2084,\n")
    buildings = [
        {"building_id": "b1", "lat": 52.5201, "lon": 13.4051, "views": [{"path": "photos/a/01.jpg"}, {"path": "photos/a/02.jpg"}]},
        {"building_id": "b2", "path": "photos/b/01.jpg", "lat": -33.8561, "lon": 151.2084, "captured_at": "2022-07-08"},
        {"building_id": "b2", "path": "photos/b/02.jpg", "lat": -33.8562, "lon": 151.2086},
    ]
    (root / "buildings.jsonl").write_text("\n".join(json.dumps(x) for x in buildings) + "\n")
    return {k: root / f for k, f in (("mapillary", "mapillary.jsonl"), ("satclip", "satclip.csv"),
                                      ("concepts", "concepts.csv"), ("buildings", "buildings.jsonl"))}


def build_all(root: Path) -> Path:
    """Every fixture under ``root``; returns ``root``."""
    write_scenes(root)
    write_photos(root)
    write_metadata(root)
    return root


if __name__ == "__main__":
    out = build_all(Path(sys.argv[1] if len(sys.argv) > 1 else "image-fixtures"))
    print(f"fixtures in {out}")
