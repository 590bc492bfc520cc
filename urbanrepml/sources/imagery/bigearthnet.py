"""BigEarthNet's example Sentinel-2 patches -> concept rows (meta = CORINE level 3, parent = level 1).

The PyPI package ``bigearthnet-common`` ships six labelled BigEarthNet-S2 patches (1.2 x 1.2 km, 10 m
bands as 120 x 120 GeoTIFFs, one ``labels_metadata.json`` each) inside its wheel as
``BigEarthNet-S2-Example.tar.bz2``. :func:`bigearthnet_rows` checks that archive's SHA-256, extracts it
once under ``<data dir>/cache/bigearthnet/`` and writes each patch as one 4-band GeoTIFF (B04, B03, B02,
B08: red, green, blue, near infrared, the band order of the NAIP scenes) beside it.

Concepts come from the patch's CORINE Land Cover labels (multi-label, listed in CORINE code order):
``meta_concept`` is the first label (the lowest code) in snake case, ``parent_concept`` its CORINE
level-1 class (``artificial_surfaces``, ``agricultural_areas``, ``forest_and_semi_natural_areas``,
``wetlands``, ``water_bodies``). Level 3's "Water bodies" (512) shares its name with level 1, so that
meta concept is named with its level-2 class, ``inland_water_bodies``. Positions are the patch centres
(from the patch's UTM bounds); ``captured_at`` is the acquisition date; each patch is its own group.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.errors import UrbanReprError
from urbanrepml.images import index_frame

ARCHIVE = "BigEarthNet-S2-Example.tar.bz2"
ARCHIVE_SHA256 = "faa13e52868bda950c5255e15b7a6504ae827e637b8376dc10e09aae0c068537"
INSTALL_HINT = "pip install bigearthnet-common==2.8.0"
BANDS = ("B04", "B03", "B02", "B08")

# CORINE Land Cover level-3 classes of BigEarthNet (43 labels) -> their level-1 class
_LEVEL1 = {1: "Artificial surfaces", 2: "Agricultural areas", 3: "Forest and semi natural areas", 4: "Wetlands",
           5: "Water bodies"}
CORINE_LEVEL3 = {
    "Continuous urban fabric": 111, "Discontinuous urban fabric": 112, "Industrial or commercial units": 121,
    "Road and rail networks and associated land": 122, "Port areas": 123, "Airports": 124,
    "Mineral extraction sites": 131, "Dump sites": 132, "Construction sites": 133, "Green urban areas": 141,
    "Sport and leisure facilities": 142, "Non-irrigated arable land": 211, "Permanently irrigated land": 212,
    "Rice fields": 213, "Vineyards": 221, "Fruit trees and berry plantations": 222, "Olive groves": 223,
    "Pastures": 231, "Annual crops associated with permanent crops": 241, "Complex cultivation patterns": 242,
    "Land principally occupied by agriculture, with significant areas of natural vegetation": 243,
    "Agro-forestry areas": 244, "Broad-leaved forest": 311, "Coniferous forest": 312, "Mixed forest": 313,
    "Natural grassland": 321, "Moors and heathland": 322, "Sclerophyllous vegetation": 323,
    "Transitional woodland/shrub": 324, "Beaches, dunes, sands": 331, "Bare rock": 332,
    "Sparsely vegetated areas": 333, "Burnt areas": 334, "Inland marshes": 411, "Peatbogs": 412,
    "Salt marshes": 421, "Salines": 422, "Intertidal flats": 423, "Water courses": 511, "Water bodies": 512,
    "Coastal lagoons": 521, "Estuaries": 522, "Sea and ocean": 523,
}
_RENAMED = {512: "Inland water bodies"}


def snake(name: str) -> str:
    """``'Broad-leaved forest'`` -> ``'broad_leaved_forest'``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def corine_concepts(label: str) -> tuple[str, str]:
    """(meta, parent) concept names of one CORINE level-3 label (see the module docstring)."""
    code = CORINE_LEVEL3.get(label)
    if code is None:
        raise UrbanReprError(f"BigEarthNet label {label!r} is not a CORINE level-3 class of BigEarthNet")
    return snake(_RENAMED.get(code, label)), snake(_LEVEL1[code // 100])


def _archive() -> Path:
    try:
        from importlib.resources import files

        path = Path(str(files("bigearthnet_common") / ARCHIVE))
    except ModuleNotFoundError:
        raise UrbanReprError(f"BigEarthNet example patches need the bigearthnet-common package; {INSTALL_HINT}") from None
    if not path.is_file():
        raise UrbanReprError(f"bigearthnet-common is installed without {ARCHIVE}; reinstall it: {INSTALL_HINT}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != ARCHIVE_SHA256:
        raise UrbanReprError(f"{ARCHIVE} has SHA-256 {digest[:12]}..., expected {ARCHIVE_SHA256[:12]}...; {INSTALL_HINT}")
    return path


def _stack(folder: Path, out: Path) -> dict:
    """The patch's four 10 m bands as one GeoTIFF at ``out``; its metadata."""
    import rasterio

    name = folder.name
    meta = json.loads((folder / f"{name}_labels_metadata.json").read_text())
    if not out.is_file():
        arrays, profile = [], None
        for band in BANDS:
            with rasterio.open(folder / f"{name}_{band}.tif") as src:
                arrays.append(src.read(1))
                profile = profile or src.profile
        profile.update(count=len(BANDS), driver="GTiff")
        tmp = out.with_suffix(".tmp.tif")
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(np.stack(arrays))
        tmp.replace(out)
    return meta


def bigearthnet_rows(cache: Path) -> pd.DataFrame:
    """The six example patches as concept rows (see the module docstring), images written under ``cache``."""
    from pyproj import CRS, Transformer

    archive = _archive()
    root = cache / "BigEarthNet-S2-Example"
    if not root.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(cache, filter="data")
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        out = cache / f"{folder.name}.tif"
        meta = _stack(folder, out)
        labels = meta.get("labels") or []
        if not labels:
            raise UrbanReprError(f"BigEarthNet patch {folder.name} has no labels")
        first = min(labels, key=lambda lab: CORINE_LEVEL3.get(lab, 10 ** 6))
        meta_concept, parent = corine_concepts(first)
        c = meta["coordinates"]
        to_wgs84 = Transformer.from_crs(CRS.from_wkt(meta["projection"]), "EPSG:4326", always_xy=True)
        lon, lat = to_wgs84.transform((c["ulx"] + c["lrx"]) / 2, (c["uly"] + c["lry"]) / 2)
        rows.append({"image_id": folder.name, "path": str(out), "lat": float(lat), "lon": float(lon),
                     "captured_at": meta["acquisition_date"], "meta_concept": meta_concept,
                     "parent_concept": parent, "note": "CORINE labels: " + "; ".join(labels)})
    if not rows:
        raise UrbanReprError(f"{archive.name} holds no patches")
    table = pd.DataFrame(rows)
    frame = index_frame(image_id=table["image_id"], path=table["path"], lat=table["lat"], lon=table["lon"],
                        group=table["image_id"], captured_at=table["captured_at"],
                        meta_concept=table["meta_concept"].tolist(), parent_concept=table["parent_concept"].tolist())
    frame["note"] = table["note"].to_numpy()
    return frame
