"""Staff see each org's customer, subscription, dunning state and outbox in the admin."""

from typing import Any

from django.contrib import admin, messages

from longtune.billing.accounts import note
from longtune.billing.models import BillingAccount, BillingEvent, MeterEvent, WebhookEvent
from longtune.billing.plans import set_plan
from longtune.billing.reconcile import reconcile
from longtune.tenancy.cross_org_admin import CrossOrgModelAdmin
from longtune.tenancy.models import AuditAction, Plan


def _plan_action(plan: str):
    def action(modeladmin: Any, request: Any, queryset: Any) -> None:
        for account in queryset.select_related("org"):
            set_plan(account.org, plan, reason=f"staff override by {request.user}", request=request)
        modeladmin.message_user(request, f"Plan set to {plan} for {queryset.count()} org(s).")

    action.__name__ = f"set_plan_{plan}"
    action.short_description = f"Override plan: {plan} (audited)"
    return action


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
    readonly_fields = ("subscription_event_created", "invoice_event_created")
    actions = [*(_plan_action(plan) for plan in Plan.values), "reconcile_period"]

    def save_model(self, request: Any, obj: BillingAccount, form: Any, change: bool) -> None:
        """Credits and budgets changed by staff are audited (who, from what, to what)."""
        before = BillingAccount.objects.unscoped_across_orgs().filter(pk=obj.pk).first()
        super().save_model(request, obj, form, change)
        if before is None:
            return
        if before.credit_cents != obj.credit_cents:
            note(
                obj.org,
                "credit",
                f"Staff set the credit to ${obj.credit_cents / 100:.2f}.",
                action=AuditAction.BILLING_CREDIT_GRANTED,
                request=request,
                data={"from_cents": before.credit_cents, "to_cents": obj.credit_cents},
            )
        if (before.monthly_budget_cents, before.hard_cap) != (
            obj.monthly_budget_cents,
            obj.hard_cap,
        ):
            note(
                obj.org,
                "budget",
                "Staff changed the monthly budget.",
                action=AuditAction.BILLING_BUDGET_CHANGED,
                request=request,
                data={"budget_cents": obj.monthly_budget_cents, "hard_cap": obj.hard_cap},
            )

    @admin.action(description="Reconcile this month: ledger vs meter events sent")
    def reconcile_period(self, request: Any, queryset: Any) -> None:
        for row in reconcile([account.org for account in queryset.select_related("org")]):
            level = messages.INFO if row.missing == 0 else messages.WARNING
            self.message_user(
                request,
                f"{row.org} {row.meter}: ledger {row.ledger}, sent {row.sent}, pending {row.pending}",
                level,
            )


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
        "stripe_error",
    )
    list_filter = (
        "meter",
        "source",
        ("sent_at", admin.EmptyFieldListFilter),
        ("stripe_error", admin.EmptyFieldListFilter),
    )
    search_fields = ("identifier", "org__slug")


@admin.register(BillingEvent)
class BillingEventAdmin(CrossOrgModelAdmin):
    list_display = ("org", "kind", "level", "message", "created_at")
    list_filter = ("kind", "level")


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = ("stripe_event_id", "type", "created", "org_public_id", "outcome", "received_at")
    search_fields = ("stripe_event_id", "org_public_id", "type")
