"""Contract-fuzz fixtures: the tiny base model and shared storage of the fine-tuning tests, the
fake Stripe server of the billing tests (so checkout and the portal reach their 2xx)."""

from __future__ import annotations

from tests.billing.conftest import fake_stripe  # noqa: F401 - fixture
from tests.finetuning.conftest import shared_storage, tiny_base_dir  # noqa: F401 - fixtures
