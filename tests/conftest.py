"""Shared fixtures: small real data (scikit-learn digits) prepared once per session."""

from __future__ import annotations

import pytest
import torch

from distill.datasets import load_dataset
from distill.distiller import prepare


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_prep(digits):
    return prepare(digits)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
