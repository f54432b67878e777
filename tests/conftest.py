"""Shared fixtures: small real data (scikit-learn digits) prepared once per session."""

from __future__ import annotations

import pytest
import torch

from distill.datasets import load_dataset
from distill.prepare import prepare


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_prep(digits):
    return prepare(digits)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def interrupt(monkeypatch):
    """``interrupt(owner, name, n)``: ``owner.name`` raises KeyboardInterrupt (a Ctrl-C) on its
    n-th call and runs normally before; returns the original function."""

    def apply(owner, name, n):
        real = getattr(owner, name)
        calls = []

        def wrapper(*a, **k):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*a, **k)

        monkeypatch.setattr(owner, name, wrapper)
        return real

    return apply
