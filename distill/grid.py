"""The picture of a synthetic set (``grid.png``): a titled mosaic with each class's images in one
block under its name, blocks laid out so that the picture is about as wide as tall at every IPC
and class count, and the number shown per class stated when not all are."""

from __future__ import annotations

import math
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

MAX_PER_CLASS = 10  # images of one class shown at most
MAX_IMAGES = 600  # images shown at most (100 classes: 6 each)
MIN_CELL = 40  # on-screen pixels of one image at least (small images are enlarged by an integer factor)
MIN_BLOCK = 72  # on-screen pixels of a class's block at least (its name fits)
PAD = 2  # pixels between the images of a block
LABEL = 16  # pixels of the class-name band above each block
GAP = 6  # pixels between blocks
MIN_WIDTH = 480  # pixels of the picture at least (the title's room)


@dataclass(frozen=True)
class Layout:
    """``per`` images of each class in a block of ``per_row`` x ``block_rows`` cells; blocks in
    ``cols`` columns and ``rows`` rows; ``scale``: the integer enlargement of each image."""

    per: int
    per_row: int
    block_rows: int
    cols: int
    rows: int
    scale: int
    cell: int  # on-screen pixels of one image

    @property
    def block_w(self) -> int:
        return self.per_row * (self.cell + PAD) - PAD

    @property
    def block_h(self) -> int:
        return LABEL + self.block_rows * (self.cell + PAD) - PAD

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the mosaic in pixels."""
        return self.cols * self.block_w + (self.cols - 1) * GAP, self.rows * self.block_h + (self.rows - 1) * GAP


def layout(num_classes: int, ipc: int, image_size: int, max_per_class: int = MAX_PER_CLASS,
           max_images: int = MAX_IMAGES, aspect: float = 4 / 3) -> Layout:
    """The block layout closest to ``aspect`` (width / height): each class shows
    ``min(ipc, max_per_class, max_images // num_classes)`` images (at least 1), as one row of up to
    10 or a near-square block; blocks fill columns x rows with the fewest empty places."""
    per = max(1, min(ipc, max_per_class, max_images // max(1, num_classes)))
    per_row = per if per <= 10 else math.ceil(math.sqrt(per))
    scale = max(1, math.ceil(MIN_CELL / image_size), math.ceil(MIN_BLOCK / (per_row * image_size)))
    cell = image_size * scale
    block_rows = math.ceil(per / per_row)
    best: tuple[float, Layout] | None = None
    for cols in range(1, num_classes + 1):
        rows = math.ceil(num_classes / cols)
        if cols > 1 and (cols - 1) * rows >= num_classes:
            continue  # a whole empty column
        lay = Layout(per, per_row, block_rows, cols, rows, scale, cell)
        w, h = lay.size
        score = abs(math.log((w / h) / aspect)) + 0.05 * (cols * rows - num_classes) / num_classes
        if best is None or score < best[0]:
            best = (score, lay)
    assert best is not None
    return best[1]


def mosaic(pixels: Tensor, labels: Tensor, num_classes: int, lay: Layout) -> np.ndarray:
    """``[H, W, 3]`` float array in [0, 1] (white background): the first ``lay.per`` images of
    every class in its block, below the block's label band (drawn later)."""
    w, h = lay.size
    out = np.ones((h, w, 3), dtype=np.float32)
    pix = pixels.detach().cpu().float().clamp(0, 1)
    if pix.shape[1] == 1:
        pix = pix.expand(-1, 3, -1, -1)
    for k in range(num_classes):
        imgs = pix[labels.cpu() == k][: lay.per]
        imgs = imgs.repeat_interleave(lay.scale, 2).repeat_interleave(lay.scale, 3).permute(0, 2, 3, 1).numpy()
        bx, by = (k % lay.cols) * (lay.block_w + GAP), (k // lay.cols) * (lay.block_h + GAP) + LABEL
        for i, img in enumerate(imgs):
            x, y = bx + (i % lay.per_row) * (lay.cell + PAD), by + (i // lay.per_row) * (lay.cell + PAD)
            out[y : y + lay.cell, x : x + lay.cell] = img
    return out


def shown(title: str, per: int, ipc: int) -> str:
    """``title``, saying how many images of each class are shown when not all."""
    return title if per >= ipc else f"{title} (first {per} of {ipc} per class shown)"


def fit_name(name: str, width_px: int, font_px: float) -> str:
    """``name`` cut (with an ellipsis) to about what fits in ``width_px`` at ``font_px``."""
    fits = max(3, int(width_px / (0.6 * font_px)))
    return name if len(name) <= fits else name[: fits - 1] + "…"


def save_grid(path: str | os.PathLike[str], pixels: Tensor, labels: Tensor, class_names: list[str],
              title: str, ipc: int, max_per_class: int = MAX_PER_CLASS) -> Path:
    """Write the titled grid of a set's images (``pixels`` in [0, 1], ``[N, C, H, W]``) as PNG
    at one screen pixel per mosaic pixel."""
    from .report import figure, save_figure

    k = len(class_names)
    lay = layout(k, ipc, int(pixels.shape[-1]), max_per_class)
    img = mosaic(pixels, labels, k, lay)
    title = shown(title, lay.per, ipc)
    w, h = lay.size
    dpi, width, title_pt = 100, max(w, MIN_WIDTH), 10  # room for the title above a small mosaic
    lines = textwrap.wrap(title, max(20, int(width / (0.6 * title_pt * dpi / 72))))
    head = 12 + 16 * len(lines)
    fig, ax = figure((width / dpi, (h + head) / dpi), dpi=dpi)
    ax.set_position((0, 0, w / width, h / (h + head)))
    ax.imshow(img, interpolation="nearest", extent=(0, w, h, 0))
    ax.axis("off")
    font_pt = 7
    font_px = font_pt * dpi / 72
    for c, name in enumerate(class_names):
        bx, by = (c % lay.cols) * (lay.block_w + GAP), (c // lay.cols) * (lay.block_h + GAP)
        ax.text(bx + 1, by + LABEL - 4, fit_name(name, lay.block_w, font_px), fontsize=font_pt, va="bottom",
                ha="left", clip_on=False)
    fig.suptitle("\n".join(lines), fontsize=title_pt, y=1 - 6 / (h + head), va="top")
    return save_figure(fig, path, tight=False)


def describe(meta: dict[str, Any], factor: int, ipc: int) -> str:
    """The grid's title: dataset, method, IPC (and multi-formation factor), iterations (of a
    matching method; a selection has none)."""
    from .methods import METHODS

    method = str(meta.get("method", "?"))
    parts = [str(meta.get("dataset", "?")), method, f"IPC {ipc}"]
    if factor > 1:
        parts.append(f"multi-formation factor {factor} ({factor * factor} images in each)")
    its = meta.get("iterations")
    known = METHODS.get(method)
    if isinstance(its, int) and its > 0 and (known is None or known.kind == "match"):
        parts.append(f"{its} iterations")
    return " · ".join(parts)
