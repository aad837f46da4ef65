"""Fixtures of the teacher tests: scripted servers, and no ambient API key."""
from __future__ import annotations

import pytest

from tests.teacher.fakes import FakeTeacher


@pytest.fixture
def fake_teacher():
    """`start(delay_s=0.0)` -> a running `FakeTeacher`; every server started is shut down at teardown."""
    servers = []

    def start(delay_s: float = 0.0) -> FakeTeacher:
        servers.append(FakeTeacher(delay_s))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture(autouse=True)
def _no_ambient_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a developer's real key must not reach the fake server
