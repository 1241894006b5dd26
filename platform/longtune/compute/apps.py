from django.apps import AppConfig


class ComputeConfig(AppConfig):
    name = "longtune.compute"
    label = "compute"
    verbose_name = "Compute"
    default_auto_field = "django.db.models.BigAutoField"
