"""Evaluation routes, mounted under /v1/ (namespace "v1") by longtune.urls."""

from rest_framework.routers import SimpleRouter

from longtune.evaluation.views import EvaluationViewSet

router = SimpleRouter(trailing_slash=False)
router.register("evaluations", EvaluationViewSet, basename="evaluation")

urlpatterns = router.urls
