"""Dedicated-instance tests: a known inventory, and the fine-tuning fixtures for real runs."""

from __future__ import annotations

import pytest

from tests.finetuning.conftest import shared_storage, tiny_base_dir  # noqa: F401  (fixtures)


@pytest.fixture(autouse=True)
def _inventory(settings, tmp_path):
    settings.PROVISIONING_INVENTORY = "local:cpu=4;us-east:h100_80gb=16;factory:cpu=1000"
    settings.VAR_DIR = tmp_path / "var"
