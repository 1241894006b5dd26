"""Endpoints and shared servers point at the catalog's models (moved from finetuning in state
only, tables unchanged): state only, nothing changes in the database."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0001_initial"),
        ("inference", "0002_shared_servers"),
    ]
    # The old models may only leave finetuning's state once nothing points at them.
    run_before = [("finetuning", "0002_models_move_to_catalog")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.AlterField(
                    model_name="endpoint",
                    name="base_model",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="endpoints",
                        to="catalog.basemodel",
                    ),
                ),
                migrations.AlterField(
                    model_name="endpoint",
                    name="fine_tuned_model",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="endpoints",
                        to="catalog.finetunedmodel",
                    ),
                ),
                migrations.AlterField(
                    model_name="sharedserver",
                    name="base_model",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="shared_servers",
                        to="catalog.basemodel",
                    ),
                ),
            ],
        ),
    ]
