"""FineTuningJob.context_length / rope_method / rope_factor -> one ``context`` spec.

The three columns were three copies of one fact (the original length lived on the base model
and the factor was derivable); the spec stores all four values once, as planned."""

from django.db import migrations, models


def to_spec(apps, schema_editor):
    Job = apps.get_model("finetuning", "FineTuningJob")
    for job in Job.objects.select_related("base_model").iterator():
        job.context = {
            "original_length": int(job.base_model.original_context_length),
            "target_length": int(job.context_length),
            "rope_method": job.rope_method,
            "rope_factor": float(job.rope_factor),
        }
        job.save(update_fields=["context"])


def from_spec(apps, schema_editor):
    Job = apps.get_model("finetuning", "FineTuningJob")
    for job in Job.objects.iterator():
        job.context_length = job.context["target_length"]
        job.rope_method = job.context["rope_method"]
        job.rope_factor = job.context["rope_factor"]
        job.save(update_fields=["context_length", "rope_method", "rope_factor"])


class Migration(migrations.Migration):
    dependencies = [
        ("finetuning", "0003_dispatched_at_delete_orgfinetuningsettings"),
        ("catalog", "0002_fine_tuned_model_context"),  # reads the job columns removed here
    ]

    operations = [
        migrations.AddField(
            model_name="finetuningjob",
            name="context",
            field=models.JSONField(
                default=dict,
                help_text='{"original_length", "target_length", "rope_method", "rope_factor"}',
            ),
            preserve_default=False,
        ),
        migrations.AlterField(
            model_name="finetuningjob",
            name="context_length",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AlterField(
            model_name="finetuningjob",
            name="rope_method",
            field=models.CharField(default="", max_length=20),
        ),
        migrations.AlterField(
            model_name="finetuningjob",
            name="rope_factor",
            field=models.FloatField(default=1.0),
        ),
        migrations.RunPython(to_spec, from_spec),
        migrations.RemoveField(model_name="finetuningjob", name="context_length"),
        migrations.RemoveField(model_name="finetuningjob", name="rope_method"),
        migrations.RemoveField(model_name="finetuningjob", name="rope_factor"),
    ]
