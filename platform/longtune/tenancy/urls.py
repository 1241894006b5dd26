"""Tenancy routes, mounted under /v1/ (namespace "v1") by longtune.urls."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from longtune.tenancy.views.api_keys import ApiKeyViewSet
from longtune.tenancy.views.audit_logs import AuditLogViewSet
from longtune.tenancy.views.invitations import InvitationViewSet
from longtune.tenancy.views.members import MemberViewSet
from longtune.tenancy.views.organization import OrganizationView
from longtune.tenancy.views.public import (
    AcceptInvitationView,
    PasswordResetView,
    SignupConfirmView,
    SignupView,
)

router = SimpleRouter(trailing_slash=False)
router.register("api_keys", ApiKeyViewSet, basename="api_key")
router.register("members", MemberViewSet, basename="member")
router.register("invitations", InvitationViewSet, basename="invitation")
router.register("audit_logs", AuditLogViewSet, basename="audit_log")

urlpatterns = [
    path("organization", OrganizationView.as_view(), name="organization"),
    path("auth/signup", SignupView.as_view(), name="auth-signup"),
    path("auth/signup/confirm", SignupConfirmView.as_view(), name="auth-signup-confirm"),
    path("auth/password_reset", PasswordResetView.as_view(), name="auth-password-reset"),
    path("invitations/accept", AcceptInvitationView.as_view(), name="invitation-accept"),
    *router.urls,
]
