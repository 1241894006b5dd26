from django.apps import AppConfig


class FinetuningConfig(AppConfig):
    name = "longtune.finetuning"
    label = "finetuning"
    verbose_name = "Fine-tuning"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from longtune.finetuning.quotas import register_usage_providers

        register_usage_providers()
