"""Request and response shapes of the tenancy endpoints.

Inputs reject unknown fields (a typo like ``"scope"`` for ``"scopes"`` is an error, not a
silent default) and bound every length and number, so no client input reaches the database
unchecked.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from longtune.api.fields import ObjectTypeField, UnixTimestampField, public_id_field
from longtune.tenancy.models import (
    ApiKey,
    AuditLogEntry,
    Invitation,
    Membership,
    Organization,
    User,
)
from longtune.tenancy.quotas import QUOTA_NAMES, current_usage, effective_quota
from longtune.tenancy.roles import Role, Scope

MAX_PASSWORD_LENGTH = 1024
MAX_TOKEN_LENGTH = 200


class StrictInputSerializer(serializers.Serializer):
    """Refuses fields it does not declare (400 ``unknown_field``, param = the field)."""

    def to_internal_value(self, data: Any) -> Any:
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {
                        name: [serializers.ErrorDetail("Unknown field.", code="unknown_field")]
                        for name in unknown
                    }
                )
        return super().to_internal_value(data)


# --- organization ---------------------------------------------------------------------------


class QuotaSerializer(serializers.Serializer):
    max_concurrent_jobs = serializers.IntegerField()
    monthly_training_tokens = serializers.IntegerField()
    storage_bytes = serializers.IntegerField()
    requests_per_minute = serializers.IntegerField()
    max_endpoints = serializers.IntegerField()
    monthly_inference_tokens = serializers.IntegerField()


class UsageSerializer(serializers.Serializer):
    """Current usage per quota; null where the owning app does not report it yet."""

    max_concurrent_jobs = serializers.IntegerField(allow_null=True, help_text="Jobs running now.")
    monthly_training_tokens = serializers.IntegerField(
        allow_null=True, help_text="Tokens trained this month."
    )
    storage_bytes = serializers.IntegerField(allow_null=True, help_text="Bytes stored.")
    requests_per_minute = serializers.IntegerField(
        allow_null=True, help_text="Requests this minute."
    )
    max_endpoints = serializers.IntegerField(
        allow_null=True, help_text="Endpoints pending, loading or ready."
    )
    monthly_inference_tokens = serializers.IntegerField(
        allow_null=True, help_text="Prompt + completion tokens served this month."
    )


class OrganizationSerializer(serializers.ModelSerializer):
    object = ObjectTypeField("organization")
    id = public_id_field()
    created_at = UnixTimestampField()
    quotas = serializers.SerializerMethodField()
    usage = serializers.SerializerMethodField()

    class Meta:
        model = Organization
        fields = ["object", "id", "name", "slug", "plan", "created_at", "quotas", "usage"]

    @extend_schema_field(QuotaSerializer)
    def get_quotas(self, org: Organization) -> dict[str, Any]:
        return effective_quota(org).as_dict()

    @extend_schema_field(UsageSerializer)
    def get_usage(self, org: Organization) -> dict[str, Any]:
        return current_usage(org)


assert set(QuotaSerializer().fields) == set(QUOTA_NAMES) == set(UsageSerializer().fields)


class UserSummarySerializer(serializers.ModelSerializer):
    id = public_id_field()

    class Meta:
        model = User
        fields = ["id", "email", "name"]


# --- API keys -----------------------------------------------------------------------------------


class ApiKeySerializer(serializers.ModelSerializer):
    object = ObjectTypeField("api_key")
    id = public_id_field()
    redacted_value = serializers.CharField(
        read_only=True, help_text="lt_...last4; the secret is never shown again."
    )
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=Scope.choices), read_only=True
    )
    created_by = public_id_field("created_by.public_id")
    created_at = UnixTimestampField()
    expires_at = UnixTimestampField(allow_null=True)
    last_used_at = UnixTimestampField(allow_null=True)
    revoked_at = UnixTimestampField(allow_null=True)

    class Meta:
        model = ApiKey
        fields = [
            "object",
            "id",
            "name",
            "role",
            "scopes",
            "redacted_value",
            "created_by",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
        ]


class ApiKeyCreatedSerializer(ApiKeySerializer):
    secret = serializers.CharField(
        read_only=True, help_text="The full key. Shown once; store it now."
    )

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "secret"]


class ApiKeyCreateSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    role = serializers.ChoiceField(
        choices=Role.choices, required=False, help_text="Default: the caller's role."
    )
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=Scope.choices),
        min_length=1,
        max_length=len(Scope.choices),
        required=False,
        help_text="Default: the caller's scopes.",
    )
    expires_in_days = serializers.IntegerField(
        min_value=1, max_value=3650, required=False, allow_null=True
    )


# --- members ------------------------------------------------------------------------------------


class MemberSerializer(serializers.ModelSerializer):
    object = ObjectTypeField("organization.member")
    id = public_id_field()
    user = UserSummarySerializer(read_only=True)
    created_at = UnixTimestampField()

    class Meta:
        model = Membership
        fields = ["object", "id", "user", "role", "created_at"]


class MemberUpdateSerializer(StrictInputSerializer):
    role = serializers.ChoiceField(choices=Role.choices)


# --- invitations ----------------------------------------------------------------------------------


class InvitationSerializer(serializers.ModelSerializer):
    object = ObjectTypeField("organization.invite")
    id = public_id_field()
    status = serializers.CharField(read_only=True)
    invited_by = public_id_field("invited_by.public_id")
    created_at = UnixTimestampField()
    expires_at = UnixTimestampField()
    accepted_at = UnixTimestampField(allow_null=True)
    revoked_at = UnixTimestampField(allow_null=True)

    class Meta:
        model = Invitation
        fields = [
            "object",
            "id",
            "email",
            "role",
            "status",
            "invited_by",
            "created_at",
            "expires_at",
            "accepted_at",
            "revoked_at",
        ]


class InvitationCreatedSerializer(InvitationSerializer):
    token = serializers.CharField(read_only=True, help_text="Send it to the invitee. Shown once.")

    class Meta(InvitationSerializer.Meta):
        fields = [*InvitationSerializer.Meta.fields, "token"]


class InvitationCreateSerializer(StrictInputSerializer):
    email = serializers.EmailField(max_length=254)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)


class InvitationAcceptSerializer(StrictInputSerializer):
    token = serializers.CharField(max_length=MAX_TOKEN_LENGTH)
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(
        max_length=MAX_PASSWORD_LENGTH, write_only=True, trim_whitespace=False
    )
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class InvitationAcceptedSerializer(serializers.Serializer):
    object = ObjectTypeField("organization.invite.accepted")
    organization = OrganizationSerializer(source="membership.org")
    member = MemberSerializer(source="membership")
    api_key = serializers.SerializerMethodField()

    @extend_schema_field(ApiKeyCreatedSerializer)
    def get_api_key(self, accepted: Any) -> dict[str, Any]:
        return api_key_with_secret(accepted.api_key, accepted.secret)


# --- signup ----------------------------------------------------------------------------------------


class SignupSerializer(StrictInputSerializer):
    email = serializers.EmailField(max_length=254)
    password = serializers.CharField(
        max_length=MAX_PASSWORD_LENGTH, write_only=True, trim_whitespace=False
    )
    organization_name = serializers.CharField(max_length=200)


class SignupConfirmSerializer(StrictInputSerializer):
    token = serializers.CharField(max_length=1000)


class PasswordResetSerializer(StrictInputSerializer):
    email = serializers.EmailField(max_length=254)


class SignupRequestedSerializer(serializers.Serializer):
    """The one answer to a signup request, whatever the email."""

    object = ObjectTypeField("signup.requested")
    email = serializers.EmailField()
    message = serializers.CharField()


class PasswordResetRequestedSerializer(serializers.Serializer):
    """The one answer to a password-reset request, whatever the email."""

    object = ObjectTypeField("password_reset.requested")
    email = serializers.EmailField()
    message = serializers.CharField()


class SignupResponseSerializer(serializers.Serializer):
    object = ObjectTypeField("signup")
    user = UserSummarySerializer()
    organization = OrganizationSerializer(source="org")
    api_key = serializers.SerializerMethodField()

    @extend_schema_field(ApiKeyCreatedSerializer)
    def get_api_key(self, created: Any) -> dict[str, Any]:
        return api_key_with_secret(created.api_key, created.secret)


def api_key_with_secret(key: ApiKey, secret: str) -> dict[str, Any]:
    return {**ApiKeySerializer(key).data, "secret": secret}


# --- audit log --------------------------------------------------------------------------------------


class AuditActorSerializer(serializers.Serializer):
    type = serializers.CharField()
    user_id = serializers.CharField(allow_null=True)
    email = serializers.CharField(allow_null=True)
    api_key_id = serializers.CharField(allow_null=True)


class AuditTargetSerializer(serializers.Serializer):
    type = serializers.CharField()
    id = serializers.CharField()


class AuditLogEntrySerializer(serializers.ModelSerializer):
    object = ObjectTypeField("audit_log")
    id = public_id_field()
    actor = serializers.SerializerMethodField()
    target = serializers.SerializerMethodField()
    created_at = UnixTimestampField()

    class Meta:
        model = AuditLogEntry
        fields = [
            "object",
            "id",
            "action",
            "actor",
            "target",
            "metadata",
            "ip_address",
            "created_at",
        ]

    @extend_schema_field(AuditActorSerializer)
    def get_actor(self, entry: AuditLogEntry) -> dict[str, Any]:
        user, key = entry.actor_user, entry.actor_api_key
        return {
            "type": "api_key" if key else ("user" if user else "system"),
            "user_id": user.public_id if user else None,
            "email": user.email if user else None,
            "api_key_id": key.public_id if key else None,
        }

    @extend_schema_field(AuditTargetSerializer)
    def get_target(self, entry: AuditLogEntry) -> dict[str, Any]:
        return {"type": entry.target_type, "id": entry.target_id}
