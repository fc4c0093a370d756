"""Company HTTP tools in the admin: bad definitions get a clear form error, never a 500,
and the signing secret is never shown back."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tests.factories import CompanyFactory
from voiceagents.models import CompanyTool

pytestmark = pytest.mark.django_db

ADD = "/admin/voiceagents/companytool/add/"
SCHEMA = '{"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]}'
SECRET = "whsec_admin-secret-abcdefghijklmnop"


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", password="pw"))
    return client


def form(company_id: int, **overrides: str) -> dict[str, Any]:
    return {
        "company": str(company_id),
        "name": "order_status",
        "description": "Look up an order.",
        "parameters": SCHEMA,
        "url": "https://tools.example.com/order",
        "new_signing_secret": SECRET,
        "timeout_seconds": "5",
        "max_response_bytes": "65536",
        "is_active": "on",
        **overrides,
    }


def test_a_valid_tool_is_saved_with_its_secret_which_is_never_shown(staff: Client) -> None:
    company = CompanyFactory()
    response = staff.post(ADD, form(company.pk))
    assert response.status_code == 302, response.content.decode()[:3000]
    tool = CompanyTool.objects.get(company=company, name="order_status")
    assert tool.signing_secret == SECRET
    for page in (
        f"/admin/voiceagents/companytool/{tool.pk}/change/",
        "/admin/voiceagents/companytool/",
        f"/admin/voiceagents/companytool/{tool.pk}/history/",
    ):
        html = staff.get(page).content.decode()
        assert "order_status" in html and SECRET not in html, page
    assert SECRET not in repr(tool) and SECRET not in str(tool)
    # saving again with the secret left blank keeps it
    response = staff.post(
        f"/admin/voiceagents/companytool/{tool.pk}/change/", form(company.pk, new_signing_secret="")
    )
    assert response.status_code == 302
    tool.refresh_from_db()
    assert tool.signing_secret == SECRET


@pytest.mark.parametrize(
    "overrides, field, says",
    [
        (
            {"parameters": '{"type": "object", "properties": {"a": {"type": "strin"}}}'},
            "parameters",
            "JSON Schema",
        ),
        ({"parameters": '{"type": "array"}'}, "parameters", '"type": "object"'),
        ({"parameters": "{not json"}, "parameters", "JSON"),
        ({"url": "http://tools.example.com/order"}, "url", "https://"),
        ({"url": "ftp://tools.example.com/order"}, "url", ""),
        ({"url": "https://127.0.0.1/order"}, "url", "private, loopback or link-local"),
        ({"url": "https://10.1.2.3/order"}, "url", "private, loopback or link-local"),
        ({"url": "https://169.254.169.254/latest/meta-data"}, "url", "private, loopback or link-local"),
        ({"url": "https://[::1]/order"}, "url", "private, loopback or link-local"),
        ({"url": "https://localhost/order"}, "url", "private, loopback or link-local"),
        ({"name": "order status!"}, "name", "letter"),
        ({"name": "end_call"}, "name", "built-in"),
        ({"new_signing_secret": "short"}, "new_signing_secret", "at least 16"),
    ],
    ids=[
        "invalid-schema",
        "schema-not-object",
        "schema-not-json",
        "http-url",
        "ftp-url",
        "loopback",
        "private",
        "link-local",
        "ipv6-loopback",
        "localhost",
        "bad-name",
        "builtin-name",
        "short-secret",
    ],
)
def test_bad_tool_definitions_get_a_clear_form_error(
    staff: Client, overrides: dict[str, str], field: str, says: str
) -> None:
    company = CompanyFactory()
    response = staff.post(ADD, form(company.pk, **overrides))
    assert response.status_code == 200  # the form again, with the error; never a 500
    errors = response.context["adminform"].form.errors
    assert field in errors, errors
    assert says in " ".join(errors[field]), errors[field]
    assert not CompanyTool.objects.exists()
    assert SECRET not in response.content.decode()


def test_a_duplicate_tool_name_in_one_company_is_a_form_error(staff: Client) -> None:
    company = CompanyFactory()
    assert staff.post(ADD, form(company.pk)).status_code == 302
    response = staff.post(ADD, form(company.pk))
    assert response.status_code == 200
    assert "already exists" in str(response.context["adminform"].form.errors)
    # another company may use the name
    assert staff.post(ADD, form(CompanyFactory().pk)).status_code == 302
    assert CompanyTool.objects.filter(name="order_status").count() == 2


def test_private_addresses_are_accepted_when_the_setting_allows_them(staff: Client, settings: Any) -> None:
    settings.COMPANY_TOOLS_ALLOW_PRIVATE_ADDRESSES = True
    response = staff.post(ADD, form(CompanyFactory().pk, url="https://127.0.0.1:8443/order"))
    assert response.status_code == 302
