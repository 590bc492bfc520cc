"""A PNG of a plotly figure drawn with matplotlib (no browser, no network): the static twin of each HTML figure.

Plotly's own static export needs kaleido and a Chrome; this renders the trace kinds the project draws
with matplotlib's Agg backend:

- ``scatter``/``scattergl``: lines (``None`` breaks a line), markers (one colour, or numbers on a
  colour scale with a colour bar), and ``fill="toself"`` polygons (the cell maps);
- ``bar``: vertical or horizontal, traces on one axis side by side (``barmode="group"``);
- subplots, by the axis domains in the layout; titles, axis titles, legends, ``scaleanchor`` axes
  (equal aspect, for maps).

Other trace kinds are skipped and named in a note under the figure.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

_RGB = re.compile(r"rgba?\(([^)]*)\)")


def _colour(value, default="#1f77b4"):
    """A plotly colour string (``#hex``, ``rgb(...)``, ``rgba(...)``, a name) as a matplotlib colour."""
    if value is None:
        return default
    text = str(value).strip()
    m = _RGB.fullmatch(text)
    if m:
        parts = [float(p) for p in m.group(1).split(",")]
        rgb = [min(max(p / 255.0, 0.0), 1.0) for p in parts[:3]]
        return (*rgb, parts[3]) if len(parts) == 4 else tuple(rgb)
    return text


def _cmap(colorscale):
    """A matplotlib colour map from a plotly colour scale (a name or ``[(position, colour), ...]``)."""
    from matplotlib.colors import LinearSegmentedColormap, to_rgba
    from plotly.colors import get_colorscale

    stops = get_colorscale(colorscale) if isinstance(colorscale, str) else [list(p) for p in colorscale or []]
    if not stops:
        stops = get_colorscale("Viridis")

    return LinearSegmentedColormap.from_list("plotly", [(float(p), to_rgba(_colour(c))) for p, c in stops])


def _segments(xs, ys):
    """Runs of (x, y) between ``None`` breaks, as float arrays."""
    run_x: list[float] = []
    run_y: list[float] = []
    for x, y in zip(xs, ys, strict=False):
        if x is None or y is None:
            if run_x:
                yield np.asarray(run_x, float), np.asarray(run_y, float)
            run_x, run_y = [], []
        else:
            run_x.append(x)
            run_y.append(y)
    if run_x:
        yield np.asarray(run_x, float), np.asarray(run_y, float)


def _axis_key(ref: str | None, letter: str) -> str:
    """``"x2"`` -> ``"xaxis2"``; ``None``/``"x"`` -> ``"xaxis"``."""
    ref = ref or letter
    return f"{letter}axis{ref[1:]}"


def _text(title) -> str:
    if title is None:
        return ""
    return str(getattr(title, "text", title) or "")


def _scatter(ax, fig, trace, default: str) -> None:
    xs = list(trace.x) if trace.x is not None else []
    ys = list(trace.y) if trace.y is not None else []
    mode = trace.mode or "lines+markers"
    label = trace.name if trace.showlegend is not False and trace.name else None
    line_colour = _colour(trace.line.color if trace.line else None, default)
    if trace.fill == "toself":  # polygons (the cell maps): one collection per trace
        from matplotlib.collections import PolyCollection

        face = _colour(trace.fillcolor, "#1f77b4")
        edge = _colour(trace.line.color, "none") if trace.line and trace.line.color else "none"
        width = (trace.line.width or 0.5) * 0.5 if trace.line else 0.3
        polygons = [np.column_stack([x, y]) for x, y in _segments(xs, ys)]
        ax.add_collection(PolyCollection(polygons, facecolors=face, edgecolors=edge, linewidths=width))
        ax.autoscale_view()
        return
    if "lines" in mode:
        width = (trace.line.width or 2) * 0.6 if trace.line else 1.2
        first = True
        for x, y in _segments(xs, ys):
            ax.plot(x, y, color=line_colour, linewidth=width, label=label if first else None)
            first = False
        label = None
    if "markers" in mode and trace.marker is not None:
        m = trace.marker
        opacity = 1.0 if m.opacity is None else float(m.opacity) if np.isscalar(m.opacity) else 1.0
        colours = m.color
        numeric = colours is not None and not isinstance(colours, str) and np.size(colours) == len(xs) and len(xs) > 0
        if numeric:
            values = np.asarray(colours, dtype=float)
            cmap = _cmap(m.colorscale)
            lo = m.cmin if m.cmin is not None else np.nanmin(values)
            hi = m.cmax if m.cmax is not None else np.nanmax(values)
            points = ax.scatter(xs, ys, c=values, cmap=cmap, vmin=lo, vmax=hi, s=(m.size or 6) * 2, alpha=opacity,
                                linewidths=0, label=label)
            if m.showscale:
                bar = fig.colorbar(points, ax=ax, fraction=0.04, pad=0.02)
                bar.solids.set(alpha=1.0)
                bar.set_label(_text(m.colorbar.title) if m.colorbar else "")
        elif opacity > 0:
            ax.scatter(xs, ys, color=_colour(colours if isinstance(colours, str) else None, default), s=(m.size or 6) * 2,
                       alpha=opacity, label=label)


def _bars(ax, traces) -> None:
    n = len(traces)
    width = 0.8 / max(n, 1)
    categories: list = []
    for t in traces:
        for c in (t.y if t.orientation == "h" else t.x) or []:
            if c not in categories:
                categories.append(c)
    pos = {c: i for i, c in enumerate(categories)}
    for i, t in enumerate(traces):
        cats = list((t.y if t.orientation == "h" else t.x) or [])
        vals = np.asarray(list((t.x if t.orientation == "h" else t.y) or []), dtype=float)
        at = np.asarray([pos[c] for c in cats], float) - 0.4 + width * (i + 0.5)
        colour = _colour(t.marker.color if t.marker is not None and isinstance(t.marker.color, str) else None,
                         f"C{i}")
        if t.orientation == "h":
            ax.barh(at, vals, height=width, color=colour, label=t.name)
        else:
            ax.bar(at, vals, width=width, color=colour, label=t.name)
    ticks = np.arange(len(categories))
    if traces and traces[0].orientation == "h":
        ax.set_yticks(ticks, [str(c) for c in categories])
    else:
        ax.set_xticks(ticks, [str(c) for c in categories], rotation=30, ha="right")


def write_png(plotly_fig, path: str | Path, *, width: float = 9.0, height: float = 6.0, dpi: int = 110) -> Path:
    """Draw ``plotly_fig`` with matplotlib and save it as a PNG at ``path`` (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    layout = plotly_fig.layout
    fig = plt.figure(figsize=(width, height), dpi=dpi)
    groups: dict[tuple[str, str], list] = {}
    colours: dict = {}  # one colour per legend group across subplots, as plotly does
    skipped: set[str] = set()
    for trace in plotly_fig.data:
        if trace.type not in ("scatter", "scattergl", "bar"):
            skipped.add(trace.type)
            continue
        groups.setdefault((_axis_key(getattr(trace, "xaxis", None), "x"), _axis_key(getattr(trace, "yaxis", None), "y")),
                          []).append(trace)
    for (xkey, ykey), traces in groups.items() or {("xaxis", "yaxis"): []}.items():
        xa, ya = layout[xkey], layout[ykey]
        x0, x1 = (xa.domain or (0, 1)) if xa is not None else (0, 1)
        y0, y1 = (ya.domain or (0, 1)) if ya is not None else (0, 1)
        ax = fig.add_axes((0.1 + 0.84 * x0, 0.1 + 0.78 * y0, 0.84 * (x1 - x0) - 0.05, 0.78 * (y1 - y0) - 0.04))
        bars = [t for t in traces if t.type == "bar"]
        if bars:
            _bars(ax, bars)
        for t in traces:
            if t.type != "bar":
                group = t.legendgroup or t.name or id(t)
                colours.setdefault(group, f"C{len(colours) % 10}")
                _scatter(ax, fig, t, colours[group])
        if xa is not None:
            ax.set_xlabel(_text(xa.title))
        if ya is not None:
            ax.set_ylabel(_text(ya.title))
            if ya.scaleanchor and ya.scaleratio:
                ax.set_aspect(float(ya.scaleratio), adjustable="datalim")
        named = any(t.name and t.showlegend is not False for t in traces) and len(traces) > 1
        if named and ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=8)
        if not (ya is not None and ya.scaleanchor):  # maps stay clean
            ax.grid(alpha=0.2)
    for note in (layout.annotations or ()):  # subplot titles
        if note.text and note.xref == "paper" and note.yref == "paper":
            fig.text(0.1 + 0.84 * (note.x or 0), 0.1 + 0.78 * (note.y or 0) + 0.01, note.text, ha="center", fontsize=9)
    fig.suptitle(_text(layout.title), fontsize=11)
    if skipped:
        fig.text(0.01, 0.01, f"not drawn here (see the HTML): {', '.join(sorted(skipped))}", fontsize=7, color="grey")
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
