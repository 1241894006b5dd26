"""``FineTunedModel.rope`` (never read, two different key sets) becomes ``context``: the run's
``gpu_runtime.contract.ContextSpec`` as a dict.

Existing rows are filled from what they have: the old ``rope`` (the trainer's
``{"method", "factor", "original_context_length", ...}`` or the worker's fallback
``{"type", "factor"}``), then the job's fields, then the base model; ``target_length`` is the
row's ``context_length``. The spec's shape is written out here rather than imported: a
migration must keep meaning what it meant when it was written (and platform/ does not import
gpu_runtime at module level).
"""

from django.db import migrations, models

ROPE_METHODS = ("none", "linear", "yarn", "dynamic", "ntk", "llama3")


def context_from_rope(rope: dict, context_length: int, base_original: int, job) -> dict:
    original = int(rope.get("original_context_length") or base_original)
    method = rope.get("method") or rope.get("type") or (job.rope_method if job else None)
    factor = rope.get("factor") or (job.rope_factor if job else None)
    if factor is None:
        factor = context_length / original
    return {
        "original_length": original,
        "target_length": int(context_length),
        "rope_method": method if method in ROPE_METHODS else "none",
        "rope_factor": max(1.0, float(factor)),
    }


def fill_context(apps, schema_editor):
    FineTunedModel = apps.get_model("catalog", "FineTunedModel")
    rows = FineTunedModel.objects.select_related("base_model", "job")
    for row in rows.iterator():
        row.context = context_from_rope(
            row.rope or {}, row.context_length, row.base_model.original_context_length, row.job
        )
        row.save(update_fields=["context"])


def fill_rope(apps, schema_editor):
    FineTunedModel = apps.get_model("catalog", "FineTunedModel")
    for row in FineTunedModel.objects.iterator():
        context = row.context or {}
        row.rope = {"type": context.get("rope_method"), "factor": context.get("rope_factor")}
        row.save(update_fields=["rope"])


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0001_initial"),
        ("finetuning", "0002_models_move_to_catalog"),
    ]

    operations = [
        migrations.AddField(
            model_name="finetunedmodel",
            name="context",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="ContextSpec: original_length, target_length, rope_method, rope_factor.",
            ),
        ),
        migrations.RunPython(fill_context, fill_rope),
        migrations.RemoveField(model_name="finetunedmodel", name="rope"),
    ]
