"""`noa keys` against the SQLite database under $NOA_HOME and against PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from databases import fresh_database_url

from noa.cli import main as cli


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(["keys", *argv])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_create_list_rotate_revoke(
    backend: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("NOA_HOME", str(tmp_path))
    monkeypatch.setenv("NOA_KEY_SECRET", "cli-test-secret-0123456789")
    if backend == "postgres":
        monkeypatch.setenv("NOA_DATABASE_URL", fresh_database_url())
    code, out = run(capsys, "create", "--name", "cli", "--rpm", "5", "--budget-usd", "2", "--admin")
    assert code == 0
    created = json.loads(out[: out.rindex("}") + 1])
    assert created["key"].startswith("sk-noa-") and created["budget_period"] == "month"
    assert created["scopes"] == ["admin"]

    code, out = run(capsys, "list")
    assert code == 0 and created["id"] in out and created["key"] not in out
    assert created["prefix"] in out and "rpm=5" in out

    code, out = run(capsys, "rotate", created["id"])
    rotated = json.loads(out[: out.rindex("}") + 1])
    assert code == 0 and rotated["rotated_from"] == created["id"]

    code, out = run(capsys, "revoke", rotated["id"])
    assert code == 0 and "revoked" in out
    code, out = run(capsys, "list", "--all")
    assert out.count("revoked") == 2
    assert run(capsys, "revoke", "key_missing")[0] == 1
    if backend == "sqlite":
        assert (tmp_path / "noa.db").exists()
