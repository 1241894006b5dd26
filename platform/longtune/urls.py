"""Root URLconf. Every public API route lives under /v1/ in the "v1" namespace.

Apps plug in by adding ONE line to ``V1_PATTERNS``: ``path("", include("longtune.<app>.urls"))``.
Routes under /v1/ are covered automatically by the tenant-isolation test
(tests/platform/test_tenant_isolation.py), which walks this URLconf.
"""

from django.contrib import admin
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

V1_PATTERNS = [
    path("", include("longtune.tenancy.urls")),
    path("", include("longtune.finetuning.urls")),
    path("", include("longtune.catalog.urls")),
    path("", include("longtune.datasets.urls")),
    path("", include("longtune.inference.urls")),
    path("", include("longtune.evaluation.urls")),
    path("", include("longtune.provisioning.urls")),
    path("", include("longtune.billing.urls")),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="openapi-schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="v1:openapi-schema"), name="docs"),
]

urlpatterns = [
    path("v1/", include((V1_PATTERNS, "v1"))),
    path("admin/", admin.site.urls),
    # The embedded default runs one ASGI process and no separate static server: serve the
    # admin's and Swagger UI's (drf_spectacular_sidecar, no CDN) static files from the app.
    re_path(r"^static/(?P<path>.*)$", serve_static, {"insecure": True}),
    path("", include("longtune.dashboard.urls")),  # the web dashboard: /, /login, /o/<slug>/...
]

handler404 = "longtune.api.errors.handler404"
handler500 = "longtune.api.errors.handler500"
