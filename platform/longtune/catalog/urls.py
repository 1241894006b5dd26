"""Catalog routes, mounted under /v1/ (namespace "v1") by longtune.urls."""

from rest_framework.routers import SimpleRouter

from longtune.catalog.views import CatalogModelViewSet

router = SimpleRouter(trailing_slash=False)
router.register("models", CatalogModelViewSet, basename="model")

urlpatterns = router.urls
