"""Map a session's configuration snapshot to livekit-agents plugins.

The snapshot (resolved once by the API, stored on the session, passed as dispatch
metadata) names providers; this module turns names into configured plugin instances and
into the ``AgentSession`` keyword arguments that go with them.

Turn detection is always chosen explicitly (``turn_detection`` in the snapshot). Left to
itself, dev mode's ``AgentSession`` builds the cloud ``v1`` turn detector and an adaptive
interruption detector, which only LiveKit's cloud serves. Everything here runs offline:

- ``model`` (the default): the session's VAD hears speech stop, and
  livekit-local-inference's audio end-of-turn model, ``TurnDetector(version="v1-mini")``
  (its weights ship inside the wheel), hears whether the sentence sounded finished: the
  turn ends ``min_endpointing_delay`` after the last speech when it did, and
  ``max_endpointing_delay`` after when it did not ("I'd like to book, um...").
- ``vad``: the VAD alone, a fixed ``min_endpointing_delay``.
- In both, the VAD's backend is ``AGENT_VAD_BACKEND``: ``native`` (livekit-local-inference's
  streaming VAD, the default, chosen by bench/bench_capacity.py) or ``silero`` (the
  plugin's ONNX model); both ship in their wheels. A non-streaming STT is wrapped here in
  ``stt.StreamAdapter`` with the conversation's VAD listener (conversation_vad.py), so
  one model run per audio window serves both the turns and the STT's utterances
  (``with_one_vad_stream``, for a session that hears one person).
- ``stt``: the STT's own endpointing ends turns and the session gets no VAD.
  Non-streaming STTs (openai, groq, local) cannot endpoint on their own: such an STT is
  wrapped here in ``stt.StreamAdapter`` with the process's VAD, which only cuts audio into
  utterances for the STT. Interruptions then come from transcripts.

Interruption handling is pinned to ``mode="vad"`` so the framework never builds the
cloud-backed adaptive detector; ``allow_interruptions`` switches it on or off.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args
from urllib.parse import urlparse

import numpy as np
import openai as openai_sdk
from livekit.agents import inference, llm, stt, tts, vad
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.voice.turn import TurnHandlingOptions
from livekit.plugins import deepgram, groq, openai, silero
from livekit.plugins.openai.models import TTSVoices

from .clients import GROQ_DEFAULT_BASE_URL, openai_client
from .conversation_vad import ConversationVAD
from .echo_llm import EchoLLM
from .offline_stt import PocketSphinxSTT
from .offline_tts import DEFAULT_VOICE as ESPEAK_DEFAULT_VOICE
from .offline_tts import EspeakError, EspeakTTS, check_voice
from .speech_end import SpeechEndVAD

LLM_PROVIDERS = ("openai", "groq", "echo")
STT_PROVIDERS = ("deepgram", "groq", "openai", "local")
TTS_PROVIDERS = ("openai", "local")
OPENAI_TTS_VOICES: tuple[str, ...] = get_args(TTSVoices)

DEFAULT_LLM_MODELS = {"openai": "gpt-4o-mini", "groq": "llama-3.3-70b-versatile"}
OPENAI_STT_MODEL = "gpt-4o-mini-transcribe"
GROQ_STT_MODEL = "whisper-large-v3-turbo"
DEEPGRAM_STT_MODEL = "nova-3"
OPENAI_TTS_MODEL = "gpt-4o-mini-tts"
OPENAI_TTS_DEFAULT_VOICE = "alloy"

TurnDetection = Literal["model", "vad", "stt"]
TURN_DETECTIONS: tuple[TurnDetection, ...] = get_args(TurnDetection)
# the local end-of-turn model; named, because left unset dev mode picks the cloud "v1"
TURN_DETECTOR_VERSION: inference.TurnDetectorVersions = "v1-mini"
# settings.AGENT_MAX_ENDPOINTING_DELAY_SECONDS when not set: the framework's own default
# for a streaming turn detector
DEFAULT_MAX_ENDPOINTING_DELAY = 2.5
# settings.AGENT_INTERRUPTION_MIN_SECONDS / AGENT_FALSE_INTERRUPTION_TIMEOUT_SECONDS when not set
DEFAULT_INTERRUPTION_MIN_DURATION = 0.1
DEFAULT_FALSE_INTERRUPTION_TIMEOUT = 1.0
# settings.AGENT_ENDPOINTING_DELAY_SECONDS / AGENT_VAD_MIN_SILENCE_SECONDS when not set
DEFAULT_ENDPOINTING_DELAY = 0.5
DEFAULT_VAD_MIN_SILENCE = 0.25
# settings.AGENT_VAD_DEACTIVATION_THRESHOLD when not set: silero's own default
# (its activation threshold 0.5 minus 0.15)
DEFAULT_VAD_DEACTIVATION = 0.35


class ProviderConfigError(ValueError):
    """A configuration snapshot names a provider that cannot be built here, and why."""


@dataclass(frozen=True)
class Providers:
    """The plugins for one session, and how the session must use them."""

    stt: stt.STT
    llm: llm.LLM
    tts: tts.TTS
    vad: vad.VAD | None
    turn_detection: TurnDetection
    allow_interruptions: bool
    endpointing_delay: float = DEFAULT_ENDPOINTING_DELAY
    preemptive_tts: bool = True
    max_endpointing_delay: float = DEFAULT_MAX_ENDPOINTING_DELAY
    # the end-of-turn model, for turn_detection "model"
    turn_detector: inference.TurnDetector | None = None
    interruption_min_duration: float = DEFAULT_INTERRUPTION_MIN_DURATION
    false_interruption_timeout: float = DEFAULT_FALSE_INTERRUPTION_TIMEOUT

    def turn_handling(self) -> TurnHandlingOptions:
        return {
            "turn_detection": self.turn_detector if self.turn_detection == "model" else self.turn_detection,
            # the voice pauses on a short sound and resumes unless words follow (the
            # framework's false-interruption handling): quick barge-in, and a cough or
            # a backchannel does not cost the reply
            "interruption": {
                "enabled": self.allow_interruptions,
                "mode": "vad",
                "min_duration": self.interruption_min_duration,
                "min_words": 0,
                "resume_false_interruption": True,
                "false_interruption_timeout": self.false_interruption_timeout,
            },
            "endpointing": {"min_delay": self.endpointing_delay, "max_delay": self.max_endpointing_delay},
            # the reply is generated from the final transcript while the endpointing
            # delay runs, and kept when the turn ends with that same transcript
            "preemptive_generation": {"enabled": True, "preemptive_tts": self.preemptive_tts},
        }

    def session_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AgentSession(...)`` (livekit-agents 1.8.9 names).

        ``vad`` is always passed, even as None: omitted, AgentSession would build its own.
        """
        return {
            "stt": self.stt,
            "llm": self.llm,
            "tts": self.tts,
            "vad": self.vad,
            "turn_handling": self.turn_handling(),
        }

    async def aclose(self) -> None:
        """Close the plugins' clients. The shared VAD stays loaded for the next session."""
        await self.stt.aclose()
        if isinstance(self.stt, stt.StreamAdapter):
            await self.stt.wrapped_stt.aclose()  # the adapter closes only itself
        await self.llm.aclose()
        await self.tts.aclose()


_VAD_LOCK = threading.Lock()
_VADS: dict[tuple[float, float, str], vad.VAD] = {}
VAD_BACKENDS = ("native", "native-thread", "silero")
DEFAULT_VAD_BACKEND = "native"


class InlineExecutor(concurrent.futures.Executor):
    """Runs a call at once on the calling thread.

    The native VAD's window takes microseconds; handing each 32 ms window to a thread
    and back costs the event loop more than running it in place."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the awaiting caller, as a pool would
            future.set_exception(exc)
        return future


def _vad_model(backend: str, min_silence: float, deactivation_threshold: float) -> vad.VAD:
    if backend == "silero":
        return silero.VAD.load(
            min_silence_duration=min_silence, deactivation_threshold=deactivation_threshold
        )
    from livekit.agents import inference

    return inference.VAD(
        min_silence_duration=min_silence,
        deactivation_threshold=deactivation_threshold,
        # "native-thread" keeps upstream's one worker thread per stream, for comparison
        executor=None if backend == "native-thread" else InlineExecutor(),
    )


def load_vad(
    min_silence: float = DEFAULT_VAD_MIN_SILENCE,
    deactivation_threshold: float = DEFAULT_VAD_DEACTIVATION,
    backend: str = DEFAULT_VAD_BACKEND,
) -> vad.VAD:
    """The process's VAD, loaded on first call (blocking) and then reused.

    One instance serves every session in the process: each ``stream()`` keeps its own
    model state. Call it in a worker's prewarm to pay the load before the first job.
    ``backend``: one of VAD_BACKENDS. ``min_silence``: seconds of silence that end an utterance.
    ``deactivation_threshold``: the smoothed speech probability below which a window
    counts as silence once speech has started. The endpointing delay is counted from the
    first such window, so the higher it is, the sooner after the last word the turn ends.
    Wrapped in ``SpeechEndVAD``, which dates that first window back to the last audible
    sound (speech_end.py).
    """
    if backend not in VAD_BACKENDS:
        raise ProviderConfigError(
            f"unknown VAD backend {backend!r}; expected one of {', '.join(VAD_BACKENDS)}"
        )
    key = (min_silence, deactivation_threshold, backend)
    with _VAD_LOCK:
        loaded = _VADS.get(key)
        if loaded is None:
            loaded = _VADS[key] = SpeechEndVAD(_vad_model(backend, min_silence, deactivation_threshold))
        return loaded


_TURN_DETECTOR: inference.TurnDetector | None = None


def load_turn_detector() -> inference.TurnDetector:
    """The process's end-of-turn model, loaded on first call and then shared.

    Each session's ``stream()`` keeps its own audio buffer over one native model (the
    weights load once per process, or once in the forkserver). Call it in a worker's
    prewarm: it also runs one prediction, so the first turn of a job pays no load.
    """
    global _TURN_DETECTOR
    with _VAD_LOCK:
        if _TURN_DETECTOR is None:
            from livekit import local_inference

            local_inference.init_eot()
            with local_inference.EOT() as eot:
                eot.predict(np.zeros(local_inference.EOT_MAX_SAMPLES, dtype=np.int16))
            _TURN_DETECTOR = inference.TurnDetector(version=TURN_DETECTOR_VERSION)
        return _TURN_DETECTOR


def vad_settings(settings: Any) -> tuple[float, float, str]:
    """(VAD min silence, VAD deactivation threshold, VAD backend) from settings, with our defaults."""
    return (
        turn_settings(settings)[0],
        float(getattr(settings, "AGENT_VAD_DEACTIVATION_THRESHOLD", DEFAULT_VAD_DEACTIVATION)),
        str(getattr(settings, "AGENT_VAD_BACKEND", DEFAULT_VAD_BACKEND)),
    )


def settings_vad(settings: Any) -> vad.VAD:
    """``load_vad`` as the settings configure it."""
    return load_vad(*vad_settings(settings))


def turn_settings(settings: Any) -> tuple[float, float, bool]:
    """(VAD min silence, endpointing delay, preemptive TTS) from settings, with our defaults."""
    return (
        float(getattr(settings, "AGENT_VAD_MIN_SILENCE_SECONDS", DEFAULT_VAD_MIN_SILENCE)),
        float(getattr(settings, "AGENT_ENDPOINTING_DELAY_SECONDS", DEFAULT_ENDPOINTING_DELAY)),
        bool(getattr(settings, "AGENT_PREEMPTIVE_TTS", True)),
    )


def prewarm_clients(settings: Any) -> None:
    """Make the shared HTTP clients of every provider this deployment has a key for.

    Called in a job process's prewarm, so a job's first plugin finds its client
    (and its SSL context) ready. A provider without a key gets none: a session
    that names it fails at build time with the reason.
    """
    for make in (_openai, _groq):
        try:
            make(settings, "prewarm")
        except ProviderConfigError:
            pass


def build_providers(config: dict[str, Any], *, settings: Any) -> Providers:
    """Build the plugins a configuration snapshot names.

    ``settings`` needs OPENAI_API_KEY, OPENAI_BASE_URL, GROQ_API_KEY, GROQ_BASE_URL,
    DEEPGRAM_API_KEY, DEEPGRAM_BASE_URL (an empty URL means the provider's default).
    Raises ProviderConfigError with a reason a human can act on.
    """
    llm_provider = _choice(config, "llm_provider", LLM_PROVIDERS, "LLM")
    stt_provider = _choice(config, "stt_provider", STT_PROVIDERS, "STT")
    tts_provider = _choice(config, "tts_provider", TTS_PROVIDERS, "TTS")
    allow_interruptions = bool(config.get("allow_interruptions", True))

    try:
        llm_plugin = _build_llm(llm_provider, config, settings)
        stt_plugin = _build_stt(stt_provider, settings)
        tts_plugin = _build_tts(tts_provider, config, settings)
    except ValueError as e:
        if isinstance(e, ProviderConfigError):
            raise
        # the plugins validate their own arguments with ValueError
        raise ProviderConfigError(str(e)) from e

    turn_detection, min_delay, max_delay = endpointing(config, settings)
    _, _, preemptive_tts = turn_settings(settings)
    session_vad: vad.VAD | None = None
    detector: inference.TurnDetector | None = None
    if turn_detection == "stt":
        if not stt_plugin.capabilities.streaming:
            stt_plugin = stt.StreamAdapter(stt=stt_plugin, vad=settings_vad(settings))
    else:
        session_vad = settings_vad(settings)
        if turn_detection == "model":
            detector = load_turn_detector()

    return Providers(
        stt=stt_plugin,
        llm=llm_plugin,
        tts=tts_plugin,
        vad=session_vad,
        turn_detection=turn_detection,
        allow_interruptions=allow_interruptions,
        endpointing_delay=min_delay,
        preemptive_tts=preemptive_tts,
        max_endpointing_delay=max_delay,
        turn_detector=detector,
        interruption_min_duration=float(
            getattr(settings, "AGENT_INTERRUPTION_MIN_SECONDS", DEFAULT_INTERRUPTION_MIN_DURATION)
        ),
        false_interruption_timeout=float(
            getattr(settings, "AGENT_FALSE_INTERRUPTION_TIMEOUT_SECONDS", DEFAULT_FALSE_INTERRUPTION_TIMEOUT)
        ),
    )


def endpointing(config: dict[str, Any], settings: Any) -> tuple[TurnDetection, float, float]:
    """(turn detection, min delay, max delay) of a snapshot.

    Snapshots made before turn detection was a setting have none: theirs follows
    ``vad_enabled`` (vad or stt) and the deployment's delays, as it did then.
    """
    raw = config.get("turn_detection") or ("vad" if config.get("vad_enabled", True) else "stt")
    mode = str(raw).strip().lower()
    if mode not in TURN_DETECTIONS:
        raise ProviderConfigError(
            f"unknown turn detection {raw!r}; expected one of " + ", ".join(repr(t) for t in TURN_DETECTIONS)
        )
    _, default_min, _ = turn_settings(settings)
    if mode == "model":
        default_min = float(getattr(settings, "AGENT_MODEL_ENDPOINTING_DELAY_SECONDS", default_min))
    default_max = float(
        getattr(settings, "AGENT_MAX_ENDPOINTING_DELAY_SECONDS", DEFAULT_MAX_ENDPOINTING_DELAY)
    )
    given_min, given_max = config.get("min_endpointing_delay"), config.get("max_endpointing_delay")
    try:
        low = float(default_min if given_min is None else given_min)
        high = float(default_max if given_max is None else given_max)
    except (TypeError, ValueError) as e:
        raise ProviderConfigError(f"endpointing delays must be numbers: {e}") from e
    if low < 0 or high < 0:
        raise ProviderConfigError("endpointing delays must not be negative")
    return cast(TurnDetection, mode), low, max(high, low)


def with_one_vad_stream(providers: Providers) -> Providers:
    """``providers`` for a session that hears one person: a non-streaming STT cut into
    utterances by the session's own VAD inference (conversation_vad.py).

    Left to the framework, such an STT gets a ``StreamAdapter`` that opens a second
    stream on the same VAD and runs the model again on the same audio. Not for a
    conference, whose per-person STT streams each need their own VAD stream.
    """
    if providers.vad is None or providers.stt.capabilities.streaming:
        return providers
    shared = ConversationVAD(providers.vad)
    return dataclasses.replace(
        providers, vad=shared, stt=stt.StreamAdapter(stt=providers.stt, vad=shared.listener())
    )


def _choice(config: dict[str, Any], key: str, allowed: tuple[str, ...], label: str) -> str:
    value = str(config.get(key) or "").strip().lower()
    if value not in allowed:
        raise ProviderConfigError(
            f"unknown {label} provider {config.get(key)!r} in {key}; expected one of "
            + ", ".join(repr(a) for a in allowed)
        )
    return value


def _key(settings: Any, name: str, provider: str, role: str) -> str:
    value = str(getattr(settings, name, "") or "")
    if not value:
        raise ProviderConfigError(f"{name} is not set; the {provider!r} {role} provider needs it")
    return value


def _url(settings: Any, name: str) -> NotGivenOr[str]:
    value = str(getattr(settings, name, "") or "").strip()
    return value or NOT_GIVEN


def _openai(settings: Any, role: str) -> openai_sdk.AsyncClient:
    # the process's shared client (providers/clients.py): no SSL context built per plugin
    return openai_client(
        api_key=_key(settings, "OPENAI_API_KEY", "openai", role),
        base_url=str(getattr(settings, "OPENAI_BASE_URL", "") or "").strip(),
    )


def _groq(settings: Any, role: str) -> openai_sdk.AsyncClient:
    # an unset GROQ_BASE_URL means Groq's public endpoint, not the SDK's OpenAI default
    base_url = str(getattr(settings, "GROQ_BASE_URL", "") or "").strip()
    return openai_client(
        api_key=_key(settings, "GROQ_API_KEY", "groq", role),
        base_url=base_url or GROQ_DEFAULT_BASE_URL,
    )


def _build_llm(provider: str, config: dict[str, Any], settings: Any) -> llm.LLM:
    model = str(config.get("llm_model") or "").strip()
    if provider == "openai":
        return openai.LLM(
            model=model or DEFAULT_LLM_MODELS["openai"],
            client=_openai(settings, "LLM"),
        )
    if provider == "groq":
        # groq's plugins check for a key even when given a client
        return groq.LLM(
            model=model or DEFAULT_LLM_MODELS["groq"],
            api_key=_key(settings, "GROQ_API_KEY", "groq", "LLM"),
            client=_groq(settings, "LLM"),
        )
    return EchoLLM(greeting=str(config.get("greeting_message") or ""))


def _build_stt(provider: str, settings: Any) -> stt.STT:
    if provider == "deepgram":
        api_key = _key(settings, "DEEPGRAM_API_KEY", "deepgram", "STT")
        base_url = _url(settings, "DEEPGRAM_BASE_URL")
        extra: dict[str, Any] = {}
        if isinstance(base_url, str):
            extra["base_url"] = _deepgram_listen_url(base_url)
        return deepgram.STT(model=DEEPGRAM_STT_MODEL, language="en-US", api_key=api_key, **extra)
    if provider == "groq":
        return groq.STT(
            model=GROQ_STT_MODEL,
            language="en",
            api_key=_key(settings, "GROQ_API_KEY", "groq", "STT"),
            client=_groq(settings, "STT"),
        )
    if provider == "openai":
        return openai.STT(
            model=OPENAI_STT_MODEL,
            language="en",
            client=_openai(settings, "STT"),
            # the realtime websocket transcription needs its own VAD; the HTTP endpoint
            # plus our StreamAdapter/session VAD is the one path all three share
            use_realtime=False,
        )
    return PocketSphinxSTT()


def _build_tts(provider: str, config: dict[str, Any], settings: Any) -> tts.TTS:
    voice = str(config.get("tts_voice") or "").strip()
    if provider == "openai":
        voice = voice or OPENAI_TTS_DEFAULT_VOICE
        if voice not in OPENAI_TTS_VOICES:
            raise ProviderConfigError(
                f"tts_voice {voice!r} is not an OpenAI voice; expected one of " + ", ".join(OPENAI_TTS_VOICES)
            )
        return openai.TTS(
            model=OPENAI_TTS_MODEL,
            voice=voice,
            client=_openai(settings, "TTS"),
            # raw 24 kHz s16le: nothing to decode, first audio as soon as bytes arrive
            # (the plugin's default is mp3)
            response_format="pcm",
        )
    # profiles made for OpenAI carry its voice names; espeak has none of them
    if not voice or voice in OPENAI_TTS_VOICES:
        voice = ESPEAK_DEFAULT_VOICE
    try:
        check_voice(voice)
    except EspeakError as e:
        raise ProviderConfigError(f"tts_voice {voice!r}: {e}") from e
    return EspeakTTS(voice=voice)


def _deepgram_listen_url(base_url: str) -> str:
    # deepgram.STT wants the full listen endpoint; accept a bare host as well
    parsed = urlparse(base_url)
    if parsed.path in ("", "/"):
        return base_url.rstrip("/") + "/v1/listen"
    return base_url
