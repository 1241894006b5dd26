from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The DRF plumbing every app uses (no models). Installs strict JSON typing."""

    name = "longtune.api"
    label = "longtune_api"

    def ready(self) -> None:
        from longtune.api import strict_types

        strict_types.install()
