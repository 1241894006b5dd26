"""Inference routes, mounted under /v1/ (namespace "v1") by longtune.urls."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from longtune.inference.views import (
    ChatCompletionsView,
    CompletionsView,
    EndpointViewSet,
    UsageViewSet,
)

router = SimpleRouter(trailing_slash=False)
router.register("endpoints", EndpointViewSet, basename="endpoint")
router.register("usage", UsageViewSet, basename="usage")

urlpatterns = [
    path("chat/completions", ChatCompletionsView.as_view(), name="chat-completions"),
    path("completions", CompletionsView.as_view(), name="completions"),
    *router.urls,
]
