from django.apps import AppConfig


class TenancyConfig(AppConfig):
    name = "longtune.tenancy"
    label = "tenancy"
    verbose_name = "Tenancy"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from longtune.tenancy import schema  # noqa: F401  (OpenAPI auth extension)
