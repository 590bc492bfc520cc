"""The ``images`` stage: build an image index (one of six source kinds), assign splits, write and log it.

The index (:mod:`urbanrepml.images`) goes to ``<data dir>/images/<name>/index.parquet``; it is
logged as an artifact and as an MLflow dataset, with image and group counts per split (and per
group, for up to :data:`MAX_GROUP_METRICS` groups) as metrics. The ``satclip`` kind also writes
the CSV's vectors as an image embedding table (``embeddings_satclip_csv.parquet``).

Runs go to experiment ``urbanrepml-images-<name>``. Nothing is published when the run fails.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.analysis.splits import METHODS, assign_splits, split_counts
from urbanrepml.constants import DATASET, SOURCE_KIND, image_scope
from urbanrepml.datasets import fetch, list_datasets
from urbanrepml.errors import UrbanReprError
from urbanrepml.images import (
    SOURCE_KINDS,
    EmbeddingMeta,
    ImageEmbeddings,
    ImageIndex,
    IndexMeta,
    embedding_frame,
    publish_on_success,
    resolve_paths,
    text_column,
    write_embeddings,
    write_index,
)
from urbanrepml.params import logged, param
from urbanrepml.paths import data_dir
from urbanrepml.sources.imagery import BUILDERS, BuildResult
from urbanrepml.stages.base import Stage
from urbanrepml.tables import file_digest

MAX_GROUP_METRICS = 50
MAX_SOURCE_DATASETS = 50
FOLDER_KINDS = ("chips", "photos")
FILE_SUFFIXES = {"mapillary": (".jsonl", ".ndjson", ".csv", ".parquet"), "satclip": (".csv",),
                 "concepts": (".csv",), "buildings": (".jsonl", ".ndjson")}
SATCLIP_EMBEDDINGS = "satclip_csv"


@dataclass
class Params:
    """Parameters of the ``images`` entry point."""

    dataset: str = param("naip_north_dakota", "a registered dataset name, or a folder or file path")
    kind: str = param("chips", "what the source is", choices=SOURCE_KINDS)
    name: str | None = param(None, "name of the index (default: the dataset name, or the file or folder name)")
    file: str | None = param(None, "the metadata file inside a registered dataset's folder (kinds other than chips, photos)")
    chip_px: int = param(32, "chips: chip side in pixels")
    stride_px: int = param(0, "chips: step between chips in pixels (0: chip_px)")
    max_nodata: float = param(0.0, "chips: largest share of nodata pixels in a kept chip")
    date: str | None = param(None, "chips: acquisition date of scenes whose file name holds none (ISO)")
    sequences: str | None = param(None, "photos: sidecar JSON of sequences (default: sequence_database.json when present)")
    crs: str = param("EPSG:4326", "satclip: CRS of the WKT points")
    split: str = param("group", "how to assign train/val/test (never cutting a group)", choices=METHODS)
    ratios: str = param("0.8,0.15,0.05", "train,val,test shares for split group or blocks")
    train_until: str | None = param(None, "split time: last year/month/date of training")
    val_until: str | None = param(None, "split time: last year/month/date of validation")
    block_resolution: int = param(6, "split blocks: H3 resolution of the spatial blocks")
    seed: int = param(0, "salt of the stable hash that orders groups and blocks")


def index_dir(name: str) -> Path:
    """Where index ``name`` and its embedding tables live: ``<data dir>/images/<name>``."""
    return data_dir() / "images" / name


def index_path(name: str) -> Path:
    """``<data dir>/images/<name>/index.parquet``."""
    return index_dir(name) / "index.parquet"


def clean_name(text: str) -> str:
    """A name usable in folders and experiment names (letters, digits, ``_``, ``-``, ``.``)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")
    if not name:
        raise UrbanReprError(f"parameter name: {text!r} leaves no usable name; use letters, digits, '_' or '-'")
    return name


def resolve_source(p: Params) -> tuple[Path, str]:
    """(the folder or file the builder reads, the index name)."""
    registered = p.dataset in list_datasets()
    if registered:
        folder = fetch(p.dataset)
        name = p.name or p.dataset
    else:
        folder = Path(p.dataset).expanduser()
        if not folder.exists():
            raise UrbanReprError(f"dataset {p.dataset!r} is neither a registered dataset ({', '.join(list_datasets())}) "
                                 "nor an existing folder or file")
        name = p.name or (folder.stem if folder.is_file() else folder.resolve().name)
    if p.kind in FOLDER_KINDS:
        if p.file:
            folder = folder / p.file
        return folder, clean_name(name)
    if folder.is_file():
        return folder, clean_name(name)
    if p.file:
        return folder / p.file, clean_name(name)
    candidates = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in FILE_SUFFIXES[p.kind])
    if len(candidates) != 1:
        found = ", ".join(f.name for f in candidates[:5]) or "none"
        raise UrbanReprError(f"kind {p.kind}: {folder} holds {len(candidates)} metadata file(s) ({found}); "
                             f"name one with --file")
    return candidates[0], clean_name(name)


def build(p: Params, source: Path) -> BuildResult:
    """Run the builder of ``p.kind`` on ``source`` with the parameters that kind takes."""
    builder = BUILDERS[p.kind]
    if p.kind == "chips":
        return builder(source, chip_px=p.chip_px, stride_px=p.stride_px, max_nodata=p.max_nodata, date=p.date)
    if p.kind == "photos":
        return builder(source, sequences=p.sequences)
    if p.kind == "satclip":
        return builder(source, crs=p.crs)
    return builder(source)


def run_images_stage(p: Params) -> ImageIndex:
    """Build, split, write and log the index; return it (see the module docstring)."""
    import mlflow

    from urbanrepml.tracking import log_frame_input, log_source_files, stage_run

    if p.kind not in SOURCE_KINDS:
        raise UrbanReprError(f"parameter kind: expected one of {', '.join(SOURCE_KINDS)}, got {p.kind!r}")
    source, name = resolve_source(p)
    with stage_run("images", image_scope(name), params=logged(p), tags={DATASET: name, SOURCE_KIND: p.kind},
                   run_name=f"images-{p.kind}") as run:
        start = time.perf_counter()
        if source.is_file():
            log_source_files({source.name: source})
        result = build(p, source)
        frame = result.frame
        log_image_files(frame, result.root, source, log_source_files)
        frame["split"] = text_column(assign_splits(frame, p.split, ratios=p.ratios, train_until=p.train_until,
                                                   val_until=p.val_until, block_resolution=p.block_resolution,
                                                   salt=str(p.seed)), frame.index)
        meta = IndexMeta(dataset=name, source_kind=p.kind, producer_run_id=run.info.run_id,
                         extra={"source": str(source), "split": p.split, **result.settings})
        index = ImageIndex(frame=frame, meta=meta, root=result.root)
        final = index_path(name)
        targets = [final]
        if result.embeddings is not None:
            targets.append(index_dir(name) / f"embeddings_{SATCLIP_EMBEDDINGS}.parquet")
        with publish_on_success(*targets) as staged:
            write_index(index, staged[0], root=final.parent)
            if result.embeddings is not None:
                table = ImageEmbeddings(
                    embedding_frame(result.embeddings, frame.index),
                    EmbeddingMeta(dataset=name, encoder=SATCLIP_EMBEDDINGS, weights_digest=file_digest(source),
                                  index_digest=file_digest(staged[0]), producer_run_id=run.info.run_id,
                                  extra={"source": result.embeddings_name}))
                write_embeddings(table, staged[1])
            metrics = {"images": len(frame), "groups": int(frame["group"].nunique()), "seconds": time.perf_counter() - start,
                       **{k: float(v) for k, v in result.counts.items()}, **split_counts(frame)}
            if "identity" in frame.columns:
                metrics["identities"] = int(frame["identity"].nunique())
            metrics.update(group_metrics(frame))
            mlflow.log_metrics(metrics)
            mlflow.log_params({f"resolved.{k}": v for k, v in result.settings.items()})
            for path in staged:
                mlflow.log_artifact(str(path), artifact_path="images")
            log_frame_input(frame.reset_index(), f"{name}-index", final, context="images")
            note = (f"{name}: {len(frame):,} images in {metrics['groups']:,} group(s) ({p.kind}); "
                    + ", ".join(f"{s} {metrics[f'images_{s}']:,}" for s in ("train", "val", "test", "unassigned")))
            mlflow.set_tag("mlflow.note.content", "\n".join([note, *result.notes]))
            print(note)
            for line in result.notes:
                print(line)
        index.path = final
        print(f"index {final}")
        print(f"run {run.info.run_id}")
    return index


def log_image_files(frame: pd.DataFrame, root: Path | None, source: Path, log_source_files) -> None:
    """Log the image files (scenes, photos) as input datasets with their digests.

    Only when there are at most :data:`MAX_SOURCE_DATASETS` of them (the index, logged as a dataset too,
    lists them all).
    """
    files = pd.unique(resolve_paths(frame["path"].tolist(), root))
    if len(files) > MAX_SOURCE_DATASETS or (len(files) == 1 and Path(files[0]) == source.resolve()):
        return
    base = source if source.is_dir() else source.parent
    names = {}
    for f in map(Path, files):
        try:
            names[f.relative_to(base.resolve()).as_posix()] = f
        except ValueError:
            names[str(f)] = f
    log_source_files(names, context="images")


def group_metrics(frame: pd.DataFrame) -> dict[str, float]:
    """Images per group (``group_images.<group>``), or the smallest, median and largest group size.

    Per group when there are at most :data:`MAX_GROUP_METRICS` groups, else the three sizes.
    """
    sizes = frame.groupby("group").size()
    if len(sizes) <= MAX_GROUP_METRICS:
        return {f"group_images.{re.sub(r'[^A-Za-z0-9_./ -]+', '_', str(g))[:200]}": float(n) for g, n in sizes.items()}
    return {"group_images_min": float(sizes.min()), "group_images_median": float(np.median(sizes)),
            "group_images_max": float(sizes.max())}


def run(p: Params) -> ImageIndex:
    """The ``images`` entry point (see :func:`run_images_stage`)."""
    return run_images_stage(p)


STAGES = {"images": Stage("images", "build an image index (chips, photos, metadata) with splits that keep groups whole, logged",
                          Params, run)}
