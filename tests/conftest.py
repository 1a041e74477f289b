"""Shared fixtures: a small AesMMIT-mini built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: photos of the small dataset used by tests: 8 photos give 4 train, 2 val and 2 test
TEST_PHOTOS = ["astronaut", "camera", "chelsea", "coffee", "flower", "rocket", "china", "grace_hopper"]


@pytest.fixture(scope="session")
def mini_dataset(tmp_path_factory) -> Path:
    """Manifest path of a small AesMMIT-mini (8 photos, 64 px) built once per session."""
    from aes_lib.data import DataConfig, build_dataset

    out = tmp_path_factory.mktemp("mini") / "data"
    return build_dataset(DataConfig.from_dict(out=str(out), max_side=64, photos=TEST_PHOTOS), progress=False)
