"""The error envelope: DRF errors, Django's 404/500 paths and ApiErrorMiddleware."""

from __future__ import annotations

import json

import pytest
from django.http import JsonResponse
from django.test import Client, override_settings
from django.urls import include, path
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.views import APIView

from longtune.api.errors import ApiError, validation_error_body
from tests.conftest import api_client


class Message(serializers.Serializer):
    role = serializers.ChoiceField(choices=["user", "assistant"])
    content = serializers.CharField()


class Chat(serializers.Serializer):
    messages = Message(many=True)
    temperature = serializers.FloatField(max_value=2)


def test_nested_validation_errors_name_the_field_path():
    chat = Chat(
        data={"messages": [{"role": "user", "content": "hi"}, {"content": "x"}], "temperature": 9}
    )
    assert not chat.is_valid()
    error = validation_error_body(chat.errors)["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages.1.role" and error["code"] == "required"
    assert (
        error["message"].startswith("messages.1.role: ")
        and "(and 1 more error)" in error["message"]
    )


# --- a throwaway URLconf with views that fail in the ways the middleware must catch ----------


class Boom(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get(self, request):
        raise RuntimeError("a bug")

    def post(self, request):
        raise ApiError(
            status=400, code="invalid_json", message="Line 3 is not JSON.", param="line 3"
        )


def plain_json_view(request):
    return JsonResponse(json.loads(request.body))


urlpatterns = [
    path("v1/", include(([path("boom", Boom.as_view()), path("plain", plain_json_view)], "v1"))),
]


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=__name__)
def test_uncaught_exception_becomes_a_logged_500_envelope(caplog):
    response = Client(raise_request_exception=False).get("/v1/boom")
    assert response.status_code == 500
    assert response.json()["error"] == {
        "type": "server_error",
        "code": "internal_error",
        "message": response.json()["error"]["message"],
        "param": None,
    }
    assert "a bug" in caplog.text  # logged with its traceback


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=__name__)
def test_api_error_and_bad_json_in_plain_views():
    coded = Client().post("/v1/boom")
    assert coded.status_code == 400
    assert (
        coded.json()["error"]["param"] == "line 3"
        and coded.json()["error"]["code"] == "invalid_json"
    )
    bad = Client(raise_request_exception=False).post(
        "/v1/plain", data=b"{nope", content_type="application/json"
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True])
def test_unknown_v1_urls_are_json_404(settings, debug):
    settings.DEBUG = debug
    for url in ["/v1/nope", "/v1/api_keys/org_wrongprefix", "/v1/api_keys/key_%00"]:
        response = Client().get(url)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "not_found", url


@pytest.mark.django_db
def test_method_not_allowed_and_content_type(org_a):
    client = api_client(org_a.owner_secret)
    wrong_method = client.put("/v1/organization", {}, format="json")
    assert (
        wrong_method.status_code == 405
        and wrong_method.json()["error"]["code"] == "method_not_allowed"
    )
    wrong_type = client.post("/v1/api_keys", data="x", content_type="text/csv")
    assert (
        wrong_type.status_code == 415
        and wrong_type.json()["error"]["code"] == "unsupported_media_type"
    )
