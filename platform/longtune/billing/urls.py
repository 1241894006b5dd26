"""Billing routes, mounted under /v1/ (namespace "v1") by longtune.urls."""

from django.urls import path

from longtune.billing.views import (
    BillingView,
    CheckoutView,
    InvoicesView,
    PortalView,
    StripeWebhookView,
)

urlpatterns = [
    path("billing", BillingView.as_view(), name="billing"),
    path("billing/checkout", CheckoutView.as_view(), name="billing-checkout"),
    path("billing/portal", PortalView.as_view(), name="billing-portal"),
    path("billing/invoices", InvoicesView.as_view(), name="billing-invoices"),
    path("billing/webhooks/stripe", StripeWebhookView.as_view(), name="billing-webhook"),
]
