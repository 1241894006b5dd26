"""Org pages: overview (quotas and usage), API keys, members, audit log, usage."""

from __future__ import annotations

from django.contrib import messages
from django.core.mail import send_mail
from django.core.paginator import Paginator
from django.db.models import Count, Sum
from django.db.models.functions import TruncDay
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from rest_framework import exceptions

from longtune.dashboard.errors import field_errors
from longtune.dashboard.orgs import org_page
from longtune.inference.models import UsageRecord
from longtune.tenancy.models import ApiKey, AuditLogEntry, Invitation, Membership
from longtune.tenancy.quotas import current_usage, effective_quota
from longtune.tenancy.roles import ALL_SCOPES, Role, role_allows, role_at_least
from longtune.tenancy.serializers import ApiKeyCreateSerializer, InvitationCreateSerializer
from longtune.tenancy.services.api_keys import check_grant, issue_api_key, revoke_api_key
from longtune.tenancy.services.invitations import create_invitation, revoke_invitation
from longtune.tenancy.services.members import change_role, remove_member

PAGE_SIZE = 50


def page_of(request: HttpRequest, queryset, size: int = PAGE_SIZE):
    return Paginator(queryset, size).get_page(request.GET.get("page"))


@org_page(read="organization.read", write="organization.read")
def overview(request: HttpRequest) -> HttpResponse:
    quota = effective_quota(request.org).as_dict()
    usage = current_usage(request.org)
    rows = [
        {"name": name, "limit": limit, "used": usage.get(name)} for name, limit in quota.items()
    ]
    return render(request, "dashboard/overview.html", {"quotas": rows})


@org_page(read="api_keys.read", write="api_keys.manage")
def api_keys(request: HttpRequest) -> HttpResponse:
    """List keys; POST creates one and shows its secret in THIS response only (never stored)."""
    errors: dict[str, list[str]] = {}
    created = None
    if request.method == "POST":
        data = {"name": request.POST.get("name", "")}
        if request.POST.get("role"):
            data["role"] = request.POST["role"]
        scopes = request.POST.getlist("scopes")
        if scopes:
            data["scopes"] = scopes
        body = ApiKeyCreateSerializer(data=data)
        try:
            body.is_valid(raise_exception=True)
            role = body.validated_data.get("role") or request.role
            granted = body.validated_data.get("scopes") or list(request.scopes)
            check_grant(
                granted_role=role,
                granted_scopes=granted,
                by_role=request.role,
                by_scopes=request.scopes,
            )
            key, secret = issue_api_key(
                org=request.org,
                created_by=request.user,
                role=role,
                scopes=granted,
                name=body.validated_data["name"],
                request=request,
            )
            created = {"key": key, "secret": secret}
        except exceptions.APIException as exc:
            errors = field_errors(exc)
    keys = ApiKey.objects.for_org(request.org).select_related("created_by").order_by("-pk")
    response = render(
        request,
        "dashboard/api_keys.html",
        {
            "keys": page_of(request, keys),
            "created": created,
            "errors": errors,
            "roles": [r for r in Role.values if role_at_least(request.role, r)],
            "scopes": ALL_SCOPES,
        },
        status=400 if errors else 200,
    )
    response["Cache-Control"] = "no-store"  # the page may carry a secret
    return response


@org_page(read="api_keys.manage", write="api_keys.manage")
def revoke_key(request: HttpRequest, key_id: str) -> HttpResponse:
    if request.method != "POST":
        return redirect("dashboard:api_keys", org_slug=request.org.slug)
    key = ApiKey.objects.for_org(request.org).filter(public_id=key_id).first()
    if key is None:
        raise Http404("No such API key.")
    revoke_api_key(key, request=request)
    messages.success(request, f"Key {key.name or key.public_id} revoked.")
    return redirect("dashboard:api_keys", org_slug=request.org.slug)


@org_page(read="members.read", write="members.manage")
def members(request: HttpRequest) -> HttpResponse:
    memberships = Membership.objects.for_org(request.org).select_related("user").order_by("pk")
    pending = (
        Invitation.objects.for_org(request.org)
        .filter(accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now())
        .select_related("invited_by")
        .order_by("-pk")
        if role_allows(request.role, "invitations.read")
        else Invitation.objects.none()
    )
    return render(
        request,
        "dashboard/members.html",
        {
            "members": page_of(request, memberships),
            "roles": Role.values,
            "invite_roles": [r for r in Role.values if role_at_least(request.role, r)],
            "invitations": pending,
        },
    )


@org_page(read="invitations.manage", write="invitations.manage")
def invite(request: HttpRequest) -> HttpResponse:
    """POST email + role: ``create_invitation`` (the API's rules), then the accept link is
    e-mailed (settings.EMAIL_BACKEND) and shown once on this response."""
    if request.method != "POST":
        return redirect("dashboard:members", org_slug=request.org.slug)
    body = InvitationCreateSerializer(
        data={"email": request.POST.get("email", ""), "role": request.POST.get("role", "member")}
    )
    try:
        body.is_valid(raise_exception=True)
        invitation, token = create_invitation(
            org=request.org,
            email=body.validated_data["email"],
            role=body.validated_data["role"],
            invited_by=request.user,
            actor_role=request.role,
            request=request,
        )
    except exceptions.APIException as exc:
        for problems in field_errors(exc).values():
            for problem in problems:
                messages.error(request, problem)
        return redirect("dashboard:members", org_slug=request.org.slug)
    link = request.build_absolute_uri(reverse("dashboard:accept_invitation", args=[token]))
    send_mail(
        subject=f"You are invited to {request.org.name} on LongTune",
        message=f"{request.user.email} invited you to join {request.org.name} as "
        f"{invitation.role}.\n\nAccept: {link}\n",
        from_email=None,
        recipient_list=[invitation.email],
        fail_silently=True,  # the link is also shown to the inviter below
    )
    response = render(
        request,
        "dashboard/invited.html",
        {"invitation": invitation, "link": link},
    )
    response["Cache-Control"] = "no-store"  # the page carries the token
    return response


@org_page(read="invitations.manage", write="invitations.manage")
def revoke_invite(request: HttpRequest, invitation_id: str) -> HttpResponse:
    if request.method == "POST":
        invitation = Invitation.objects.for_org(request.org).filter(public_id=invitation_id).first()
        if invitation is None:
            raise Http404("No such invitation.")
        revoke_invitation(invitation, request=request)
        messages.success(request, f"Invitation for {invitation.email} revoked.")
    return redirect("dashboard:members", org_slug=request.org.slug)


@org_page(read="members.manage", write="members.manage")
def member_action(request: HttpRequest, member_id: str) -> HttpResponse:
    """POST ``role=<new>`` changes the role; POST ``remove=1`` removes the member. The service
    applies the permission matrix (admins cannot touch owners, the last owner stays)."""
    if request.method != "POST":
        return redirect("dashboard:members", org_slug=request.org.slug)
    membership = (
        Membership.objects.for_org(request.org)
        .select_related("user")
        .filter(user__public_id=member_id)
        .first()
    )
    if membership is None:
        raise Http404("No such member.")
    try:
        if request.POST.get("remove"):
            remove_member(membership, actor_role=request.role, request=request)
            messages.success(request, f"{membership.user.email} removed.")
        else:
            new_role = request.POST.get("role", "")
            if new_role not in Role.values:
                raise exceptions.ValidationError({"role": [f"Unknown role {new_role[:20]!r}."]})
            change_role(membership, new_role, actor_role=request.role, request=request)
            messages.success(request, f"{membership.user.email} is now {new_role}.")
    except exceptions.APIException as exc:
        for problems in field_errors(exc).values():
            for problem in problems:
                messages.error(request, problem)
    return redirect("dashboard:members", org_slug=request.org.slug)


@org_page(read="audit_log.read", write="audit_log.read")
def audit_log(request: HttpRequest) -> HttpResponse:
    entries = (
        AuditLogEntry.objects.for_org(request.org)
        .select_related("actor_user", "actor_api_key")
        .order_by("-pk")
    )
    return render(request, "dashboard/audit_log.html", {"entries": page_of(request, entries)})


@org_page()
def usage(request: HttpRequest) -> HttpResponse:
    """Tokens by UTC day and model (the same sums as ``GET /v1/usage?group_by=model,day``)."""
    rows = list(
        UsageRecord.objects.for_org(request.org)
        .annotate(day=TruncDay("created_at"))
        .values("day", "model")
        .annotate(
            requests=Count("pk"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
        )
        .order_by("day", "model")
    )
    days = sorted({row["day"].date().isoformat() for row in rows})
    totals = {day: 0 for day in days}
    for row in rows:
        row["day"] = row["day"].date().isoformat()
        row["total_tokens"] = row["prompt_tokens"] + row["completion_tokens"]
        totals[row["day"]] += row["total_tokens"]
    chart = {"days": days, "tokens": [totals[d] for d in days]}
    return render(request, "dashboard/usage.html", {"rows": rows, "chart": chart})
