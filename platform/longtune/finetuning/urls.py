"""Fine-tuning routes, mounted under /v1/ (namespace "v1") by longtune.urls."""

from rest_framework.routers import SimpleRouter

from longtune.finetuning.views import FineTuningJobViewSet

router = SimpleRouter(trailing_slash=False)
router.register("fine_tuning/jobs", FineTuningJobViewSet, basename="fine_tuning_job")

urlpatterns = router.urls
