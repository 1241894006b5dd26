"""Evaluation routes, mounted under /v1/ (namespace "v1") by longtune.urls."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from longtune.evaluation.views import EvaluationGateView, EvaluationViewSet

router = SimpleRouter(trailing_slash=False)
router.register("evaluations", EvaluationViewSet, basename="evaluation")

urlpatterns = [
    path("evaluation_gate", EvaluationGateView.as_view(), name="evaluation_gate"),
    *router.urls,
]
