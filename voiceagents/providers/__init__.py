"""Speech, language and voice providers for the agent worker.

- ``factory``: configuration snapshot -> livekit-agents plugins + AgentSession kwargs.
- ``offline_stt`` / ``offline_tts``: pocketsphinx and espeak-ng, no account, no network.
- ``echo_llm``: a diagnostic responder (not an AI) for checking the audio path.

Names are re-exported lazily: the stub servers import ``offline_stt`` alone and should
not pay for importing every cloud plugin (livekit plugins also insist on being first
imported on the main thread, which ``factory`` does).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .echo_llm import EchoLLM
    from .factory import ProviderConfigError, Providers, build_providers, load_vad
    from .offline_stt import PocketSphinxSTT
    from .offline_tts import EspeakTTS, synthesize_pcm, synthesize_wav

_EXPORTS = {
    "EchoLLM": "echo_llm",
    "ProviderConfigError": "factory",
    "Providers": "factory",
    "build_providers": "factory",
    "load_vad": "factory",
    "PocketSphinxSTT": "offline_stt",
    "EspeakTTS": "offline_tts",
    "synthesize_pcm": "offline_tts",
    "synthesize_wav": "offline_tts",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
