from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from config.env import EMBEDDED_SECRET_KEY, Env, describe

ROOT = Path(__file__).resolve().parents[2]
GOOD = {
    "REBOUND_MODE": "production",
    "SECRET_KEY": "x" * 50,
    "DATABASE_URL": "postgres://rebound:pw@db:5432/rebound",
    "REDIS_URL": "redis://redis:6379/0",
    "ALLOWED_HOSTS": "rebound.example.com",
}


def _env(**overrides: str) -> Env:
    values = {**GOOD, **overrides}
    return Env(_env_file=None, **values)  # type: ignore[call-arg]


def test_it_defaults_to_the_embedded_mode_with_nothing_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REBOUND_MODE", "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    env = Env()
    assert env.embedded
    assert env.database_url.startswith("sqlite:///")
    assert env.broker_url == "filesystem://localhost//"
    assert env.secret_key == EMBEDDED_SECRET_KEY


def test_it_accepts_a_complete_production_environment() -> None:
    env = _env()
    assert not env.embedded
    assert env.broker_url == "redis://redis:6379/0"
    assert env.allowed_hosts == ["rebound.example.com"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SECRET_KEY", ""),
        ("SECRET_KEY", EMBEDDED_SECRET_KEY),
        ("DATABASE_URL", "sqlite:///x.db"),
        ("REDIS_URL", ""),
        ("ALLOWED_HOSTS", ""),
        ("DEBUG", "true"),
    ],
)
def test_it_refuses_production_without_real_values_and_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ValidationError) as error:
        _env(**{name: value})
    assert name in describe(error.value)


def test_it_names_a_malformed_variable() -> None:
    with pytest.raises(ValidationError) as error:
        _env(API_KEY_CACHE_SECONDS="forever")
    assert "API_KEY_CACHE_SECONDS" in describe(error.value)


def test_it_bounds_the_key_cache_to_thirty_seconds() -> None:
    with pytest.raises(ValidationError) as error:
        _env(API_KEY_CACHE_SECONDS="120")
    assert "API_KEY_CACHE_SECONDS" in describe(error.value)


@pytest.mark.slow
def test_it_stops_start_up_with_the_variables_name(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in GOOD}
    env.update(REBOUND_MODE="production", DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings")
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "SECRET_KEY" in result.stderr
    assert "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr
