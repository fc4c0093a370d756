"""What a company HTTP tool definition must satisfy, checked wherever one is saved.

Shared by the model's validation (admin, API) and the agent worker, which checks each
call's address again at connect time (a name may resolve elsewhere by then).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlparse

from django.core.exceptions import ValidationError

TOOL_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
# the agent's own tools: a company tool may not take their names
BUILTIN_TOOL_NAMES = frozenset({"end_call", "take_message", "transfer_to_human"})
MAX_SCHEMA_CHARS = 20_000


def tool_name_validate(name: str) -> None:
    if not re.match(TOOL_NAME_PATTERN, name or ""):
        raise ValidationError(
            "A tool name is a letter, then up to 63 letters, digits or underscores.", code="invalid_name"
        )
    if name in BUILTIN_TOOL_NAMES:
        raise ValidationError(f"{name!r} is the name of a built-in tool.", code="reserved_name")


def tool_schema_validate(schema: Any) -> None:
    """A JSON Schema (Draft 2020-12) for an object: what the LLM is told the arguments are."""
    from jsonschema import Draft202012Validator, SchemaError

    if not isinstance(schema, dict):
        raise ValidationError("The arguments schema must be a JSON object.", code="invalid_schema")
    if len(str(schema)) > MAX_SCHEMA_CHARS:
        raise ValidationError("The arguments schema is too large.", code="invalid_schema")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValidationError(f"Not a valid JSON Schema: {exc.message}", code="invalid_schema") from exc
    if schema.get("type") != "object":
        raise ValidationError('The arguments schema must have "type": "object".', code="invalid_schema")


def address_is_private(address: str) -> bool:
    """Loopback, private, link-local, multicast, reserved or unspecified: not the public internet."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def tool_url_validate(url: str, *, allow_private: bool) -> None:
    """HTTPS only; an address literal in a private range is refused unless allowed."""
    parsed = urlparse(url or "")
    if parsed.scheme != "https" or not parsed.hostname:
        raise ValidationError("A tool's URL must be an https:// URL.", code="not_https")
    if parsed.username or parsed.password:
        raise ValidationError("A tool's URL must not carry credentials.", code="invalid_url")
    host = parsed.hostname
    try:
        private = address_is_private(host)
    except ValueError:
        # a name: "localhost" is loopback whatever DNS says; others are checked at call time
        private = host == "localhost" or host.endswith(".localhost")
    if private and not allow_private:
        raise ValidationError(
            "A tool's URL may not point at a private, loopback or link-local address.",
            code="private_address",
        )
