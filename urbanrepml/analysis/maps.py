"""Plotly maps of H3 cells shared by every stage (no MLflow here; log with tracking.log_figure)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd


def cells_map(regions_gdf, values: pd.Series | None = None, *, title: str = "", boundary=None, color_name: str = "value"):
    """Choropleth of cell polygons (``regions_gdf`` indexed by ``region_id``), optionally coloured by ``values``.

    Uses a plain lon/lat geo projection, so it renders offline (no tile server).
    """
    import plotly.graph_objects as go

    gdf = regions_gdf
    geojson = json.loads(gdf.geometry.to_json())
    for feature, rid in zip(geojson["features"], gdf.index):
        feature["id"] = rid
    z = values.reindex(gdf.index).to_numpy(dtype=float) if values is not None else np.zeros(len(gdf))
    fig = go.Figure(go.Choropleth(
        geojson=geojson, locations=list(gdf.index), z=z, featureidkey="id",
        colorscale="Viridis", showscale=values is not None, marker_line_width=0.2,
        colorbar={"title": color_name} if values is not None else None,
        hovertemplate="%{location}<br>%{z}<extra></extra>",
    ))
    if boundary is not None:
        for part in getattr(boundary, "geoms", [boundary]):
            x, y = part.exterior.xy
            fig.add_trace(go.Scattergeo(lon=list(x), lat=list(y), mode="lines", line={"color": "red", "width": 1.5}, name="boundary"))
    fig.update_geos(fitbounds="locations", visible=False)
    fig.update_layout(title=title, margin={"l": 0, "r": 0, "t": 40, "b": 0})
    return fig
