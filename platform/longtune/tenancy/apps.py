from django.apps import AppConfig


class TenancyConfig(AppConfig):
    name = "longtune.tenancy"
    label = "tenancy"
    verbose_name = "Tenancy"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from longtune.tenancy import schema  # noqa: F401  (OpenAPI auth extension)
        from longtune.tenancy.quotas import register_usage_provider
        from longtune.tenancy.throttling import requests_this_minute

        # The throttle owns the request counter; quotas only report it (no import back).
        register_usage_provider("requests_per_minute", requests_this_minute)
