"""Decode index rows to pixel arrays: photos with Pillow, raster windows from scenes read once.

- :class:`ImageLoader` turns ``(path, window)`` into an ``(H, W, bands)`` array in the file's dtype.
  A raster scene is read whole on first use and kept (up to ``max_cache_bytes``), so cutting its
  many chips costs one read; larger scenes are read window by window. JPEGs are decoded at a
  reduced scale when ``min_side`` allows it (Pillow's draft mode), which is much faster on big
  photos; EXIF orientation is applied. ``context`` > 0 widens a raster window by that many pixels on
  each side, zeros beyond the scene's edge (photos and whole files are read as they are).
- :func:`iter_batches` runs a function over items in a thread pool and yields results in order,
  batch by batch, keeping only a few batches in flight (bounded memory).

An image that does not decode raises :class:`UrbanReprError` naming it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from urbanrepml.errors import UrbanReprError

RASTER_SUFFIXES = (".tif", ".tiff")
T = TypeVar("T")
R = TypeVar("R")


class ImageLoader:
    """Reads images and raster windows; thread-safe.

    Args:
        max_cache_bytes: Scenes up to this size (all of them together) are kept in memory once read.
    """

    def __init__(self, max_cache_bytes: int = 2 << 30):
        self.max_cache_bytes = max_cache_bytes
        self._scenes: dict[str, np.ndarray | None] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._cached_bytes = 0

    def load(self, path: str, window: tuple[int, int, int, int] | None = None, *, min_side: int | None = None,
             name: str | None = None, context: int = 0) -> np.ndarray:
        """``(H, W, bands)`` pixels of ``path`` (or of ``window`` = (col_off, row_off, width, height) in it).

        Args:
            path: The image or scene file.
            window: A pixel window of a raster scene, or None for the whole file.
            min_side: The smallest side the caller needs; photos may be decoded at a reduced scale down to it.
            name: The image id, for messages.
            context: Pixels added on each side of ``window`` (zeros beyond the scene).
        """
        try:
            if window is not None and context > 0:
                return self._boundless(path, window, int(context))
            if window is not None:
                return self._window(path, window)
            if Path(path).suffix.lower() in RASTER_SUFFIXES:
                return _read_raster(path, None)
            return _read_photo(path, min_side)
        except UrbanReprError:
            raise
        except Exception as exc:  # noqa: BLE001 - Pillow and rasterio raise many types
            label = f"image {name!r} ({path})" if name else f"image {path}"
            raise UrbanReprError(f"{label} does not decode ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
                                 "remove it from the index or replace the file") from None

    def _window(self, path: str, window: tuple[int, int, int, int]) -> np.ndarray:
        col, row, w, h = window
        scene = self._scene(path)
        if scene is None:
            return _read_raster(path, window)
        if row + h > scene.shape[1] or col + w > scene.shape[2]:
            raise ValueError(f"window {window} lies outside the {scene.shape[2]}x{scene.shape[1]} px scene")
        return np.ascontiguousarray(scene[:, row:row + h, col:col + w].transpose(1, 2, 0))

    def _boundless(self, path: str, window: tuple[int, int, int, int], context: int) -> np.ndarray:
        col, row, w, h = window
        scene = self._scene(path)
        if scene is None:
            import rasterio
            from rasterio.windows import Window

            with rasterio.open(path) as src:
                data = src.read(window=Window(col - context, row - context, w + 2 * context, h + 2 * context),
                                boundless=True, fill_value=0)
            return np.ascontiguousarray(data.transpose(1, 2, 0))
        bands, height, width = scene.shape
        if row + h > height or col + w > width:
            raise ValueError(f"window {window} lies outside the {width}x{height} px scene")
        out = np.zeros((h + 2 * context, w + 2 * context, bands), dtype=scene.dtype)
        r0, c0 = row - context, col - context
        rs, cs = max(r0, 0), max(c0, 0)
        re, ce = min(r0 + h + 2 * context, height), min(c0 + w + 2 * context, width)
        out[rs - r0:re - r0, cs - c0:ce - c0] = scene[:, rs:re, cs:ce].transpose(1, 2, 0)
        return out

    def _scene(self, path: str) -> np.ndarray | None:
        """The whole scene (bands, H, W), read once; None when it does not fit in the cache."""
        with self._lock:
            if path in self._scenes:
                return self._scenes[path]
            lock = self._locks.setdefault(path, threading.Lock())
        with lock:
            with self._lock:
                if path in self._scenes:
                    return self._scenes[path]
            import rasterio

            with rasterio.open(path) as src:
                size = src.count * src.width * src.height * np.dtype(src.dtypes[0]).itemsize
                data = src.read() if self._cached_bytes + size <= self.max_cache_bytes else None
            with self._lock:
                self._scenes[path] = data
                self._cached_bytes += size if data is not None else 0
            return data


def _read_raster(path: str, window: tuple[int, int, int, int] | None) -> np.ndarray:
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        data = src.read(window=Window(*window) if window is not None else None)
    return np.ascontiguousarray(data.transpose(1, 2, 0))


def _read_photo(path: str, min_side: int | None) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        if min_side and im.format == "JPEG":
            im.draft("RGB", (min_side, min_side))
        im = ImageOps.exif_transpose(im)
        if im.mode not in ("RGB", "L", "RGBA", "I;16", "I", "F"):
            im = im.convert("RGB")
        arr = np.asarray(im)
    return arr[:, :, None] if arr.ndim == 2 else arr


def iter_batches(items: Sequence[T], func: Callable[[T], R], batch_size: int, workers: int,
                 prefetch: int = 2) -> Iterator[list[R]]:
    """``[func(x) for x in batch]`` for consecutive batches of ``items``, computed in ``workers`` threads.

    Results come in order; at most ``prefetch`` batches beyond the one being consumed are in flight.
    An exception in ``func`` is raised when its batch is reached (pending work is cancelled).
    """
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    starts = list(range(0, len(items), batch_size))
    if workers <= 1:
        for s in starts:
            yield [func(x) for x in items[s:s + batch_size]]
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: list[list[Future]] = []
        nxt = 0
        try:
            while nxt < len(starts) or pending:
                while nxt < len(starts) and len(pending) <= prefetch:
                    s = starts[nxt]
                    pending.append([pool.submit(func, x) for x in items[s:s + batch_size]])
                    nxt += 1
                batch = pending.pop(0)
                yield [f.result() for f in batch]
        finally:
            for batch in pending:
                for f in batch:
                    f.cancel()
