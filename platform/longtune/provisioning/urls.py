"""Dedicated-instance routes, mounted under /v1/ (namespace "v1") by longtune.urls."""

from rest_framework.routers import SimpleRouter

from longtune.provisioning.views import DedicatedInstanceViewSet

router = SimpleRouter(trailing_slash=False)
router.register("dedicated_instances", DedicatedInstanceViewSet, basename="dedicated-instance")

urlpatterns = router.urls
