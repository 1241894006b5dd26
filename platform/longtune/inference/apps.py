from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "longtune.inference"
    label = "inference"
    verbose_name = "Inference"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from longtune.inference.quotas import register_usage_providers

        register_usage_providers()
