"""Unauthenticated endpoints, throttled per client IP: signup and accepting an invitation."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from longtune.tenancy.serializers import (
    InvitationAcceptedSerializer,
    InvitationAcceptSerializer,
    PasswordResetRequestedSerializer,
    PasswordResetSerializer,
    SignupConfirmSerializer,
    SignupRequestedSerializer,
    SignupResponseSerializer,
    SignupSerializer,
)
from longtune.tenancy.services.invitations import accept_invitation
from longtune.tenancy.services.signup import (
    ANSWER as SIGNUP_ANSWER,
)
from longtune.tenancy.services.signup import (
    PASSWORD_RESET_ANSWER,
    confirm_signup,
    request_signup,
    send_password_reset,
)
from longtune.tenancy.throttling import PublicEndpointThrottle


class PublicView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [PublicEndpointThrottle]


class SignupView(PublicView):
    """Ask for an account: 202 and a mail, whether or not the email is registered (the mail
    holds the confirmation link, or says the account exists). Nothing here reveals which."""

    @extend_schema(auth=[], request=SignupSerializer, responses={202: SignupRequestedSerializer})
    def post(self, request: Request) -> Response:
        body = SignupSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        request_signup(
            email=body.validated_data["email"],
            password=body.validated_data["password"],
            org_name=body.validated_data["organization_name"],
            request=request,
        )
        answer = {"object": "signup.requested", "email": body.validated_data["email"],
                  "message": SIGNUP_ANSWER}  # fmt: skip
        return Response(answer, status=status.HTTP_202_ACCEPTED)


class SignupConfirmView(PublicView):
    """The token from the signup mail: creates the user's organization and first API key
    (its secret is returned this once)."""

    @extend_schema(
        auth=[], request=SignupConfirmSerializer, responses={201: SignupResponseSerializer}
    )
    def post(self, request: Request) -> Response:
        body = SignupConfirmSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        created = confirm_signup(token=body.validated_data["token"], request=request)
        return Response(SignupResponseSerializer(created).data, status=status.HTTP_201_CREATED)


class PasswordResetView(PublicView):
    """Mail a password-reset link. 202 whatever the email: registered or not, the answer is
    the same (the dashboard's form is Django's, with the same behaviour)."""

    @extend_schema(
        auth=[], request=PasswordResetSerializer, responses={202: PasswordResetRequestedSerializer}
    )
    def post(self, request: Request) -> Response:
        body = PasswordResetSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        send_password_reset(body.validated_data["email"], request=request)
        answer = {"object": "password_reset.requested", "email": body.validated_data["email"],
                  "message": PASSWORD_RESET_ANSWER}  # fmt: skip
        return Response(answer, status=status.HTTP_202_ACCEPTED)


class AcceptInvitationView(PublicView):
    """Accept with the token from the invitation; creates the user if needed and returns a key."""

    @extend_schema(
        auth=[], request=InvitationAcceptSerializer, responses={201: InvitationAcceptedSerializer}
    )
    def post(self, request: Request) -> Response:
        body = InvitationAcceptSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        accepted = accept_invitation(**body.validated_data, request=request)
        return Response(InvitationAcceptedSerializer(accepted).data, status=status.HTTP_201_CREATED)
