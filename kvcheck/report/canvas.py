"""Matplotlib, imported lazily and drawn with the Agg canvas only (no pyplot, no global backend
change); PNG encoding; the kernel density the drift figure draws."""
from __future__ import annotations

import io
import math

from ..errors import KvcheckError


def require_matplotlib():
    """``(matplotlib, Figure, FigureCanvasAgg)``, or a KvcheckError saying what to install."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise KvcheckError("kvcheck report draws its plots with matplotlib, which is not installed: "
                           "pip install matplotlib  (or pip install 'kvcheck[report]').") from None
    return matplotlib, Figure, FigureCanvasAgg


def figure(width: float, height: float):
    """A figure (inches) with constrained layout on its own Agg canvas."""
    _, Figure, FigureCanvasAgg = require_matplotlib()
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png(fig, dpi: int = 110) -> bytes:
    """The figure as PNG bytes, reduced to a 256-colour palette (a third of the size, no visible change
    on flat plot colours) when Pillow is there (matplotlib depends on it)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    try:
        from PIL import Image

        image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        palette = image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    except (ImportError, AttributeError):  # no Pillow, or one older than 9.1
        return buf.getvalue()
    small = io.BytesIO()
    palette.save(small, format="PNG", optimize=True)
    return small.getvalue()


def kde(values, grid):
    """Gaussian kernel density of ``values`` on ``grid`` (Silverman's bandwidth, with a floor so
    ties and single values still draw a bump)."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    g = np.asarray(grid, dtype=float)
    sd = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    iqr = float(np.subtract(*np.percentile(x, [75, 25])))
    spread = min(sd, iqr / 1.34) if iqr > 0 else sd
    span = float(g.max() - g.min()) if len(g) > 1 else 1.0
    bw = max(0.9 * spread * len(x) ** -0.2, 0.015 * span, 1e-9)
    z = (g[:, None] - x[None, :]) / bw
    return np.exp(-0.5 * z * z).sum(axis=1) / (len(x) * bw * math.sqrt(2 * math.pi))
