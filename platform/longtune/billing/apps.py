from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "longtune.billing"
    label = "billing"
    verbose_name = "Billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from longtune.billing.sources import register_builtin_sources

        register_builtin_sources()
