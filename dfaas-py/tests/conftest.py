"""Shared fixtures: the conformance vectors beside the clone."""

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFORMANCE = ROOT.parent / "shared" / "conformance"


@pytest.fixture(scope="session")
def conformance() -> pathlib.Path:
    """``../shared/conformance``; a missing folder fails loudly, as the Rust
    tests do."""
    if not (CONFORMANCE / "README.md").is_file():
        pytest.fail(f"{CONFORMANCE} is missing: the tests need ../shared beside the clone")
    return CONFORMANCE
