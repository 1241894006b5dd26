from django.apps import AppConfig


class DatasetsConfig(AppConfig):
    name = "longtune.datasets"
    label = "lt_datasets"  # "datasets" would read like HF's package in logs and migrations
    verbose_name = "Datasets"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from longtune.datasets.services import storage_bytes_used
        from longtune.tenancy.quotas import register_usage_provider

        register_usage_provider("storage_bytes", storage_bytes_used)
