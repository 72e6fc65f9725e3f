"""Hygiene is part of the suite: ruff and strict mypy must be clean on every commit."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_is_clean() -> None:
    """ruff finds no lint problem in src, the SDK or tests."""
    result = _run("ruff", "check", "src", "sdk", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    """Every file is formatted as ruff formats it."""
    result = _run("ruff", "format", "--check", "src", "sdk", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    """mypy --strict accepts src/paycore, the SDK (sdk/python/src) and the tests (tests/):
    the files and import roots are those of ``[tool.mypy]`` in pyproject.toml."""
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
