"""BaseModel and FineTunedModel now live in the catalog app (catalog 0001): state only.

The job's foreign key is re-pointed at ``catalog.BaseModel`` and the old models leave this
app's state; their tables stay as they are (the catalog models use the same ``db_table``), so
``database_operations`` is empty. inference 0003 re-points its foreign keys before this runs.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0001_initial"),
        ("finetuning", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.AlterField(
                    model_name="finetuningjob",
                    name="base_model",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="jobs",
                        to="catalog.basemodel",
                    ),
                ),
                migrations.DeleteModel(name="FineTunedModel"),
                migrations.DeleteModel(name="BaseModel"),
            ],
        ),
    ]
