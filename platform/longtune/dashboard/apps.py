from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "longtune.dashboard"
    label = "dashboard"
    verbose_name = "Dashboard"
