from django.apps import AppConfig


class FinetuningConfig(AppConfig):
    name = "longtune.finetuning"
    label = "finetuning"
    verbose_name = "Fine-tuning"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from longtune.catalog.services import register_in_use_check
        from longtune.compute.queues import training_queue_for
        from longtune.compute.sweep import register_redispatch, register_reroute
        from longtune.finetuning.lifecycle import JOBS
        from longtune.finetuning.quotas import register_usage_providers
        from longtune.finetuning.services import job_starting_from

        register_usage_providers()
        register_in_use_check(job_starting_from)
        register_redispatch("fine-tuning jobs", JOBS.sweep_lost_messages)
        register_reroute(
            "fine-tuning jobs", lambda queue: JOBS.reroute_waiting(queue, training_queue_for)
        )
