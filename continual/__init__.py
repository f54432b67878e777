"""Class-incremental learning with synthetic replay memories, as an Avalanche extension.

Avalanche imports ``qpsolvers``, which warns at import that no QP solver is installed; only
Avalanche's GEM strategy needs one, so the toolkit imports it once here with that warning
silenced (nothing else is filtered). ``continual.config`` stays importable without Avalanche.
"""

import warnings as _warnings

with _warnings.catch_warnings():
    _warnings.filterwarnings("ignore", message="no QP solver found")
    try:
        import qpsolvers  # noqa: F401
    except ImportError:  # pragma: no cover - Avalanche without its GEM dependency
        pass
