"""The ``embed_images`` stage: an image index + a frozen encoder -> an image embedding table, logged.

Images are decoded in a thread pool (:func:`urbanrepml.sources.imagery.decode.iter_batches`; raster
scenes read once), prepared in one place (:mod:`urbanrepml.models.encoders.preprocess`) and run
through the encoder in batches under ``torch.inference_mode``, with a tqdm progress bar.

Outputs under ``<data dir>/images/<name>/``:

- ``embeddings_<encoder>.parquet``: index ``image_id``, float32 ``dim_0..``, metadata with the
  encoder, its weights digest and the index digest (:mod:`urbanrepml.images`);
- ``embeddings_<encoder>.csv``: the same vectors with a WKT ``geometry`` point per image (the
  layout Regional-SatCLIP reads).

Both are logged as artifacts, the table as an MLflow dataset named
``<name>-<encoder>-<digest prefix>``. Pooled features are cached under
``<data dir>/cache/image_features/`` keyed by the images (ids, files, windows), the encoder, its
weights digest and the input size, so a second run with the same images and weights reads them
back. Nothing is published, and the cache is not written, when the run fails.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from urbanrepml.constants import DATASET, ENCODER, WEIGHTS_DIGEST, image_scope, tag
from urbanrepml.errors import UrbanReprError
from urbanrepml.images import (
    EmbeddingMeta,
    ImageEmbeddings,
    ImageIndex,
    embedding_frame,
    publish_on_success,
    read_embeddings,
    read_index,
    write_embeddings,
    write_point_csv,
)
from urbanrepml.models.encoders import ImageEncoder, get_encoder, list_encoders
from urbanrepml.params import logged, param
from urbanrepml.paths import cache_dir
from urbanrepml.stages.base import Stage
from urbanrepml.stages.images import index_dir, index_path


@dataclass
class Params:
    """Parameters of the ``embed_images`` entry point."""

    dataset: str = param("naip_north_dakota", "an index built by the images stage (its name), or an index parquet file")
    encoder: str = param("efficientnet_lite0", "the frozen encoder", choices=tuple(list_encoders()))
    weights: str | None = param(None, "weights file, or model folder for dinov2 (default: the encoder's own)")
    input_size: int = param(0, "input side in pixels (0: the encoder's default)")
    batch_size: int = param(64, "images per forward pass")
    workers: int = param(4, "threads decoding images")
    cache: bool = param(True, "reuse pooled features cached for the same images, encoder weights and input size")


def resolve_index(dataset: str) -> Path:
    """An index file: ``dataset`` itself when it is a file, else ``<data dir>/images/<dataset>/index.parquet``."""
    path = Path(dataset).expanduser()
    if path.is_file():
        return path
    built = index_path(dataset)
    if built.is_file():
        return built
    raise UrbanReprError(f"no image index {dataset!r}: neither a file nor {built}; build it first with "
                         f"`python -m urbanrepml images --dataset {dataset} --kind ...`")


def images_key(index: ImageIndex) -> str:
    """SHA-256 over the images an index lists (ids, absolute files, windows): what the features depend on."""
    h = hashlib.sha256()
    for image_id, path, window in zip(index.frame.index, index.image_paths(), index.frame["window"], strict=False):
        h.update(f"{image_id}\0{path}\0{window or ''}\n".encode())
    return h.hexdigest()


def cache_path(index: ImageIndex, encoder: ImageEncoder) -> Path:
    """Feature cache file of (images, encoder name, weights digest, input size)."""
    key = hashlib.sha256(f"{images_key(index)}|{encoder.name}|{encoder.weights_digest}|{encoder.input_size}".encode())
    return cache_dir() / "image_features" / f"{encoder.name}-{key.hexdigest()[:32]}.parquet"


def compute_features(index: ImageIndex, encoder: ImageEncoder, *, batch_size: int, workers: int,
                     progress: bool = True) -> np.ndarray:
    """Pooled features ``(N, embed_dim)`` float32 of every image of ``index``, in row order.

    The progress bar shows only on a terminal (stderr stays one ``error:`` line when a run fails).
    """
    import torch
    from tqdm import tqdm

    from urbanrepml.models.encoders.preprocess import prepare
    from urbanrepml.sources.imagery.decode import ImageLoader, iter_batches

    size, mean, std = encoder.input_size, encoder.mean, encoder.std
    loader = ImageLoader()
    items = list(zip(index.frame.index, index.image_paths(), index.windows(), strict=False))

    def decode(item) -> torch.Tensor:
        image_id, path, window = item
        return prepare(loader.load(path, window, min_side=size, name=image_id), size, mean, std)

    out = np.empty((len(items), encoder.embed_dim), dtype=np.float32)
    done = 0
    with tqdm(total=len(items), unit="img", desc=f"embed {encoder.name}", disable=None if progress else True,
              mininterval=1.0) as bar:
        for batch in iter_batches(items, decode, batch_size, workers):
            with torch.inference_mode():
                pooled, _ = encoder(torch.stack(batch))
            out[done:done + len(batch)] = pooled.float().numpy()
            done += len(batch)
            bar.update(len(batch))
    if not np.isfinite(out).all():
        bad = index.frame.index[~np.isfinite(out).all(axis=1)]
        raise UrbanReprError(f"encoder {encoder.name} returned NaN or inf for {len(bad)} image(s), e.g. {list(bad[:3])}")
    return out


def load_cached(path: Path, index: ImageIndex, embed_dim: int) -> np.ndarray | None:
    """Cached features in index order, or None when the cache is absent or does not fit."""
    if not path.is_file():
        return None
    try:
        frame = read_embeddings(path).frame
    except UrbanReprError:
        return None
    if frame.shape[1] != embed_dim or not frame.index.equals(index.frame.index):
        return None
    return frame.to_numpy(dtype=np.float32)


def run_embed_stage(p: Params) -> ImageEmbeddings:
    """Embed every image of the index; write, cache and log the table (see the module docstring)."""
    import mlflow

    from urbanrepml.tracking import log_table_input, stage_run

    if p.batch_size <= 0:
        raise UrbanReprError(f"parameter batch_size must be positive, got {p.batch_size}")
    if p.input_size < 0:
        raise UrbanReprError(f"parameter input_size must be positive (or 0 for the encoder's default), got {p.input_size}")
    path = resolve_index(p.dataset)
    index = read_index(path)
    name = index.meta.dataset
    encoder = get_encoder(p.encoder, weights=p.weights, input_size=p.input_size or None)
    digest = encoder.weights_digest
    with stage_run("embed_images", image_scope(name), params=logged(p),
                   tags={DATASET: name, ENCODER: encoder.name}, run_name=f"embed-{encoder.name}") as run:
        start = time.perf_counter()
        index_digest = log_table_input(f"{name}-index", path, context="images")
        cached = cache_path(index, encoder)
        features = load_cached(cached, index, encoder.embed_dim) if p.cache else None
        hit = features is not None
        if features is None:
            features = compute_features(index, encoder, batch_size=p.batch_size, workers=max(1, p.workers))
        seconds = time.perf_counter() - start
        frame = embedding_frame(features, index.frame.index)
        meta = EmbeddingMeta(dataset=name, encoder=encoder.name, weights_digest=digest, index_digest=index_digest,
                             producer_run_id=run.info.run_id,
                             extra={"input_size": encoder.input_size, "weights": p.weights or "default"})
        table = ImageEmbeddings(frame, meta)
        out_dir = index_dir(name) if path == index_path(name) else path.parent
        final = [out_dir / f"embeddings_{encoder.name}.parquet", out_dir / f"embeddings_{encoder.name}.csv"]
        with publish_on_success(*final) as staged:
            write_embeddings(table, staged[0])
            write_point_csv(frame, index.frame["lat"].to_numpy(), index.frame["lon"].to_numpy(), staged[1])
            mlflow.log_params({"resolved.input_size": encoder.input_size, "weights_digest": digest[:16],
                               "index_digest": index_digest[:16]})
            mlflow.set_tags({tag(WEIGHTS_DIGEST): digest})
            log_table_input(f"{name}-{encoder.name}-{digest[:12]}", staged[0], source_uri=final[0].resolve().as_uri(),
                            context="embeddings")
            rate = len(frame) / seconds if seconds > 0 else float("nan")
            metrics = {"images": len(frame), "embed_dim": frame.shape[1], "seconds": seconds, "cache_hit": float(hit)}
            if not hit:
                metrics["images_per_second"] = rate
            mlflow.log_metrics(metrics)
            for f in staged:
                mlflow.log_artifact(str(f), artifact_path="embeddings")
            note = (f"{name}: {len(frame):,} images -> {frame.shape[1]}-d {encoder.name} (weights {digest[:12]}), "
                    + ("from the feature cache" if hit else f"{rate:.1f} images/s"))
            mlflow.set_tag("mlflow.note.content", note)
            print(note)
        table.path = final[0]
        if not hit and p.cache:
            cache_table = ImageEmbeddings(frame, EmbeddingMeta(dataset=name, encoder=encoder.name, weights_digest=digest,
                                                               extra={"input_size": encoder.input_size}))
            write_embeddings(cache_table, cached)
        print(f"embeddings {final[0]}")
        print(f"run {run.info.run_id}")
    return table


def run(p: Params) -> ImageEmbeddings:
    """The ``embed_images`` entry point (see :func:`run_embed_stage`)."""
    return run_embed_stage(p)


STAGES = {"embed_images": Stage("embed_images", "an image index + a frozen encoder -> an image embedding table (parquet and "
                                "dim_*/geometry CSV), cached and logged", Params, run)}
