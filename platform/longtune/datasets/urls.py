"""Dataset routes, mounted under /v1/ (namespace "v1") by longtune.urls."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from longtune.datasets.upload_views import UploadViewSet
from longtune.datasets.views import FileViewSet, PiiPolicyView

router = SimpleRouter(trailing_slash=False)
router.register("files", FileViewSet, basename="file")
router.register("uploads", UploadViewSet, basename="upload")

urlpatterns = [
    path("pii_policy", PiiPolicyView.as_view(), name="pii_policy"),
    *router.urls,
]
