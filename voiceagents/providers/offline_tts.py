"""Offline text-to-speech: libespeak-ng (shipped in the espeakng-loader wheel) via ctypes.

Two faces over one engine:

- ``EspeakTTS``: a livekit-agents ``tts.TTS`` for the no-account demo agent.
- ``synthesize_pcm`` / ``synthesize_wav``: plain functions that tests and the stub
  servers use to give a simulated visitor (or a fake provider) a real voice.

libespeak-ng keeps its state in process globals (one voice, one callback, one set of
parameters), so every synthesis runs under one process-wide lock; the async face runs it
on a dedicated single-thread executor so the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from livekit import rtc
from livekit.agents import APIConnectOptions, APIError, tts, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

from .offline_stt import resample_pcm16

ESPEAK_SAMPLE_RATE = 22050
DEFAULT_VOICE = "en-us"
# espeak's own default speed
DEFAULT_RATE_WPM = 175

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_SSML = 0x10
_ESPEAK_RATE = 1
_EE_OK = 0

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakError(RuntimeError):
    """libespeak-ng refused a call (unknown voice, failed initialisation...)."""


class _EspeakEngine:
    """The one libespeak-ng instance of this process; use only while holding ``_LOCK``."""

    def __init__(self) -> None:
        import espeakng_loader  # type: ignore[import-untyped]

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synchronize.restype = ctypes.c_int

        data_path = espeakng_loader.get_data_path().encode()
        sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if sample_rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({sample_rate}) with data at {data_path!r}")
        self.sample_rate: int = sample_rate
        self._lib = lib
        self._chunks: list[np.ndarray] = []
        # ctypes frees a callback whose Python object is collected: keep it on the engine
        self._callback = _SYNTH_CALLBACK(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None

    def _on_audio(self, wav: ctypes.Array[ctypes.c_short], num_samples: int, _events: int) -> int:
        # espeak reuses its buffer after we return, so copy out before returning
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def set_voice(self, voice: str) -> None:
        if voice == self._voice:
            return
        if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise EspeakError(f"espeak-ng has no voice named {voice!r}")
        self._voice = voice

    def synthesize(self, text: str, *, voice: str, rate_wpm: int, ssml: bool = False) -> np.ndarray:
        self.set_voice(voice)
        self._lib.espeak_SetParameter(_ESPEAK_RATE, int(rate_wpm), 0)
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        flags = _ESPEAK_CHARS_UTF8 | (_ESPEAK_SSML if ssml else 0)
        status = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, flags, None, None)
        if status != _EE_OK:
            raise EspeakError(f"espeak_Synth failed with status {status}")
        self._lib.espeak_Synchronize()
        chunks, self._chunks = self._chunks, []
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(chunks).astype(np.int16, copy=False)


_LOCK = threading.Lock()
_ENGINE: _EspeakEngine | None = None
# one worker: the lock would serialise more of them anyway, and a pile of blocked threads
# in the default executor would starve the framework's own executor work
_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")


def _engine() -> _EspeakEngine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _EspeakEngine()
    return _ENGINE


def synthesize_samples(
    text: str,
    *,
    voice: str = DEFAULT_VOICE,
    rate_wpm: int = DEFAULT_RATE_WPM,
    sample_rate: int = ESPEAK_SAMPLE_RATE,
    ssml: bool = False,
) -> np.ndarray:
    """Speak ``text`` (SSML markup when ``ssml``: ``<break time="600ms"/>`` keeps a pause
    inside one sentence's intonation); return mono int16 samples at ``sample_rate``.
    Blocking, thread-safe."""
    with _LOCK:
        engine = _engine()
        samples = engine.synthesize(text, voice=voice, rate_wpm=rate_wpm, ssml=ssml)
        native_rate = engine.sample_rate
    return resample_pcm16(samples, native_rate, sample_rate)


def synthesize_pcm(
    text: str,
    *,
    voice: str = DEFAULT_VOICE,
    rate_wpm: int = DEFAULT_RATE_WPM,
    sample_rate: int = ESPEAK_SAMPLE_RATE,
) -> tuple[bytes, int]:
    """Speak ``text``; return ``(s16le mono bytes, sample_rate)``. Blocking, thread-safe."""
    samples = synthesize_samples(text, voice=voice, rate_wpm=rate_wpm, sample_rate=sample_rate)
    return samples.tobytes(), sample_rate


def synthesize_wav(
    text: str,
    path: str | Path,
    sample_rate: int = 48000,
    *,
    voice: str = DEFAULT_VOICE,
    rate_wpm: int = DEFAULT_RATE_WPM,
    lead_silence: float = 0.0,
    trail_silence: float = 0.0,
) -> Path:
    """Write ``text`` as spoken audio to a mono 16-bit WAV file; return its path.

    The silences let a test feed the file to a VAD or endpointer that needs a quiet
    stretch to notice the end of the utterance.
    """
    samples = synthesize_samples(text, voice=voice, rate_wpm=rate_wpm, sample_rate=sample_rate)
    lead = np.zeros(int(lead_silence * sample_rate), dtype=np.int16)
    trail = np.zeros(int(trail_silence * sample_rate), dtype=np.int16)
    out = Path(path)
    with wave.open(str(out), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(np.concatenate([lead, samples, trail]).tobytes())
    return out


def speech_frames(
    text: str,
    *,
    sample_rate: int = 48000,
    frame_ms: int = 10,
    lead_silence: float = 0.0,
    trail_silence: float = 0.0,
    voice: str = DEFAULT_VOICE,
) -> list[rtc.AudioFrame]:
    """``text`` spoken as a run of equal mono frames, as a room's audio track delivers it.

    The silences give a VAD or endpointer the quiet it needs to notice an utterance end;
    the last partial frame is padded with silence.
    """
    samples = synthesize_samples(text, voice=voice, sample_rate=sample_rate)
    per_frame = sample_rate * frame_ms // 1000
    lead = np.zeros(int(lead_silence * sample_rate), dtype=np.int16)
    trail = np.zeros(int(trail_silence * sample_rate), dtype=np.int16)
    audio = np.concatenate([lead, samples, trail])
    audio = np.concatenate([audio, np.zeros((-len(audio)) % per_frame, dtype=np.int16)])
    return [
        rtc.AudioFrame(audio[i : i + per_frame].tobytes(), sample_rate, 1, per_frame)
        for i in range(0, len(audio), per_frame)
    ]


def check_voice(voice: str) -> None:
    """Raise ``EspeakError`` unless espeak-ng knows ``voice``. Blocking."""
    with _LOCK:
        _engine().set_voice(voice)


class EspeakTTS(tts.TTS):
    """Offline TTS: espeak-ng speech as 22050 Hz mono s16le, no network, no account."""

    def __init__(self, *, voice: str = DEFAULT_VOICE, rate_wpm: int = DEFAULT_RATE_WPM) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=ESPEAK_SAMPLE_RATE,
            num_channels=1,
        )
        self._voice = voice
        self._rate_wpm = rate_wpm

    @property
    def model(self) -> str:
        return "espeak-ng"

    @property
    def provider(self) -> str:
        return "local"

    @property
    def voice(self) -> str:
        return self._voice

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> EspeakChunkedStream:
        return EspeakChunkedStream(tts=self, input_text=text, conn_options=conn_options)


class EspeakChunkedStream(tts.ChunkedStream):
    def __init__(self, *, tts: EspeakTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._espeak = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        loop = asyncio.get_running_loop()
        try:
            pcm = await loop.run_in_executor(
                _EXECUTOR,
                lambda: synthesize_samples(
                    self.input_text,
                    voice=self._espeak.voice,
                    rate_wpm=self._espeak._rate_wpm,
                    sample_rate=ESPEAK_SAMPLE_RATE,
                ),
            )
        except EspeakError as e:
            # retrying cannot teach espeak a voice it lacks
            raise APIError(str(e), retryable=False) from e

        output_emitter.initialize(
            request_id=utils.shortuuid("espeak_"),
            sample_rate=ESPEAK_SAMPLE_RATE,
            num_channels=1,
            mime_type="audio/pcm",
        )
        output_emitter.push(pcm.tobytes())
        output_emitter.flush()
