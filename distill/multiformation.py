"""Multi-formation (Kim et al., "Dataset Condensation via Efficient Synthetic-Data
Parameterization", ICML 2022, IDC; docs/protocols.md section 2): a stored synthetic image of
size H x W holds ``f x f`` patches of ``H/f x W/f``; decoding upsamples every patch back to
H x W (bilinear, ``align_corners=False``, as ``nn.Upsample`` in IDC's code), so one stored image
gives ``f^2`` training images. The storage budget (stored images per class) is what stays fixed.

Decoded images keep the class-major order: stored image ``t`` decodes to rows
``t*f^2 .. t*f^2 + f^2 - 1``, patch ``(i, j)`` (row ``i``, column ``j``) at ``t*f^2 + i*f + j``.
Gradients flow from the decoded images back to the stored ones.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .errors import UserError


def check_factor(factor: int, height: int, width: int) -> None:
    """One error line unless ``factor`` is a positive integer that divides both image sides."""
    if not isinstance(factor, int) or factor < 1:
        raise UserError(f"multi-formation factor must be a positive integer, got {factor!r}")
    if height % factor or width % factor:
        raise UserError(f"multi-formation factor {factor} does not divide the image size {height}x{width}")


def decode(x: Tensor, factor: int) -> Tensor:
    """``[N, C, H, W]`` stored images -> ``[N * f^2, C, H, W]`` training images."""
    if factor == 1:
        return x
    n, c, h, w = x.shape
    check_factor(factor, h, w)
    ph, pw = h // factor, w // factor
    patches = x.reshape(n, c, factor, ph, factor, pw).permute(0, 2, 4, 1, 3, 5).reshape(n * factor * factor, c, ph, pw)
    return F.interpolate(patches, size=(h, w), mode="bilinear", align_corners=False)


def decode_labels(labels: Tensor, factor: int) -> Tensor:
    """The label of every decoded image: each stored label (a class id, or a row of soft labels)
    ``f^2`` times, in decode order."""
    return labels.repeat_interleave(factor * factor, dim=0) if factor > 1 else labels


def mix(images: Tensor, factor: int) -> Tensor:
    """IDC's ``mix`` initialisation: ``[N * f^2, C, H, W]`` real images, ``f^2`` per stored image
    in decode order, each shrunk to one patch (nearest neighbour, as ``F.interpolate``'s default
    in IDC's code) -> ``[N, C, H, W]`` stored images."""
    if factor == 1:
        return images
    m, c, h, w = images.shape
    check_factor(factor, h, w)
    n, ph, pw = m // (factor * factor), h // factor, w // factor
    small = F.interpolate(images, size=(ph, pw), mode="nearest")
    return small.reshape(n, factor, factor, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)
