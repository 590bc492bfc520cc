"""Plotly maps of H3 cells shared by every stage (no MLflow here; log with tracking.log_figure).

Maps are drawn on plain lon/lat axes (equal distances at the area's latitude), never on a geo or
tile base layer: plotly's geo subplots fetch a topojson world map and tile maps fetch tiles, so a
figure opened offline would stay blank. Cells are filled polygons, one trace per colour step
(``COLOUR_STEPS`` over the value range), and their centres carry the hover text and the colour bar.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

COLOUR_STEPS = 64


def _rings(geometry) -> list[tuple[list[float], list[float]]]:
    """Exterior rings (lon, lat) of a polygon or multipolygon."""
    parts = getattr(geometry, "geoms", [geometry])
    return [tuple(map(list, part.exterior.xy)) for part in parts if not part.is_empty]


def _rgb(colour: str) -> tuple[float, float, float]:
    """A plotly colour (``#hex``, ``rgb(...)``, ``rgba(...)``, a CSS name) as 0-255 floats."""
    from matplotlib.colors import to_rgb
    from plotly.colors import unlabel_rgb

    text = str(colour).strip()
    if text.startswith("rgb"):
        return tuple(float(v) for v in unlabel_rgb(text)[:3])
    return tuple(255.0 * v for v in to_rgb(text))


def _sampled(colorscale, fractions: np.ndarray) -> list[str]:
    """Colours of ``colorscale`` (a plotly name or ``[(position, colour), ...]``) at ``fractions`` in [0, 1]."""
    from plotly.colors import get_colorscale

    stops = get_colorscale(colorscale) if isinstance(colorscale, str) else [list(p) for p in colorscale]
    pos = np.array([float(p) for p, _ in stops])
    rgb = np.array([_rgb(c) for _, c in stops])
    f = np.clip(fractions, 0.0, 1.0)
    channels = [np.interp(f, pos, rgb[:, i]) for i in range(3)]
    return [f"rgb({r:.0f},{g:.0f},{b:.0f})" for r, g, b in zip(*channels, strict=False)]


def cells_map(regions_gdf, values: pd.Series | None = None, *, title: str = "", boundary=None, color_name: str = "value",
              colorscale="Viridis", zmin: float | None = None, zmax: float | None = None, zmid: float | None = None,
              colorbar: dict | None = None):
    """Map of cell polygons (``regions_gdf`` indexed by ``region_id``), optionally coloured by ``values``.

    Args:
        regions_gdf: cell polygons in EPSG:4326, index ``region_id``.
        values: one number per cell (NaN cells are drawn grey); None draws the cells only.
        title: figure title.
        boundary: a (multi)polygon drawn as a red outline; None draws none.
        color_name: colour bar title.
        colorscale: a plotly colour scale (name or list of stops).
        zmin: lower end of the colour range (default: the values' minimum).
        zmax: upper end of the colour range (default: the values' maximum).
        zmid: centre of the colour range (e.g. residuals): the range is made symmetric around it.
        colorbar: extra colour bar settings (e.g. ``tickvals``).

    Returns:
        A plotly figure on lon/lat axes; it draws without any network access.
    """
    import plotly.graph_objects as go

    gdf = regions_gdf
    fig = go.Figure()
    z = values.reindex(gdf.index).to_numpy(dtype=float) if values is not None else np.full(len(gdf), np.nan)
    finite = np.isfinite(z)
    lo = float(np.nanmin(z)) if finite.any() else 0.0
    hi = float(np.nanmax(z)) if finite.any() else 1.0
    if zmid is not None:
        half = max(abs(hi - zmid), abs(zmid - lo)) or 1.0
        lo, hi = zmid - half, zmid + half
    lo, hi = (zmin if zmin is not None else lo), (zmax if zmax is not None else hi)
    span = (hi - lo) or 1.0
    steps = np.where(finite, np.clip(np.floor((z - lo) / span * COLOUR_STEPS), 0, COLOUR_STEPS - 1), -1).astype(int)
    colours = _sampled(colorscale, (np.arange(COLOUR_STEPS) + 0.5) / COLOUR_STEPS)
    geoms = list(gdf.geometry)
    for step in np.unique(steps):
        xs: list[float | None] = []
        ys: list[float | None] = []
        for i in np.flatnonzero(steps == step):
            for x, y in _rings(geoms[i]):
                xs += [*x, None]
                ys += [*y, None]
        colour = colours[step] if step >= 0 else ("#d0d0d0" if values is not None else "#6baed6")
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", fill="toself", fillcolor=colour, hoverinfo="skip",
                                 line={"color": "rgba(255,255,255,0.6)" if values is not None else "#08519c", "width": 0.3},
                                 showlegend=False))
    centres = gdf.geometry.representative_point()
    marker: dict = {"size": 4, "opacity": 0.0}
    if values is not None:
        marker.update(color=z, colorscale=colorscale, cmin=lo, cmax=hi, showscale=True,
                      colorbar={"title": {"text": color_name}, **(colorbar or {})})
    fig.add_trace(go.Scatter(x=list(centres.x), y=list(centres.y), mode="markers", marker=marker, showlegend=False,
                             text=list(gdf.index), customdata=z,
                             hovertemplate="%{text}<br>%{customdata}<extra></extra>" if values is not None
                             else "%{text}<extra></extra>"))
    if boundary is not None:
        for x, y in _rings(boundary):
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line={"color": "red", "width": 1.5}, name="boundary",
                                     hoverinfo="skip", showlegend=False))
    lat = float(np.mean(centres.y)) if len(centres) else 0.0
    fig.update_xaxes(title_text="longitude", showgrid=False, zeroline=False)
    fig.update_yaxes(title_text="latitude", showgrid=False, zeroline=False, scaleanchor="x",
                     scaleratio=1 / max(math.cos(math.radians(lat)), 0.05))
    fig.update_layout(title=title, margin={"l": 60, "r": 20, "t": 50, "b": 50}, plot_bgcolor="white")
    return fig
