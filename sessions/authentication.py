"""Widget authentication: the company's public widget key plus its allowed origins."""

from __future__ import annotations

from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request
from rest_framework.views import APIView

from voiceagents.models import Company

from .selectors import company_by_widget_key

WIDGET_KEY_HEADER = "HTTP_X_WIDGET_KEY"


def origin_allowed(company: Company, origin: str) -> bool:
    return origin.rstrip("/") in {o.rstrip("/") for o in company.allowed_origins or []}


class WidgetKeyAuthentication(authentication.BaseAuthentication):
    """`X-Widget-Key: <key>` identifies the company; `request.auth` is that company.

    The key is public (it sits in a web page), so a browser request must also
    come from one of the company's allowed origins. Requests without an Origin
    header (servers, curl) are not browsers and are judged by the key alone.
    """

    def authenticate(self, request: Request) -> tuple[None, Company] | None:
        key = request.META.get(WIDGET_KEY_HEADER, "").strip()
        if not key:
            return None
        company = company_by_widget_key(key)
        if company is None:
            raise exceptions.AuthenticationFailed("Invalid widget key.")
        origin = request.META.get("HTTP_ORIGIN", "")
        if origin and not origin_allowed(company, origin):
            raise exceptions.PermissionDenied(f"Origin {origin} is not allowed for this widget key.")
        return (None, company)

    def authenticate_header(self, request: Request) -> str:
        return "X-Widget-Key"


def widget_company(request: Request) -> Company:
    """The company a widget-authenticated request speaks for (HasWidgetKey guarantees one)."""
    company = request.auth
    if not isinstance(company, Company):
        raise exceptions.NotAuthenticated("A valid X-Widget-Key header is required.")
    return company


class HasWidgetKey(permissions.BasePermission):
    message = "A valid X-Widget-Key header is required."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return isinstance(request.auth, Company)


class IsStaff(permissions.BasePermission):
    message = "Staff only."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff)
