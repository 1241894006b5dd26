"""The compute tests train through real workers too: reuse the fine-tuning fixtures."""

from __future__ import annotations

from tests.finetuning.conftest import shared_storage, tiny_base_dir  # noqa: F401  (fixtures)
