"""Landing, sign up, log in, log out, and the org switcher."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods
from rest_framework import exceptions

from longtune.dashboard import verification
from longtune.dashboard.errors import NON_FIELD, field_errors
from longtune.dashboard.forms import ThrottledLoginForm
from longtune.tenancy.serializers import InvitationAcceptSerializer, SignupSerializer
from longtune.tenancy.services.invitations import accept_invitation as accept_invitation_service
from longtune.tenancy.services.signup import ANSWER as SIGNUP_ANSWER
from longtune.tenancy.services.signup import confirm_signup, request_signup
from longtune.tenancy.throttling import PublicEndpointThrottle


def safe_next(request: HttpRequest, fallback: str) -> str:
    """``next=`` only when it stays on this site (no open redirect)."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return fallback


def home_for(request: HttpRequest) -> str:
    """Where a logged-in user lands: their org's overview, or the picker when they have several."""
    memberships = list(request.user.memberships.select_related("org")[:2])  # the user's own
    if len(memberships) == 1:
        return reverse("dashboard:overview", kwargs={"org_slug": memberships[0].org.slug})
    return reverse("dashboard:orgs")


def landing(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect(home_for(request))
    return render(request, "dashboard/landing.html")


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """The API's serializer and ``request_signup``: the same "check your inbox" page whether
    or not the email has an account (the mail says which)."""
    errors: dict[str, list[str]] = {}
    values = {"email": "", "organization_name": ""}
    if request.method == "POST":
        values = {k: request.POST.get(k, "") for k in values}
        if not PublicEndpointThrottle().allow_request(request, None):
            errors = {NON_FIELD: ["Too many sign-ups from your address. Try again later."]}
        else:
            body = SignupSerializer(data={**values, "password": request.POST.get("password", "")})
            try:
                body.is_valid(raise_exception=True)
                request_signup(
                    email=body.validated_data["email"],
                    password=body.validated_data["password"],
                    org_name=body.validated_data["organization_name"],
                    request=request,
                )
            except exceptions.APIException as exc:
                errors = field_errors(exc)
            else:
                return render(
                    request,
                    "dashboard/signup_sent.html",
                    {"email": body.validated_data["email"], "message": SIGNUP_ANSWER},
                )
    status = 400 if errors else 200
    return render(
        request, "dashboard/signup.html", {"errors": errors, "values": values}, status=status
    )


@require_http_methods(["GET", "POST"])
def signup_confirm(request: HttpRequest, token: str) -> HttpResponse:
    """The link from the signup mail. GET only shows a button (mail scanners open links);
    the POST creates the organization and logs the new owner in."""
    if request.method == "POST":
        try:
            created = confirm_signup(token=token, request=request)
        except exceptions.APIException:
            return render(request, "dashboard/verify_email_invalid.html", status=400)
        login(request, created.user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome! {created.org.name} is ready.")
        return redirect("dashboard:overview", org_slug=created.org.slug)
    return render(request, "dashboard/signup_confirm.html")


@require_http_methods(["GET", "POST"])
def accept_invitation(request: HttpRequest, token: str) -> HttpResponse:
    """The invitation link: the invitee's email and a password (new account, or the existing
    account's password), through the API's serializer and ``accept_invitation`` service."""
    errors: dict[str, list[str]] = {}
    values = {"email": request.POST.get("email", ""), "name": request.POST.get("name", "")}
    if request.method == "POST":
        if not PublicEndpointThrottle().allow_request(request, None):
            errors = {NON_FIELD: ["Too many attempts from your address. Try again later."]}
        else:
            body = InvitationAcceptSerializer(
                data={**values, "token": token, "password": request.POST.get("password", "")}
            )
            try:
                body.is_valid(raise_exception=True)
                accepted = accept_invitation_service(**body.validated_data, request=request)
            except exceptions.APIException as exc:
                errors = field_errors(exc)
            else:
                user = accepted.membership.user
                login(request, user, backend="django.contrib.auth.backends.ModelBackend")
                org = accepted.membership.org
                messages.success(request, f"You joined {org.name} as {accepted.membership.role}.")
                return redirect("dashboard:overview", org_slug=org.slug)
    status = 400 if errors else 200
    return render(
        request,
        "dashboard/accept_invitation.html",
        {"errors": errors, "values": values},
        status=status,
    )


def verify_email(request: HttpRequest, token: str) -> HttpResponse:
    """The link from the verification mail (GET: mail clients open it; it only confirms)."""
    user = verification.user_for_token(token)
    if user is None:
        return render(request, "dashboard/verify_email_invalid.html", status=400)
    verification.mark_verified(user)
    messages.success(request, f"{user.email} is confirmed.")
    return redirect(home_for(request) if request.user.is_authenticated else "dashboard:login")


@login_required
@require_http_methods(["POST"])
def resend_verification(request: HttpRequest) -> HttpResponse:
    if request.user.email_verified_at is None:
        verification.send_verification_email(request, request.user)
        messages.success(request, f"We sent a new confirmation link to {request.user.email}.")
    return redirect(safe_next(request, home_for(request)))


class LoginView(auth_views.LoginView):
    template_name = "dashboard/login.html"
    authentication_form = ThrottledLoginForm
    redirect_authenticated_user = True

    def get_default_redirect_url(self) -> str:
        return home_for(self.request)

    def get_success_url(self) -> str:
        return safe_next(self.request, home_for(self.request))


class LogoutView(auth_views.LogoutView):
    next_page = "dashboard:landing"


# Password reset: Django's views (signed, single-use, time-limited tokens; the same answer
# whether or not the email has an account), with the dashboard's templates and URL names. The
# mail goes through settings.EMAIL_BACKEND (console by default, SMTP from the environment).
class PasswordResetView(auth_views.PasswordResetView):
    template_name = "dashboard/password_reset_form.html"
    email_template_name = "dashboard/password_reset_email.txt"
    subject_template_name = "dashboard/password_reset_subject.txt"
    success_url = reverse_lazy("dashboard:password_reset_done")


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "dashboard/password_reset_done.html"


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "dashboard/password_reset_confirm.html"
    success_url = reverse_lazy("dashboard:password_reset_complete")


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "dashboard/password_reset_complete.html"


@login_required
def orgs(request: HttpRequest) -> HttpResponse:
    memberships = request.user.memberships.select_related("org")
    return render(
        request,
        "dashboard/orgs.html",
        {"memberships": memberships.order_by("org__name"), "my_memberships": memberships},
    )


def switch_org(request: HttpRequest) -> HttpResponse:
    """The switcher's form (GET, works without JS): go to the chosen org's overview; a slug that
    is not the user's is a 404 there."""
    slug = request.GET.get("org", "")
    if not slug:
        return redirect("dashboard:orgs")
    return redirect("dashboard:overview", org_slug=slug)
