from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "longtune.inference"
    label = "inference"
    verbose_name = "Inference"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from longtune.catalog.services import register_in_use_check
        from longtune.compute.sweep import register_drain, register_redispatch, register_reroute
        from longtune.inference.quotas import register_usage_providers
        from longtune.inference.services import endpoint_using, move_live_off, reroute_pending
        from longtune.inference.shared_servers import redispatch_lost_servers

        register_usage_providers()
        register_redispatch("shared servers", redispatch_lost_servers)
        register_in_use_check(endpoint_using)
        register_reroute("dedicated endpoints", reroute_pending)
        register_drain("dedicated endpoints", move_live_off)
