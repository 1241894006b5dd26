"""`TrainConfig` and its option lists, re-exported from `gpu_runtime.contract`.

They live in the contract module because the torch-free web tier builds the same dataclass
the worker trains with; this module keeps `from gpu_runtime.config import TrainConfig` working
for the GPU side.
"""

from __future__ import annotations

from gpu_runtime.contract import (
    ALL_LINEAR,
    ATTENTION_IMPLEMENTATIONS,
    DTYPES,
    LR_SCHEDULES,
    METHODS,
    TrainConfig,
)

__all__ = [
    "ALL_LINEAR",
    "ATTENTION_IMPLEMENTATIONS",
    "DTYPES",
    "LR_SCHEDULES",
    "METHODS",
    "TrainConfig",
]
