"""Small PNG reports for asset metadata: a contact sheet of dropped images per reason, and the semantic-balance
curve (cluster sizes of k-means over the image embeddings, sorted, on a log scale), as the paper plots it; and the
two helpers every matplotlib chart of the project goes through (`new_figure`, `figure_png`)."""

from __future__ import annotations

import io
from typing import Any, Iterable

import numpy as np


def contact_sheet(rows: Iterable[tuple[str, list[bytes]]], *, thumb: int = 96, per_row: int = 8) -> bytes:
    """PNG with one labelled strip per (reason, images); undecodable images are drawn as grey tiles."""
    from PIL import Image, ImageDraw

    rows = [(label, imgs[:per_row]) for label, imgs in rows]
    label_h = 14
    width = max(1, per_row) * (thumb + 4) + 4
    height = max(1, len(rows)) * (thumb + label_h + 6) + 4
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    y = 4
    for label, imgs in rows:
        draw.text((4, y), label, fill="black")
        y += label_h
        for k, data in enumerate(imgs):
            try:
                with Image.open(io.BytesIO(data)) as im:
                    im.draft("RGB", (thumb * 2, thumb * 2))
                    tile = im.convert("RGB")
                    tile.thumbnail((thumb, thumb))
            except Exception:  # noqa: BLE001 - a broken image is shown as a grey tile
                tile = Image.new("RGB", (thumb, thumb), (160, 160, 160))
            sheet.paste(tile, (4 + k * (thumb + 4), y))
        y += thumb + 6
    out = io.BytesIO()
    sheet.save(out, format="PNG", optimize=True)
    return out.getvalue()


def kmeans_cluster_sizes(embeddings: np.ndarray, k: int, *, iters: int = 20, seed: int = 0) -> np.ndarray:
    """Sizes of k spherical k-means clusters (k capped at n), sorted descending."""
    emb = np.asarray(embeddings, dtype=np.float32)
    n = emb.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    centres = emb[rng.choice(n, size=k, replace=False)].copy()
    assign = np.zeros(n, dtype=np.int64)
    for _ in range(iters):
        assign = np.argmax(emb @ centres.T, axis=1)
        for c in range(k):
            members = emb[assign == c]
            if len(members):
                v = members.sum(axis=0)
                centres[c] = v / (np.linalg.norm(v) + 1e-12)
    return np.sort(np.bincount(assign, minlength=k))[::-1]


def balance_curve_png(sizes: np.ndarray, *, title: str = "semantic balance") -> bytes:
    """Sorted cluster sizes on a log scale (flatter = more balanced)."""
    fig, ax = new_figure((5, 3))
    ax.plot(np.arange(1, len(sizes) + 1), np.maximum(sizes, 1), marker=".", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("cluster rank")
    ax.set_ylabel("pairs in cluster")
    ax.set_title(title)
    return figure_png(fig)


def new_figure(figsize: tuple[float, float], dpi: int = 100) -> tuple[Any, Any]:
    """(fig, ax) of a new matplotlib figure drawn off-screen (the Agg backend: no display on a worker)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize, dpi=dpi)


def figure_png(fig: Any) -> bytes:
    """The figure as PNG bytes; the figure is closed (pyplot keeps every open figure alive otherwise)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()
