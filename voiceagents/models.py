"""Companies (tenants) and their voice agent profiles."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxLengthValidator, MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from .catalog import (
    ENDPOINTING_DELAY_MAX,
    GREETING_MAX_LENGTH,
    LLM_MODEL_MAX_LENGTH,
    LLM_MODEL_PATTERN,
    SYSTEM_PROMPT_MAX_LENGTH,
    AgentMode,
    LLMProvider,
    ReplyPolicy,
    STTProvider,
    TTSProvider,
    TurnDetection,
    Voice,
)

WIDGET_KEY_PREFIX = "wk_"


def new_widget_key() -> str:
    return WIDGET_KEY_PREFIX + secrets.token_urlsafe(24)


class Company(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    # Public by design (it sits in a website's script tag); it identifies the
    # company, and the allowed origins limit which websites may use it.
    widget_key = models.CharField(max_length=64, unique=True, default=new_widget_key)
    allowed_origins = models.JSONField(
        default=list,
        blank=True,
        help_text="Website origins allowed to use the widget key, e.g. "
        '["https://www.example.com"]. Browser requests from any other origin are refused.',
    )
    max_concurrent_sessions = models.PositiveIntegerField(default=10, validators=[MinValueValidator(1)])
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "companies"
        verbose_name_plural = "companies"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def widget_key_hint(self) -> str:
        """The key with its secret part elided, for places that only need to recognise it."""
        return f"{self.widget_key[:7]}…{self.widget_key[-4:]}"


class VoiceAgent(models.Model):
    """An agent profile. Blank provider fields fall back to the deployment's AGENT_* defaults."""

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="agents")
    name = models.CharField(max_length=100)
    mode = models.CharField(max_length=20, choices=AgentMode.choices, default=AgentMode.ONE_TO_ONE)
    system_prompt = models.TextField(blank=True, validators=[MaxLengthValidator(SYSTEM_PROMPT_MAX_LENGTH)])
    greeting_message = models.TextField(blank=True, validators=[MaxLengthValidator(GREETING_MAX_LENGTH)])
    resume_message = models.TextField(
        blank=True,
        validators=[MaxLengthValidator(GREETING_MAX_LENGTH)],
        help_text="What a replacement agent says after the agent was lost mid-conversation. "
        "Blank: deployment default (AGENT_RESUME_MESSAGE).",
    )
    llm_provider = models.CharField(max_length=20, choices=LLMProvider.choices, blank=True)
    llm_model = models.CharField(
        max_length=LLM_MODEL_MAX_LENGTH,
        blank=True,
        validators=[RegexValidator(LLM_MODEL_PATTERN)],
    )
    stt_provider = models.CharField(max_length=20, choices=STTProvider.choices, blank=True)
    tts_provider = models.CharField(max_length=20, choices=TTSProvider.choices, blank=True)
    tts_voice = models.CharField(max_length=20, choices=Voice.choices, blank=True)
    vad_enabled = models.BooleanField(null=True, blank=True, help_text="Blank: deployment default")
    allow_interruptions = models.BooleanField(null=True, blank=True, help_text="Blank: deployment default")
    turn_detection = models.CharField(
        max_length=10,
        choices=TurnDetection.choices,
        blank=True,
        help_text="How the agent decides the visitor has finished. Blank: deployment default "
        "(AGENT_TURN_DETECTION), or stt when VAD is switched off.",
    )
    min_endpointing_delay = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(ENDPOINTING_DELAY_MAX)],
        help_text="Seconds after the visitor's last speech before a finished turn is answered. "
        "Blank: deployment default for the turn detection.",
    )
    max_endpointing_delay = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(ENDPOINTING_DELAY_MAX)],
        help_text="Model turn detection: seconds the agent waits when the visitor seems to be "
        "mid-sentence. Blank: deployment default.",
    )
    reply_policy = models.CharField(
        max_length=20,
        choices=ReplyPolicy.choices,
        default=ReplyPolicy.ALWAYS,
        help_text="Conference agents only: answer every turn, or only when addressed by name.",
    )
    # Tools the LLM may call (one-to-one agents).
    tool_end_call = models.BooleanField(
        "end_call", default=False, help_text="The agent may end the call when the visitor is done."
    )
    tool_take_message = models.BooleanField(
        "take_message", default=False, help_text="The agent may take a message (name, contact, message)."
    )
    tool_transfer_to_human = models.BooleanField(
        "transfer_to_human", default=False, help_text="The agent may ask staff to join the call."
    )
    handoff_timeout_seconds = models.PositiveIntegerField(
        default=120,
        validators=[MinValueValidator(5), MaxValueValidator(3600)],
        help_text="How long the visitor waits for a person before the agent comes back.",
    )
    http_tools: models.ManyToManyField[CompanyTool, Any] = models.ManyToManyField(
        "CompanyTool",
        blank=True,
        related_name="agents",
        help_text="The company's HTTP tools this agent may call.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "voice_agents"
        ordering = ["company__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["company", "name"], name="voice_agent_unique_name"),
            models.CheckConstraint(
                condition=models.Q(mode__in=AgentMode.values), name="voice_agent_valid_mode"
            ),
            models.CheckConstraint(
                condition=models.Q(turn_detection__in=["", *TurnDetection.values]),
                name="voice_agent_valid_turn_detection",
                violation_error_message="Unknown turn detection.",
            ),
            models.CheckConstraint(
                condition=models.Q(min_endpointing_delay__isnull=True)
                | models.Q(max_endpointing_delay__isnull=True)
                | models.Q(max_endpointing_delay__gte=models.F("min_endpointing_delay")),
                name="voice_agent_endpointing_max_not_below_min",
                violation_error_message="The maximum endpointing delay must not be below the minimum.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.company})"

    def clean(self) -> None:
        # the database constraint says the same; here the admin shows it beside the field
        low, high = self.min_endpointing_delay, self.max_endpointing_delay
        if low is not None and high is not None and high < low:
            raise ValidationError(
                {"max_endpointing_delay": "The maximum endpointing delay must not be below the minimum."}
            )


def new_signing_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


class CompanyTool(models.Model):
    """An HTTP endpoint of the company the agent may call, with JSON arguments the LLM fills in.

    Each call is a POST of the arguments, signed with ``signing_secret``
    (docs/security.md, "Company HTTP tools"); the JSON answer goes back to the LLM.
    """

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="tools")
    name = models.CharField(max_length=64, help_text="What the LLM calls it: letters, digits, underscores.")
    description = models.TextField(max_length=1000, help_text="Tells the LLM when and how to use the tool.")
    parameters = models.JSONField(
        "arguments schema",
        default=dict,
        help_text='A JSON Schema for the arguments, e.g. {"type": "object", "properties": '
        '{"order": {"type": "string"}}, "required": ["order"]}.',
    )
    url = models.URLField("HTTPS URL", max_length=500)
    # Shared with the company's endpoint; never shown after it is set (admin, API, logs).
    signing_secret = models.CharField(max_length=128, default=new_signing_secret)
    timeout_seconds = models.FloatField(
        default=5.0, validators=[MinValueValidator(0.5), MaxValueValidator(30)]
    )
    max_response_bytes = models.PositiveIntegerField(
        default=65536, validators=[MinValueValidator(256), MaxValueValidator(1_048_576)]
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "company_tools"
        ordering = ["company__name", "name"]
        constraints = [models.UniqueConstraint(fields=["company", "name"], name="company_tool_unique_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.company})"

    def __repr__(self) -> str:
        # the secret stays out of reprs, and so out of tracebacks and logs
        return f"<CompanyTool {self.pk} {self.name!r}>"

    def clean(self) -> None:
        from .tool_rules import tool_name_validate, tool_schema_validate, tool_url_validate

        errors: dict[str, list[ValidationError]] = {}
        for field, check in (
            ("name", lambda: tool_name_validate(self.name)),
            ("parameters", lambda: tool_schema_validate(self.parameters)),
            (
                "url",
                lambda: tool_url_validate(
                    self.url, allow_private=settings.COMPANY_TOOLS_ALLOW_PRIVATE_ADDRESSES
                ),
            ),
        ):
            try:
                check()
            except ValidationError as exc:
                errors.setdefault(field, []).append(exc)
        if errors:
            raise ValidationError(errors)
