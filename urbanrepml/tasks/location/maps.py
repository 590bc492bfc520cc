"""The location-embedding map: an RGB image (PCA of the embeddings on a dense grid), as PNG and self-contained HTML.

No tracking here: :func:`png_map` returns a matplotlib figure, :func:`html_map` a plotly figure; the
stage writes them (the HTML with plotly.js inlined, so it opens offline, with no remote base map).
"""

from __future__ import annotations

import math

import numpy as np


def png_map(rgb: np.ndarray, bounds: tuple[float, float, float, float], title: str, points=None):
    """Matplotlib figure of ``rgb`` (H, W, 3) over ``bounds`` (lat_min, lat_max, lon_min, lon_max); ``points`` (lat, lon) dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat_min, lat_max, lon_min, lon_max = bounds
    fig, ax = plt.subplots(figsize=(7, 7), dpi=110)
    ax.imshow(rgb, extent=(lon_min, lon_max, lat_min, lat_max), origin="upper", interpolation="nearest")
    if points is not None:
        ax.scatter(points[1], points[0], s=0.4, c="k", alpha=0.25, linewidths=0)
    ax.set_aspect(1.0 / math.cos(math.radians((lat_min + lat_max) / 2)))
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def html_map(rgb: np.ndarray, bounds: tuple[float, float, float, float], title: str):
    """Plotly figure of ``rgb`` (H, W, 3) over ``bounds``; axes in degrees, aspect true at the centre latitude."""
    import plotly.graph_objects as go

    lat_min, lat_max, lon_min, lon_max = bounds
    h, w = rgb.shape[:2]
    pixels = (np.asarray(rgb)[::-1] * 255).round().astype(np.uint8)  # row 0 = south: the y axis grows north
    image = go.Image(z=pixels, x0=lon_min, dx=(lon_max - lon_min) / max(w - 1, 1), y0=lat_min,
                     dy=(lat_max - lat_min) / max(h - 1, 1), hovertemplate="lon %{x:.5f}<br>lat %{y:.5f}<extra></extra>")
    fig = go.Figure(image)
    ratio = 1.0 / math.cos(math.radians((lat_min + lat_max) / 2))
    fig.update_layout(title=title, width=760, height=760, margin=dict(l=60, r=20, t=60, b=50),
                      xaxis_title="longitude", yaxis_title="latitude")
    fig.update_yaxes(autorange=True, scaleanchor="x", scaleratio=ratio)
    return fig
