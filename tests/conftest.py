"""Shared test fixtures: the shipped tokenizer fixtures, each loaded once per session (loading costs seconds)."""
from __future__ import annotations

import pytest

from lib.tokenizer_loading import load_fixture_tokenizer

_TOKENIZERS: dict = {}


def cached_fixture_tokenizer(name: str):
    """`load_fixture_tokenizer(name)`, loaded once per test session (shared by tests and hypothesis properties)."""
    if name not in _TOKENIZERS:
        _TOKENIZERS[name] = load_fixture_tokenizer(name)
    return _TOKENIZERS[name]


@pytest.fixture(scope="session")
def fixture_tokenizer():
    """A loader: ``tok = fixture_tokenizer("llama3_2")``; each family is read from disk once per session."""
    return cached_fixture_tokenizer
