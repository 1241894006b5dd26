"""/v1/billing: the org's plan, period cost and budget; checkout, portal, invoices; the webhook.

Every view but the webhook acts on ``request.org``, resolved once by the authenticator (an API
key or a session membership); there is no id to address another org's billing. The webhook
is public: Stripe authenticates it with the signature over the raw body.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from longtune.api.errors import reject_request_body
from longtune.api.viewsets import OrgScopedViewSet
from longtune.billing import checkout, meter_errors, webhooks
from longtune.billing.accounts import account_for, set_budget
from longtune.billing.conf import billing_conf
from longtune.billing.models import BillingEvent
from longtune.billing.serializers import (
    BillingEventSerializer,
    BillingSerializer,
    BudgetUpdateSerializer,
    CheckoutRequestSerializer,
    InvoiceListSerializer,
    RedirectSerializer,
    WebhookReceivedSerializer,
)
from longtune.billing.usage import period_summary


class BillingView(APIView):
    required_permissions = {"GET": "organization.read", "PATCH": "billing.manage"}

    @extend_schema(operation_id="retrieve_billing", responses=BillingSerializer)
    def get(self, request: Request) -> Response:
        return self._summary(request)

    @extend_schema(
        operation_id="update_billing_budget",
        request=BudgetUpdateSerializer,
        responses=BillingSerializer,
    )
    def patch(self, request: Request) -> Response:
        body = BudgetUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        set_budget(request.org, request=request, **body.validated_data)
        return self._summary(request)

    def _summary(self, request: Request) -> Response:
        account = account_for(request.org)
        payload = BillingSerializer.payload(
            enabled=billing_conf().enabled,
            plan=request.org.plan,
            account=account,
            summary=period_summary(request.org, account),
        )
        return Response(BillingSerializer(payload).data)


class CheckoutView(APIView):
    required_permissions = {"POST": "billing.manage"}

    @extend_schema(
        operation_id="create_billing_checkout",
        request=CheckoutRequestSerializer,
        responses={200: RedirectSerializer},
    )
    def post(self, request: Request) -> Response:
        body = CheckoutRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return Response({"url": checkout.checkout_url(request.org, body.validated_data["plan"])})


class PortalView(APIView):
    required_permissions = {"POST": "billing.manage"}

    @extend_schema(operation_id="create_billing_portal", request=None, responses=RedirectSerializer)
    def post(self, request: Request) -> Response:
        reject_request_body(request, "The portal")
        return Response({"url": checkout.portal_url(request.org)})


class InvoicesView(APIView):
    required_permissions = {"GET": "billing.manage"}

    @extend_schema(operation_id="list_billing_invoices", responses=InvoiceListSerializer)
    def get(self, request: Request) -> Response:
        """Stripe's invoices of the org's customer; none while billing is off."""
        data = checkout.invoices(request.org) if billing_conf().enabled else []
        return Response(InvoiceListSerializer({"data": data}).data)


class BillingEventViewSet(mixins.ListModelMixin, OrgScopedViewSet):
    """GET /v1/billing/events: what happened to the org's billing (alerts, dunning, plans)."""

    model = BillingEvent
    serializer_class = BillingEventSerializer
    required_permissions = {"list": "organization.read"}


class StripeWebhookView(APIView):
    """Stripe's event delivery. The raw body is read (``request.body``), never parsed first."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="receive_stripe_webhook",
        auth=[],
        request={"application/json": {"type": "object"}},
        responses=WebhookReceivedSerializer,
    )
    def post(self, request: Request) -> Response:
        received = webhooks.receive(request.body, request.headers.get("Stripe-Signature"))
        return Response({"received": True, "duplicate": received.duplicate})


class StripeThinWebhookView(APIView):
    """Stripe's thin event notifications (an event destination): meter error reports."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="receive_stripe_thin_webhook",
        auth=[],
        request={"application/json": {"type": "object"}},
        responses=WebhookReceivedSerializer,
    )
    def post(self, request: Request) -> Response:
        duplicate, _ = meter_errors.receive_thin(
            request.body, request.headers.get("Stripe-Signature")
        )
        return Response({"received": True, "duplicate": duplicate})
