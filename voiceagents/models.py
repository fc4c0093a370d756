"""Companies (tenants) and their voice agent profiles."""

from __future__ import annotations

import secrets

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
