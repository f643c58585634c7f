"""Shared test fixtures.

Real clips live in ``../shared/data/dyntex`` beside the checkout (research data, never copied
into the repository). Tests that need them take the ``shared_data`` fixture, which skips with a
clear reason when the folder is absent (a fresh clone).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DYNTEX_SHARED_DATA", REPO.parent / "shared" / "data" / "dyntex"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real clips not found at {SHARED_DATA} (set DYNTEX_SHARED_DATA); "
                    "they are research data and are not shipped with dyntex")
    return SHARED_DATA
