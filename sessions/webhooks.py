"""LiveKit webhook receiver: verify, translate the event, call a service."""

from __future__ import annotations

import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from agentconnect.errors import error_body

from .livekit_gateway import webhook_receive
from .services import session_handle_webhook

logger = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 256 * 1024


@csrf_exempt
def livekit_webhook(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        response = JsonResponse(
            error_body("method_not_allowed", f'Method "{request.method}" not allowed.'), status=405
        )
        response["Allow"] = "POST"
        return response
    auth = request.headers.get("Authorization", "")
    if not auth:
        return JsonResponse(error_body("not_authenticated", "Missing webhook signature."), status=401)
    if len(request.body) > MAX_WEBHOOK_BYTES:
        return JsonResponse(error_body("payload_too_large", "Webhook body too large."), status=413)
    try:
        event = webhook_receive(request.body.decode("utf-8"), auth)
    except Exception:
        # A forged or tampered request; say nothing of why.
        logger.warning("webhook rejected: bad signature")
        return JsonResponse(error_body("authentication_failed", "Invalid webhook signature."), status=401)
    outcome = session_handle_webhook(event)
    logger.info("webhook %s room=%s -> %s", event.event, event.room.name, outcome)
    return JsonResponse({"success": True, "event": event.event, "outcome": outcome})
