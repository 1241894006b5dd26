"""BaseModel and FineTunedModel move here from the finetuning app IN STATE ONLY.

Their tables keep their names (``finetuning_basemodel``, ``finetuning_finetunedmodel``), so no
row is copied and nothing in the database changes: ``database_operations`` is empty. The
finetuning app drops the old state in its 0002 and every foreign key is re-pointed in state
(finetuning 0002, inference 0003). Staff permissions follow the models: their content types
are relabelled (on a fresh database none exist yet and this touches nothing).
"""

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models

import longtune.api.ids

MOVED = ("basemodel", "finetunedmodel")


def relabel_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="finetuning", model__in=MOVED).update(app_label="catalog")


def unrelabel_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label="catalog", model__in=MOVED).update(app_label="finetuning")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("finetuning", "0001_initial"),
        ("tenancy", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="BaseModel",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "name",
                            models.CharField(
                                max_length=100,
                                unique=True,
                                validators=[
                                    django.core.validators.RegexValidator(
                                        "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
                                    )
                                ],
                            ),
                        ),
                        (
                            "location",
                            models.CharField(
                                help_text="Local directory or s3://bucket/prefix", max_length=1000
                            ),
                        ),
                        (
                            "original_context_length",
                            models.PositiveIntegerField(
                                help_text="Context the model was pre-trained at (RoPE factor = target / this).",
                                validators=[django.core.validators.MinValueValidator(2)],
                            ),
                        ),
                        (
                            "max_context_length",
                            models.PositiveIntegerField(
                                help_text="Longest context a job may ask for.",
                                validators=[django.core.validators.MinValueValidator(2)],
                            ),
                        ),
                        (
                            "is_public",
                            models.BooleanField(
                                default=True, help_text="Offered to every organization."
                            ),
                        ),
                        ("description", models.CharField(blank=True, max_length=500)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "org",
                            models.ForeignKey(
                                blank=True,
                                help_text="A non-public model is offered to this organization only.",
                                null=True,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="private_base_models",
                                to="tenancy.organization",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "finetuning_basemodel",
                        "ordering": ["name"],
                    },
                ),
                migrations.CreateModel(
                    name="FineTunedModel",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("public_id", longtune.api.ids.PublicIdField(prefix="ftm_")),
                        ("name", models.CharField(max_length=300, unique=True)),
                        ("method", models.CharField(default="lora", max_length=10)),
                        ("context_length", models.PositiveIntegerField()),
                        ("rope", models.JSONField(default=dict)),
                        ("artifact_prefix", models.CharField(max_length=500)),
                        ("artifact_bytes", models.BigIntegerField(default=0)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        (
                            "base_model",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to="catalog.basemodel",
                            ),
                        ),
                        (
                            "org",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="ft_models",
                                to="tenancy.organization",
                            ),
                        ),
                        (
                            "job",
                            models.OneToOneField(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="result_model",
                                to="finetuning.finetuningjob",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "finetuning_finetunedmodel",
                        "ordering": ["pk"],
                    },
                ),
            ],
        ),
        migrations.RunPython(relabel_content_types, unrelabel_content_types),
    ]
