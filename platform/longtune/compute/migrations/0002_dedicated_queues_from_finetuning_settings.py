"""Data: every ``OrgFinetuningSettings.dedicated_queue`` becomes an active training
``DedicatedCapacity`` on the same queue (finetuning's next migration drops the old model)."""

from django.db import migrations


def forwards(apps, schema_editor):
    settings_model = apps.get_model("finetuning", "OrgFinetuningSettings")
    capacity = apps.get_model("compute", "DedicatedCapacity")
    rows = settings_model.objects.exclude(dedicated_queue__isnull=True).exclude(dedicated_queue="")
    for row in rows.order_by("pk"):
        capacity.objects.get_or_create(
            queue=row.dedicated_queue,
            defaults={"org_id": row.org_id, "hosts": "training", "active": True},
        )


def backwards(apps, schema_editor):
    settings_model = apps.get_model("finetuning", "OrgFinetuningSettings")
    capacity = apps.get_model("compute", "DedicatedCapacity")
    active = capacity.objects.filter(active=True, hosts__in=("training", "both"))
    for row in active.order_by("created_at", "pk"):  # the newest one wins, as routing does
        settings_model.objects.update_or_create(
            org_id=row.org_id, defaults={"dedicated_queue": row.queue}
        )


class Migration(migrations.Migration):
    dependencies = [
        ("compute", "0001_dedicatedcapacity"),
        ("finetuning", "0001_initial"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
