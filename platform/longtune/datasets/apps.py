from django.apps import AppConfig


class DatasetsConfig(AppConfig):
    name = "longtune.datasets"
    label = "lt_datasets"  # "datasets" would read like HF's package in logs and migrations
    verbose_name = "Datasets"
    default_auto_field = "django.db.models.BigAutoField"
