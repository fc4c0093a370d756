"""OpenAPI (drf-spectacular) pieces the views cannot infer: the widget key and the error shape.

Imported by sessions.apps.ready() so the authentication extension is registered
before any schema is generated. sessions/tests/test_schema.py fuzzes the API
against the schema built from these declarations.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class WidgetKeyScheme(OpenApiAuthenticationExtension):
    target_class = "sessions.authentication.WidgetKeyAuthentication"
    name = "widgetKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-Widget-Key",
            "description": "The company's public widget key. Browser requests must also come "
            "from one of the company's allowed origins.",
        }


class ErrorBody(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable: invalid_input, rate_limited, …")
    message = serializers.CharField(help_text="For a person to read.")
    details = serializers.DictField(help_text="Per-field errors, limits, retry_after …")


class ErrorResponse(serializers.Serializer):
    """Every error the API returns, whatever went wrong."""

    success = serializers.BooleanField(default=False)
    error = ErrorBody()


_MEANING = {
    400: "Invalid input or malformed JSON (`invalid_input`, `malformed_request`).",
    401: "Missing or wrong widget key (`not_authenticated`, `authentication_failed`).",
    403: "Origin not allowed for the key, or not staff (`permission_denied`).",
    404: "No such session, agent or company for this key (`not_found`).",
    409: "The session has ended, or belongs to another agent (`conflict`).",
    415: "The body is not JSON (`unsupported_media_type`).",
    429: "Rate limited (`rate_limited`, with Retry-After) or the company is at its "
    "session limit (`too_many_sessions`).",
    503: "The deployment is at capacity (`at_capacity`, with Retry-After) or the task "
    "broker is down (`service_unavailable`).",
}


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    """Error responses for extend_schema(responses=...), all in the one error shape."""
    return {s: OpenApiResponse(ErrorResponse, description=_MEANING[s]) for s in statuses}


def strict_inputs(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: request bodies refuse unknown fields
    (serializers.StrictSerializer), so their schemas say additionalProperties: false."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Input") and component.get("type") == "object":
            component["additionalProperties"] = False
    return result
