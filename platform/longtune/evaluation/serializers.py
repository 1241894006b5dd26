"""Request validation and the response shape of /v1/evaluations (both in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from longtune.api.fields import ObjectTypeField, unix
from longtune.evaluation.models import EvaluationEvent, EvaluationJob, RulerTask, Suite
from longtune.tenancy.serializers import StrictInputSerializer

MAX_LENGTHS = 12
MAX_DEPTHS = 11


class EvaluationSpecSerializer(serializers.Serializer):
    """What to evaluate: the suite and its grid (everything but the model)."""

    suite = serializers.ChoiceField(choices=Suite.choices)
    lengths = serializers.ListField(
        child=serializers.IntegerField(min_value=16, max_value=1_048_576),
        min_length=1,
        max_length=MAX_LENGTHS,
        help_text="Context lengths in tokens; each must fit the model's context.",
    )
    depths = serializers.ListField(
        child=serializers.FloatField(min_value=0.0, max_value=1.0),
        min_length=1,
        max_length=MAX_DEPTHS,
        required=False,
        help_text="Needle depths for passkey (0 = start, 1 = end); default [0.1, 0.5, 0.9].",
    )
    tasks = serializers.ListField(
        child=serializers.ChoiceField(choices=RulerTask.choices),
        min_length=1,
        max_length=len(RulerTask.choices),
        required=False,
        help_text="RULER tasks for the ruler suite; default all of them.",
    )
    samples = serializers.IntegerField(
        min_value=1,
        max_value=50,
        default=1,
        help_text="Prompts per cell: keys per (length, depth) for passkey, per (task, length) "
        "for ruler.",
    )
    seed = serializers.IntegerField(min_value=0, max_value=2**31 - 1, default=0)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["suite"] != Suite.PASSKEY and attrs.get("depths"):
            raise serializers.ValidationError(
                {"depths": "depths apply to the passkey suite only."}, code="invalid"
            )
        if attrs["suite"] != Suite.RULER and attrs.get("tasks"):
            raise serializers.ValidationError(
                {"tasks": "tasks apply to the ruler suite only."}, code="invalid"
            )
        if len(set(attrs.get("tasks") or ())) != len(attrs.get("tasks") or ()):
            raise serializers.ValidationError(
                {"tasks": "each task may be listed once."}, code="invalid"
            )
        return attrs


class EvaluationCreateSerializer(EvaluationSpecSerializer):
    model = serializers.CharField(max_length=300, help_text="A base model or your ft: model.")


class FineTuneEvaluationSerializer(EvaluationSpecSerializer):
    """A fine-tune job's ``evaluation`` option: evaluate the fine-tuned model when the job
    succeeds (the suite defaults to passkey, the lengths to the job's context length)."""

    suite = serializers.ChoiceField(choices=Suite.choices, default=Suite.PASSKEY)
    lengths = serializers.ListField(
        child=serializers.IntegerField(min_value=16, max_value=1_048_576),
        min_length=1,
        max_length=MAX_LENGTHS,
        required=False,
        help_text="Context lengths in tokens, at most the job's context_length (default: "
        "[context_length], the length the eval gate of deploys reads).",
    )


class EvaluationSerializer(serializers.Serializer):
    """What GET/POST /v1/evaluations return."""

    object = serializers.CharField(help_text='Always "evaluation".')
    id = serializers.CharField()
    model = serializers.CharField()
    suite = serializers.ChoiceField(choices=Suite.choices)
    status = serializers.ChoiceField(
        choices=["queued", "running", "succeeded", "failed", "cancelled"]
    )
    lengths = serializers.ListField(child=serializers.IntegerField())
    depths = serializers.ListField(child=serializers.FloatField())
    tasks = serializers.ListField(child=serializers.ChoiceField(choices=RulerTask.choices))
    samples = serializers.IntegerField()
    seed = serializers.IntegerField()
    created_at = serializers.IntegerField()
    finished_at = serializers.IntegerField(allow_null=True)
    progress = serializers.DictField()
    results = serializers.DictField(
        allow_null=True,
        help_text="passkey: accuracy [length][depth], by_length, stderr_by_length, overall, "
        "effective_context; ruler: accuracy {task: [per length]}, stderr, by_length, "
        "stderr_by_length, overall, effective_context; perplexity: perplexity by length.",
    )
    result_file = serializers.CharField(
        allow_null=True, help_text="The heatmap PNG's file id (passkey, ruler)."
    )
    error = serializers.DictField(allow_null=True)


def evaluation_payload(job: EvaluationJob) -> dict[str, Any]:
    return {
        "object": "evaluation",
        "id": job.public_id,
        "model": job.model,
        "suite": job.suite,
        "status": job.status,
        "lengths": job.lengths,
        "depths": job.depths,
        "tasks": job.tasks,
        "samples": job.samples,
        "seed": job.seed,
        "created_at": unix(job.created_at),
        "finished_at": unix(job.finished_at) if job.finished_at else None,
        "progress": job.progress,
        "results": job.results,
        "result_file": job.result_file.public_id if job.result_file_id else None,
        "error": job.error,
    }


def event_payload(event: EvaluationEvent) -> dict[str, Any]:
    return {
        "object": "evaluation.event",
        "id": event.public_id,
        "created_at": unix(event.created_at),
        "level": event.level,
        "message": event.message,
        "data": event.data,
    }


class EvaluationGateSerializer(StrictInputSerializer):
    """GET/PUT /v1/evaluation_gate. PUT replaces it; null (or omitted) turns the org gate off."""

    object = ObjectTypeField("evaluation_gate")
    min_passkey_accuracy = serializers.FloatField(
        min_value=0.0,
        max_value=1.0,
        allow_null=True,
        required=False,
        default=None,
        help_text="Every fine-tuned model of the organization needs a succeeded passkey "
        "evaluation at its trained context scoring at least this to be deployed (endpoint "
        "create and start: 409 evaluation_required / evaluation_below_threshold, param "
        '"model"). null: no org gate.',
    )
    updated_at = serializers.SerializerMethodField()

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_updated_at(self, gate: Any) -> int | None:
        updated = getattr(gate, "updated_at", None)
        return int(updated.timestamp()) if updated else None
