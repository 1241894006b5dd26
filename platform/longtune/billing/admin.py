"""Staff see each org's customer, subscription, dunning state and outbox in the admin."""

from django.contrib import admin

from longtune.billing.models import BillingAccount, BillingEvent, MeterEvent, WebhookEvent
from longtune.tenancy.cross_org_admin import CrossOrgModelAdmin


@admin.register(BillingAccount)
class BillingAccountAdmin(CrossOrgModelAdmin):
    list_display = (
        "org",
        "state",
        "stripe_customer_id",
        "stripe_subscription_id",
        "subscription_status",
        "grace_until",
        "monthly_budget_cents",
        "hard_cap",
        "credit_cents",
    )
    list_filter = ("state", "hard_cap")
    search_fields = ("org__slug", "stripe_customer_id", "stripe_subscription_id")


@admin.register(MeterEvent)
class MeterEventAdmin(CrossOrgModelAdmin):
    list_display = (
        "identifier",
        "org",
        "meter",
        "value",
        "timestamp",
        "sent_at",
        "attempts",
        "last_error",
    )
    list_filter = ("meter", "source", ("sent_at", admin.EmptyFieldListFilter))
    search_fields = ("identifier", "org__slug")


@admin.register(BillingEvent)
class BillingEventAdmin(CrossOrgModelAdmin):
    list_display = ("org", "kind", "level", "message", "created_at")
    list_filter = ("kind", "level")


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = ("stripe_event_id", "type", "created", "org_public_id", "outcome", "received_at")
    search_fields = ("stripe_event_id", "org_public_id", "type")
