"""Django admin for staff. Cross-org by nature: org-owned models use CrossOrgModelAdmin /
CrossOrgAdminMixin, which read through unscoped_across_orgs().

Secrets never appear: API keys show their hash read-only; the audit log is read-only.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm

from longtune.tenancy.cross_org_admin import CrossOrgAdminMixin, CrossOrgModelAdmin
from longtune.tenancy.models import (
    ApiKey,
    AuditLogEntry,
    Invitation,
    Membership,
    Organization,
    OrgQuota,
    User,
)
from longtune.tenancy.services.api_keys import revoke_api_key


class EmailUserCreationForm(AdminUserCreationForm):
    class Meta:
        model = User
        fields = ("email",)


class EmailUserChangeForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    add_form = EmailUserCreationForm
    form = EmailUserChangeForm
    ordering = ["email"]
    list_display = ["email", "name", "public_id", "is_staff", "is_active", "date_joined"]
    search_fields = ["email", "name", "public_id"]
    readonly_fields = ["public_id", "date_joined", "last_login"]
    fieldsets = (
        (None, {"fields": ("public_id", "email", "password")}),
        ("Profile", {"fields": ("name",)}),
        (
            "Permissions",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)


class MembershipInline(CrossOrgAdminMixin, admin.TabularInline):
    model = Membership
    extra = 0
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]
    raw_id_fields = ["user"]


class OrgQuotaInline(CrossOrgAdminMixin, admin.StackedInline):
    model = OrgQuota
    extra = 0
    max_num = 1
    can_delete = True
    verbose_name = "quota override (empty field = plan default)"


@admin.register(Organization)
class OrganizationAdmin(CrossOrgModelAdmin):
    list_display = ["name", "slug", "plan", "public_id", "created_at"]
    list_filter = ["plan"]
    search_fields = ["name", "slug", "public_id"]
    readonly_fields = ["public_id", "created_at"]
    inlines = [MembershipInline, OrgQuotaInline]


class ReadOnlyAdmin(CrossOrgModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdmin):
    list_display = [
        "public_id",
        "name",
        "org",
        "role",
        "redacted_value",
        "created_by",
        "revoked_at",
        "last_used_at",
    ]
    list_filter = ["role", "revoked_at"]
    search_fields = ["public_id", "name", "org__slug", "created_by__email", "last_four"]
    readonly_fields = [f.name for f in ApiKey._meta.fields]
    actions = ["revoke_selected"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("org", "created_by")

    def has_change_permission(self, request, obj=None) -> bool:
        return obj is None and request.user.is_superuser  # enables the revoke action only

    @admin.action(description="Revoke selected API keys")
    def revoke_selected(self, request, queryset):
        for key in queryset:
            revoke_api_key(key, request=request, reason="revoked_by_staff")
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)


@admin.register(Invitation)
class InvitationAdmin(ReadOnlyAdmin):
    list_display = ["email", "org", "role", "status", "created_at", "expires_at"]
    search_fields = ["email", "org__slug", "public_id"]
    readonly_fields = [f.name for f in Invitation._meta.fields]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("org")


@admin.register(AuditLogEntry)
class AuditLogEntryAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "org",
        "action",
        "target_type",
        "target_id",
        "actor_user",
        "ip_address",
    ]
    list_filter = ["action"]
    search_fields = ["org__slug", "target_id", "actor_user__email"]
    readonly_fields = [f.name for f in AuditLogEntry._meta.fields]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("org", "actor_user")
