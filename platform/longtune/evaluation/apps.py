from django.apps import AppConfig


class EvaluationConfig(AppConfig):
    name = "longtune.evaluation"
    label = "evaluation"
    verbose_name = "Evaluation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from longtune.compute.sweep import register_redispatch
        from longtune.evaluation.lifecycle import EVALUATIONS

        register_redispatch("evaluations", EVALUATIONS.sweep_lost_messages)
