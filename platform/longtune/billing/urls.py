"""Billing routes, mounted under /v1/ (namespace "v1") by longtune.urls."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from longtune.billing.views import (
    BillingEventViewSet,
    BillingView,
    CheckoutView,
    InvoicesView,
    PortalView,
    StripeThinWebhookView,
    StripeWebhookView,
)

router = SimpleRouter(trailing_slash=False)
router.register("billing/events", BillingEventViewSet, basename="billing_event")

urlpatterns = [
    path("billing", BillingView.as_view(), name="billing"),
    path("billing/checkout", CheckoutView.as_view(), name="billing-checkout"),
    path("billing/portal", PortalView.as_view(), name="billing-portal"),
    path("billing/invoices", InvoicesView.as_view(), name="billing-invoices"),
    path("billing/webhooks/stripe", StripeWebhookView.as_view(), name="billing-webhook"),
    path(
        "billing/webhooks/stripe/thin", StripeThinWebhookView.as_view(), name="billing-webhook-thin"
    ),
    *router.urls,
]
