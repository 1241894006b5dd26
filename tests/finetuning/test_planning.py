"""Job planning: the request's context -> the job's ContextSpec, once; the job -> TrainConfig
carrying that spec verbatim (finetuning/planning.py)."""

from __future__ import annotations

import pytest

from gpu_runtime.contract import DEFAULT_ROPE_METHOD, ContextSpec, TrainConfig
from longtune.api.errors import ApiError
from longtune.catalog.models import BaseModel
from longtune.finetuning.models import FineTuningJob
from longtune.finetuning.planning import plan_context, train_config_for

BASE = BaseModel(
    name="tiny-plan", location="/models/tiny", original_context_length=64, max_context_length=1024
)


@pytest.mark.parametrize(
    ("request_fields", "expected"),
    [
        ({"context_length": 256}, ContextSpec(64, 256, DEFAULT_ROPE_METHOD, 4.0)),
        ({"rope_scaling": {"type": "linear", "factor": 2}}, ContextSpec(64, 128, "linear", 2.0)),
        ({"context_length": 256, "rope_scaling": {"factor": 4}}, ContextSpec(64, 256, "yarn", 4.0)),
        ({}, ContextSpec(64, 64, DEFAULT_ROPE_METHOD, 1.0)),
        (
            {"context_length": 32, "rope_scaling": {"type": "none"}},
            ContextSpec(64, 32, "none", 1.0),
        ),
    ],
)
def test_plan_context(request_fields, expected):
    assert plan_context(request_fields, BASE) == expected


@pytest.mark.parametrize(
    ("request_fields", "code", "param"),
    [
        ({"context_length": 2048}, "context_length_too_large", "context_length"),
        ({"rope_scaling": {"factor": 64}}, "context_length_too_large", "context_length"),
        (
            {"context_length": 256, "rope_scaling": {"factor": 2}},
            "rope_factor_mismatch",
            "rope_scaling.factor",
        ),
    ],
)
def test_plan_context_rejects(request_fields, code, param):
    with pytest.raises(ApiError) as error:
        plan_context(request_fields, BASE)
    assert (error.value.code, error.value.param) == (code, param)


def _job(context: dict) -> FineTuningJob:
    return FineTuningJob(
        base_model=BASE,
        method="full",
        hyperparameters={"n_epochs": 1, "batch_size": 2, "learning_rate_multiplier": 1.0},
        context=context,
        seed=0,
    )


def test_train_config_carries_the_stored_spec_verbatim():
    # A factor that is NOT target / original: whatever the job stored is what trains, so a
    # recomputation anywhere on the way would show here.
    stored = {
        "original_length": 64,
        "target_length": 256,
        "rope_method": "linear",
        "rope_factor": 3.5,
    }
    job = _job(stored)
    config = train_config_for(job, output_dir="out", checkpoint_every_steps=1)
    assert config.context == ContextSpec.from_dict(stored)
    assert config.context.to_dict() == stored
    assert (job.context_length, job.rope_method, job.rope_factor) == (256, "linear", 3.5)
    assert TrainConfig.from_dict(config.to_dict()).context == config.context  # Celery round trip


def test_train_config_refuses_half_a_spec():
    with pytest.raises(ValueError, match="together with rope_factor"):
        TrainConfig(base_model="b", output_dir="o", context_length=128, original_context_length=64)
    with pytest.raises(ValueError, match="rope_factor: must be >= 1"):
        TrainConfig(
            base_model="b",
            output_dir="o",
            context_length=128,
            original_context_length=64,
            rope_factor=0.5,
        )
