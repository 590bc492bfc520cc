"""Pixels of an image index for training a geolocator from scratch, and the features of a frozen encoder.

:class:`Pixels` holds every scene (raster windows are cut from the scene read once) or photo
(resized once: shorter side to ``px``, centre square) as a ``(bands, H, W)`` canvas and cuts
batches from them: ``batch(rows, jitter_px)`` shifts each window by up to ``jitter_px`` pixels in x
and y (drawn from torch's global generator, so a resumed run sees the same shifts) - overlapping
chips at a stride of one pixel, orientation kept (aerial images are north-up: no flips or turns).
``context`` > 0 widens every raster window by that many pixels on each side (zeros beyond the scene's
edge) before it is resized to ``px``: the surroundings of a small chip (neighbouring fields, roads,
water) tell places apart far better than the chip alone. Photos are used whole.

:func:`prepare_pixels` is the one preprocessing of the pixel models, here and in the pyfunc model:
the first ``bands`` bands (fewer repeated), resized to ``px`` when the window is another size, then
``normalise``: ``chip`` standardises each band of each chip (mean 0, sd 1: what survives a change
of season, light or sensor is the pattern of fields, roads and water, not their brightness), ``unit``
divides by 255.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from urbanrepml.errors import UrbanReprError

NORMALISE = ("chip", "unit")


def prepare_pixels(x: torch.Tensor, px: int, bands: int, normalise: str) -> torch.Tensor:
    """``(B, C, h, w)`` raw pixels -> ``(B, bands, px, px)`` float32 (see the module docstring)."""
    x = x.float()
    c = x.shape[1]
    if c < bands:
        x = torch.cat([x, x[:, -1:].expand(-1, bands - c, -1, -1)], dim=1)
    x = x[:, :bands]
    if x.shape[2] != px or x.shape[3] != px:
        x = F.interpolate(x, size=(px, px), mode="bilinear", align_corners=False, antialias=x.shape[2] > px)
    if normalise == "chip":
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = x.std(dim=(2, 3), keepdim=True)
        return (x - mean) / (std + 1.0)
    return x / 255.0


def _photo_canvas(image: np.ndarray, px: int) -> np.ndarray:
    """``(H, W, C)`` -> ``(C, px, px)``: shorter side to ``px``, centre square."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    h, w = x.shape[2], x.shape[3]
    scale = px / min(h, w)
    nh, nw = max(px, round(h * scale)), max(px, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=nh < h)
    top, left = (nh - px) // 2, (nw - px) // 2
    return x[0, :, top:top + px, left:left + px].numpy()


@dataclass
class Pixels:
    """Canvases and windows of the rows of an index (see the module docstring)."""

    canvases: list[np.ndarray]
    canvas_of: np.ndarray
    windows: np.ndarray  # (n, 4) col, row, width, height
    px: int
    bands: int
    normalise: str
    context: int = 0

    @property
    def n(self) -> int:
        return len(self.canvas_of)

    def raw(self, rows: np.ndarray, jitter_px: int = 0) -> torch.Tensor:
        """``(B, C, h, w)`` uncut-from-canvas pixels of ``rows`` (shifted by up to ``jitter_px``)."""
        rows = np.asarray(rows)
        shifts = (torch.randint(-jitter_px, jitter_px + 1, (len(rows), 2)).numpy() if jitter_px > 0
                  else np.zeros((len(rows), 2), dtype=np.int64))
        out = []
        for r, (dx, dy) in zip(rows, shifts, strict=True):
            canvas = self.canvases[self.canvas_of[r]]
            col, row, w, h = self.windows[r]
            col = int(np.clip(col + dx, 0, canvas.shape[2] - w))
            row = int(np.clip(row + dy, 0, canvas.shape[1] - h))
            out.append(torch.from_numpy(np.ascontiguousarray(canvas[:, row:row + h, col:col + w])))
        sizes = {tuple(t.shape) for t in out}
        if len(sizes) > 1:
            out = [F.interpolate(t[None].float(), size=(self.px, self.px), mode="bilinear", align_corners=False)[0] for t in out]
        return torch.stack([t.float() for t in out])

    def batch(self, rows: np.ndarray, jitter_px: int = 0) -> torch.Tensor:
        """Model-ready ``(B, bands, px, px)`` pixels of ``rows``."""
        return prepare_pixels(self.raw(rows, jitter_px), self.px, self.bands, self.normalise)

    def flat(self, rows: np.ndarray, chunk: int = 512) -> np.ndarray:
        """``(len(rows), bands * px * px)`` model-ready pixels of ``rows``, unshifted (the pixel baseline's vectors)."""
        rows = np.asarray(rows)
        parts = [self.batch(rows[s:s + chunk]).reshape(len(rows[s:s + chunk]), -1).numpy()
                 for s in range(0, len(rows), chunk)]
        return np.concatenate(parts) if parts else np.zeros((0, self.bands * self.px * self.px), dtype=np.float32)


def load_pixels(index, px: int, bands: int, normalise: str = "chip", context: int = 0) -> Pixels:
    """Read every image of ``index`` (an :class:`~urbanrepml.images.ImageIndex`) once; see the module docstring.

    ``bands`` is capped by the fewest bands of any image. An image that does not decode is one error naming it.
    """
    from urbanrepml.sources.imagery.decode import ImageLoader

    if normalise not in NORMALISE:
        raise UrbanReprError(f"normalise must be one of {', '.join(NORMALISE)}, got {normalise!r}")
    if px < 8:
        raise UrbanReprError(f"input_px must be >= 8, got {px}")
    if context < 0:
        raise UrbanReprError(f"context must be >= 0 pixels, got {context}")
    pad = ((0, 0), (context, context), (context, context))
    loader = ImageLoader()
    canvases: list[np.ndarray] = []
    keys: dict[str, int] = {}
    canvas_of = np.empty(len(index.frame), dtype=np.int64)
    windows = np.empty((len(index.frame), 4), dtype=np.int64)
    for i, (image_id, path, window) in enumerate(zip(index.frame.index, index.image_paths(), index.windows(), strict=True)):
        if window is not None:
            if path not in keys:
                scene = loader.load(path, None, name=image_id)
                keys[path] = len(canvases)
                canvases.append(np.pad(np.ascontiguousarray(scene.transpose(2, 0, 1)), pad))
            canvas = canvases[keys[path]]
            col, row, w, h = window
            height, width = canvas.shape[1] - 2 * context, canvas.shape[2] - 2 * context
            if row + h > height or col + w > width:
                raise UrbanReprError(f"image {image_id!r}: window {window} lies outside its {width}x{height} px scene {path}")
            canvas_of[i] = keys[path]
            windows[i] = (col, row, w + 2 * context, h + 2 * context)  # in padded coordinates: the chip plus its context
        else:
            image = loader.load(path, None, min_side=px, name=image_id)
            if image.ndim == 2:
                image = image[:, :, None]
            canvas_of[i] = len(canvases)
            canvases.append(_photo_canvas(image, px))
            windows[i] = (0, 0, px, px)
    fewest = min(c.shape[0] for c in canvases) if canvases else bands
    return Pixels(canvases, canvas_of, windows, int(px), int(min(bands, max(fewest, 1))), normalise, int(context))


def frozen_features(index, encoder_name: str, input_size: int = 0, batch_size: int = 64, workers: int = 2,
                    cache_file=None) -> tuple[np.ndarray, object]:
    """Pooled features ``(N, D)`` of every image of ``index`` by a frozen encoder, and the encoder.

    ``cache_file`` (a path): read the features from it when it holds exactly these images, else
    compute them and write it (the ``embed_images`` feature cache).
    """
    from urbanrepml.images import EmbeddingMeta, ImageEmbeddings, embedding_frame, read_embeddings, write_embeddings
    from urbanrepml.models.encoders import get_encoder

    encoder = get_encoder(encoder_name, input_size=input_size or None)
    if cache_file is not None:
        try:
            frame = read_embeddings(cache_file).frame
            if frame.shape[1] == encoder.embed_dim and frame.index.equals(index.frame.index):
                return frame.to_numpy(dtype=np.float32), encoder
        except (UrbanReprError, OSError):
            pass
    feats = encoder_features(index, encoder, batch_size=batch_size, workers=workers)
    if cache_file is not None:
        table = ImageEmbeddings(embedding_frame(feats, index.frame.index),
                                EmbeddingMeta(dataset=index.meta.dataset, encoder=encoder.name,
                                              weights_digest=encoder.weights_digest, extra={"input_size": encoder.input_size}))
        write_embeddings(table, cache_file)
    return feats, encoder


def encoder_features(index, encoder, *, batch_size: int = 64, workers: int = 2) -> np.ndarray:
    """Pooled features of every image of ``index`` (decoded in threads, batches under inference mode)."""
    from urbanrepml.models.encoders.preprocess import prepare
    from urbanrepml.sources.imagery.decode import ImageLoader, iter_batches

    loader = ImageLoader()
    items = list(zip(index.frame.index, index.image_paths(), index.windows(), strict=True))
    size, mean, std = encoder.input_size, encoder.mean, encoder.std

    def decode(item):
        image_id, path, window = item
        return prepare(loader.load(path, window, min_side=size, name=image_id), size, mean, std)

    out = np.empty((len(items), encoder.embed_dim), dtype=np.float32)
    done = 0
    for batch in iter_batches(items, decode, batch_size, max(1, workers)):
        with torch.inference_mode():
            pooled, _ = encoder(torch.stack(batch))
        out[done:done + len(batch)] = pooled.float().numpy()
        done += len(batch)
    return out
