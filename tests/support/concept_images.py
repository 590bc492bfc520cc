"""A tiny concept-geolocation dataset generated on the fly: solid-colour PNGs with noise, two countries.

Three meta concepts under two parents (``red_roof`` and ``grey_road`` under ``built``, ``green_park`` under
``green``); images in Sweden (near Lund) and the United States (near the NAIP quarter-quad), ``per_country``
of each, 32 x 32 px. :func:`write_concept_csv` writes the concept CSV (``pano_id, image_path, meta_name,
parent_concept, country, lat, lng, note``) and the images beside it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = {"red_roof": (200, 40, 30), "grey_road": (120, 120, 120), "green_park": (40, 170, 60)}
PARENTS = {"red_roof": "built", "grey_road": "built", "green_park": "green"}
CENTRES = {"SE": (55.70, 13.19), "US": (47.02, -99.16)}


def write_concept_csv(folder: Path, per_country: int = 24, *, seed: int = 0, rows_override=None) -> Path:
    """Images and ``concepts.csv`` in ``folder``; ``rows_override(rows)`` may edit the CSV rows (lists) first."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    metas = list(COLOURS)
    for country, (lat0, lon0) in CENTRES.items():
        for i in range(per_country):
            meta = metas[i % len(metas)]
            pixels = np.clip(np.array(COLOURS[meta])[None, None, :] + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            name = f"{country.lower()}_{i:03d}.png"
            Image.fromarray(pixels).save(folder / name)
            lat, lon = lat0 + rng.normal(0, 0.05), lon0 + rng.normal(0, 0.05)
            rows.append([f"{country.lower()}_{i:03d}", name, meta, PARENTS[meta], country, f"{lat:.6f}", f"{lon:.6f}",
                         f"a {meta.replace('_', ' ')}"])
    if rows_override is not None:
        rows = rows_override(rows)
    lines = ["pano_id,image_path,meta_name,parent_concept,country,lat,lng,note", *(",".join(r) for r in rows)]
    path = folder / "concepts.csv"
    path.write_text("\n".join(lines) + "\n")
    return path
