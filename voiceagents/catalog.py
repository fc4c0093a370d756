"""The providers and voices an agent profile or a session may choose.

One place, so that the API's validation, the admin's choices and the worker's
provider factory agree.
"""

from __future__ import annotations

from django.db import models


class LLMProvider(models.TextChoices):
    OPENAI = "openai", "OpenAI"
    GROQ = "groq", "Groq"
    # A diagnostic responder that says back what it heard; not an AI.
    ECHO = "echo", "Echo (offline diagnostic)"


class STTProvider(models.TextChoices):
    DEEPGRAM = "deepgram", "Deepgram"
    GROQ = "groq", "Groq"
    OPENAI = "openai", "OpenAI"
    LOCAL = "local", "Local (pocketsphinx, offline)"


class TTSProvider(models.TextChoices):
    OPENAI = "openai", "OpenAI"
    LOCAL = "local", "Local (espeak-ng, offline)"


class Voice(models.TextChoices):
    ALLOY = "alloy"
    ECHO = "echo"
    FABLE = "fable"
    ONYX = "onyx"
    NOVA = "nova"
    SHIMMER = "shimmer"


class AgentMode(models.TextChoices):
    ONE_TO_ONE = "one_to_one", "One-to-one"
    CONFERENCE = "conference", "Conference"


class ReplyPolicy(models.TextChoices):
    ALWAYS = "always", "Answer every turn"
    WHEN_ADDRESSED = "when_addressed", "Answer only when addressed"


SYSTEM_PROMPT_MAX_LENGTH = 4000
GREETING_MAX_LENGTH = 500
LLM_MODEL_MAX_LENGTH = 100
# Model names are data sent to a provider; keep them to a plain, safe alphabet.
LLM_MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$"


class TurnDetection(models.TextChoices):
    # the VAD hears speech stop; the local end-of-turn model, listening to the
    # audio, picks the minimum delay (finished) or the maximum (mid-sentence)
    MODEL = "model", "Model (VAD + local end-of-turn model)"
    VAD = "vad", "VAD (fixed delay)"
    STT = "stt", "STT endpointing"


# Endpointing delays (seconds), for a profile, a request or the deployment.
ENDPOINTING_DELAY_MAX = 10.0
