"""The evaluation tests share the fine-tuning tests' tiny base model and worker settings."""

from tests.finetuning.conftest import shared_storage, tiny_base_dir  # noqa: F401
