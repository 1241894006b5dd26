"""The OpenAI ``model`` object of /v1/models, for a base and for a fine-tuned model."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from longtune.catalog.models import BaseModel, FineTunedModel


def base_model_payload(model: BaseModel) -> dict[str, Any]:
    return {
        "id": model.name,
        "object": "model",
        "created": int(model.created_at.timestamp()),
        "owned_by": "longtune",
        "original_context_length": model.original_context_length,
        "max_context_length": model.max_context_length,
    }


def fine_tuned_model_payload(model: FineTunedModel) -> dict[str, Any]:
    return {
        "id": model.name,
        "object": "model",
        "created": int(model.created_at.timestamp()),
        "owned_by": model.org.public_id,
        "root": model.base_model.name,
        # LongTune extension: the fine-tuned model (or checkpoint) its job continued from
        "parent_model": model.parent_model.name if model.parent_model_id else None,
        "fine_tuning_job": model.job.public_id if model.job_id else None,
        "context_length": model.context_length,
        "method": model.method,
    }


class ModelDeletedSerializer(serializers.Serializer):
    """OpenAI's deletion object for a model (documents DELETE /v1/models/{id})."""

    id = serializers.CharField()
    object = serializers.CharField(help_text='Always "model".')
    deleted = serializers.BooleanField()
