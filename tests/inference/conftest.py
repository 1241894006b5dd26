"""Inference test fixtures: the tiny base model and shared storage come from the fine-tuning
tests (same session-built model, same S3 bucket the workers use)."""

from __future__ import annotations

from tests.finetuning.conftest import shared_storage, tiny_base_dir  # noqa: F401 - fixtures
