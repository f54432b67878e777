"""Attention-matching dataset distillation (DM, DataDAM, ATOM) and its evaluation.

This package never imports avalanche or optuna; ``continual`` and ``nas`` build on it.
"""

__version__ = "0.1.0"
# Bumped whenever a change alters what a stage computes (a synthetic set, a trained model's
# accuracy); part of every artifact-cache key, so stale results are never reused.
ALGORITHM_VERSION = 1
