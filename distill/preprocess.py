"""Map pixels to network-input space and back: per-channel normalisation, then ZCA whitening.

The papers (following DC/DSA/DM) normalise with the dataset's mean/std and, on CIFAR, whiten
with kornia's ``ZCAWhitening(eps=0.1)`` fitted ONCE on the whole (normalised) training set;
train and test images go through the same transform. The fitted transform is stored with each
synthetic set (plain tensors: mean vector, whitening matrix, inverse), so a set can always be
mapped back to pixels (the DataDAM code refits ZCA on the synthetic images instead, a known
bug; see docs/protocols.md section 2).

ZCA (Eq. of kornia's ``ZCAWhitening``): with ``x`` flattened to ``[N, D]`` and ``mu`` its
mean, ``z = (x - mu) @ W`` with ``W = U diag(1 / sqrt(s + eps)) U^T`` from the eigen-
decomposition ``Cov = U diag(s) U^T``; the inverse is ``x = z @ W^{-1} + mu``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import UserError

ZCA_EPS = 0.1


@dataclass
class Preprocess:
    """Normalisation (and optional ZCA) that defines a set's network-input space."""

    mean: Tensor  # [C]
    std: Tensor  # [C]
    zca_mean: Tensor | None = None  # [D] with D = C*H*W
    zca_matrix: Tensor | None = None  # [D, D]
    zca_inverse: Tensor | None = None  # [D, D]

    @property
    def uses_zca(self) -> bool:
        return self.zca_matrix is not None

    # -- fitting ---------------------------------------------------------------------------
    @staticmethod
    def fit(
        pixels: Tensor,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        zca: bool,
        eps: float = ZCA_EPS,
        batch: int = 4096,
    ) -> "Preprocess":
        """Build the transform; with ``zca`` fit kornia's ZCA on the normalised ``pixels``.

        ``pixels`` is the whole training set (uint8 or float in [0, 1]), on any device.
        """
        pre = Preprocess(mean=torch.tensor(mean, dtype=torch.float32),
                         std=torch.tensor(std, dtype=torch.float32))
        if zca:
            from kornia.enhance import ZCAWhitening

            x = torch.cat([pre.normalize(pixels[i : i + batch]) for i in range(0, len(pixels), batch)])
            z = ZCAWhitening(eps=eps, compute_inv=True).to(x.device)
            z.fit(x)
            pre.zca_mean = z.mean_vector.detach().reshape(-1).float().cpu()
            pre.zca_matrix = z.transform_matrix.detach().float().cpu()
            pre.zca_inverse = z.transform_inv.detach().float().cpu()
        return pre

    # -- applying --------------------------------------------------------------------------
    def normalize(self, pixels: Tensor) -> Tensor:
        """uint8 or [0,1] float pixels -> (x - mean) / std, float32."""
        x = pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels.float()
        m = self.mean.to(x.device).view(1, -1, 1, 1)
        s = self.std.to(x.device).view(1, -1, 1, 1)
        return (x - m) / s

    def __call__(self, pixels: Tensor, batch: int = 8192) -> Tensor:
        """Pixels -> network-input space (normalised, then whitened if ZCA is on)."""
        out = []
        for i in range(0, max(len(pixels), 1), batch):
            x = self.normalize(pixels[i : i + batch])
            if self.uses_zca:
                flat = x.reshape(len(x), -1)
                flat = (flat - self.zca_mean.to(x.device)) @ self.zca_matrix.to(x.device)
                x = flat.reshape(x.shape)
            out.append(x)
        return torch.cat(out) if len(out) > 1 else out[0]

    def inverse(self, x: Tensor) -> Tensor:
        """Network-input space -> [0,1] pixels (unclamped; see :meth:`to_pixels`)."""
        x = x.float()
        if self.uses_zca:
            flat = x.reshape(len(x), -1) @ self.zca_inverse.to(x.device) + self.zca_mean.to(x.device)
            x = flat.reshape(x.shape)
        m = self.mean.to(x.device).view(1, -1, 1, 1)
        s = self.std.to(x.device).view(1, -1, 1, 1)
        return x * s + m

    def to_pixels(self, x: Tensor) -> Tensor:
        """Network-input space -> displayable [0,1] images (clamped)."""
        return self.inverse(x).clamp(0.0, 1.0)

    # -- serialisation (plain tensors only: loadable with weights_only=True) ---------------
    def state(self) -> dict[str, Tensor | None]:
        return {
            "mean": self.mean.cpu(),
            "std": self.std.cpu(),
            "zca_mean": None if self.zca_mean is None else self.zca_mean.cpu(),
            "zca_matrix": None if self.zca_matrix is None else self.zca_matrix.cpu(),
            "zca_inverse": None if self.zca_inverse is None else self.zca_inverse.cpu(),
        }

    @staticmethod
    def from_state(state: dict[str, Tensor | None]) -> "Preprocess":
        """Read :meth:`state` back; every entry must be a float tensor (or absent / None)."""
        keys = ("mean", "std", "zca_mean", "zca_matrix", "zca_inverse")
        for k in keys:
            v = state.get(k)
            if v is not None and not (isinstance(v, Tensor) and v.is_floating_point()):
                raise UserError(f"preprocess {k} must be a float tensor, got {type(v).__name__}")
        return Preprocess(**{k: state.get(k) for k in keys})
