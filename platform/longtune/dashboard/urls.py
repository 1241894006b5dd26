"""Dashboard routes: public pages at the root, org pages under ``/o/<org_slug>/`` (the org in the
URL, Sentry's way). Every org page is wrapped by ``orgs.org_page``; a test walks this URLconf
and fails on an org route that is not."""

from __future__ import annotations

from django.urls import include, path

from longtune.dashboard.views import auth, billing, evaluations, org, work

app_name = "dashboard"

ORG_PATTERNS = [
    path("", org.overview, name="overview"),
    path("keys/", org.api_keys, name="api_keys"),
    path("keys/<str:key_id>/revoke", org.revoke_key, name="revoke_key"),
    path("members/", org.members, name="members"),
    path("members/invite", org.invite, name="invite"),
    path("members/invitations/<str:invitation_id>/revoke", org.revoke_invite, name="revoke_invite"),
    path("members/<str:member_id>", org.member_action, name="member_action"),
    path("audit/", org.audit_log, name="audit_log"),
    path("usage/", org.usage, name="usage"),
    path("billing/", billing.billing, name="billing"),
    path("billing/checkout", billing.billing_checkout, name="billing_checkout"),
    path("billing/portal", billing.billing_portal, name="billing_portal"),
    path("files/", work.files, name="files"),
    path("files/<str:file_id>", work.file_detail, name="file"),
    path("jobs/", work.jobs, name="jobs"),
    path("jobs/new", work.job_new, name="job_new"),
    path("jobs/<str:job_id>", work.job_detail, name="job"),
    path("jobs/<str:job_id>/metrics.json", work.job_metrics, name="job_metrics"),
    path("jobs/<str:job_id>/metrics/stream", work.job_metrics_stream, name="job_metrics_stream"),
    path("jobs/<str:job_id>/cancel", work.job_cancel, name="job_cancel"),
    path("evaluations/", evaluations.evaluations, name="evaluations"),
    path("evaluations/<str:eval_id>", evaluations.evaluation_detail, name="evaluation"),
    path(
        "evaluations/<str:eval_id>/compare",
        evaluations.evaluation_compare,
        name="evaluation_compare",
    ),
    path(
        "evaluations/<str:eval_id>/heatmap.png",
        evaluations.evaluation_heatmap,
        name="evaluation_heatmap",
    ),
    path(
        "evaluations/<str:eval_id>/cancel", evaluations.evaluation_cancel, name="evaluation_cancel"
    ),
    path("models/", work.models, name="models"),
    path("endpoints/", work.endpoints, name="endpoints"),
    path("endpoints/<str:endpoint_id>", work.endpoint_detail, name="endpoint"),
    path("endpoints/<str:endpoint_id>/chat", work.playground, name="playground"),
    path("endpoints/<str:endpoint_id>/<str:action>", work.endpoint_action, name="endpoint_action"),
]

urlpatterns = [
    path("", auth.landing, name="landing"),
    path("signup", auth.signup, name="signup"),
    path("signup/confirm/<str:token>", auth.signup_confirm, name="signup_confirm"),
    path("login", auth.LoginView.as_view(), name="login"),
    path("logout", auth.LogoutView.as_view(), name="logout"),
    path("password/reset", auth.PasswordResetView.as_view(), name="password_reset"),
    path("password/reset/sent", auth.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path(
        "password/reset/<uidb64>/<token>",
        auth.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "password/reset/complete",
        auth.PasswordResetCompleteView.as_view(),
        name="password_reset_complete",
    ),
    path("invite/<str:token>", auth.accept_invitation, name="accept_invitation"),
    path("verify-email/resend", auth.resend_verification, name="resend_verification"),
    path("verify-email/<str:token>", auth.verify_email, name="verify_email"),
    path("orgs", auth.orgs, name="orgs"),
    path("orgs/switch", auth.switch_org, name="switch_org"),
    path("o/<slug:org_slug>/", include(ORG_PATTERNS)),
]
