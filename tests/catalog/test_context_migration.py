"""catalog 0002 fills ``FineTunedModel.context`` from the old ``rope`` of existing rows: every
key set that was ever written there becomes a valid ContextSpec."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest

from gpu_runtime.contract import ROPE_METHODS, ContextSpec

migration = importlib.import_module("longtune.catalog.migrations.0002_fine_tuned_model_context")
JOB = SimpleNamespace(rope_method="ntk", rope_factor=8.0)


@pytest.mark.parametrize(
    ("rope", "context_length", "job", "expected"),
    [
        # What the trainer saved (training_summary.json "rope" = config.longtune_rope)
        (
            {"method": "yarn", "factor": 4.0, "original_context_length": 32, "context_length": 128},
            128,
            JOB,
            ContextSpec(32, 128, "yarn", 4.0),
        ),
        # The worker's fallback when the summary had none
        ({"type": "linear", "factor": 2.0}, 128, None, ContextSpec(64, 128, "linear", 2.0)),
        # Nothing recorded: the job's fields, then the base model
        ({}, 512, JOB, ContextSpec(64, 512, "ntk", 8.0)),
        ({}, 64, None, ContextSpec(64, 64, "none", 1.0)),
        # A method the trainer no longer knows is not carried over as if it were one
        ({"method": "made-up", "factor": 0.5}, 32, None, ContextSpec(64, 32, "none", 1.0)),
    ],
)
def test_old_rope_becomes_a_context_spec(rope, context_length, job, expected):
    context = migration.context_from_rope(rope, context_length, 64, job)
    assert ContextSpec.from_dict(context) == expected


def test_the_migration_knows_the_current_rope_methods():
    assert migration.ROPE_METHODS == ROPE_METHODS
