"""Deepgram's listen API as the livekit deepgram plugin uses it.

``GET /v1/listen`` (websocket, options in the query string, ``Authorization: Token
<key>``): binary frames are linear16 audio at the query's ``sample_rate``; an energy
endpointer cuts it into utterances, each transcribed by pocketsphinx. The stub sends
``SpeechStarted`` (``vad_events``), interim ``Results`` about once a second of speech
(``interim_results``), a final ``Results`` with ``speech_final`` when the speaker pauses,
``UtteranceEnd`` (``utterance_end_ms``), and ``Metadata`` after ``CloseStream``. Text
frames ``KeepAlive``, ``Finalize`` and ``CloseStream`` are honoured.

``POST /v1/listen`` (pre-recorded): a WAV body -> the pre-recorded JSON shape.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from voiceagents.providers.offline_stt import RecognizedWord, pcm16_to_mono, transcribe_words

from . import STATE_KEY, StubState, hang, record_http

_WINDOW_S = 0.01
_START_WINDOWS = 3  # 30 ms of energy before we call it speech: clicks are not speech
_PREROLL_WINDOWS = 20  # keep 200 ms before the onset: consonants start quiet
_INTERIM_EVERY_S = 1.0
_MAX_UTTERANCE_S = 15.0
_MODEL_UUID = "00000000-0000-4000-8000-00000000stub"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/listen", listen)
    app.router.add_post("/v1/listen", listen)


def _flag(query: Any, name: str, default: bool) -> bool:
    value = query.get(name)
    if value is None:
        return default
    return str(value).lower() == "true"


@dataclass
class Segment:
    """Audio of one utterance (or of its first part, for an interim)."""

    samples: np.ndarray
    start: float  # stream time of the first sample, seconds
    last_voiced_end: float
    kind: str  # "interim" | "final"
    speech_final: bool = False
    from_finalize: bool = False


@dataclass
class EndpointerEvent:
    type: str  # "speech_started" | "interim" | "final" | "utterance_end"
    time: float = 0.0
    segment: Segment | None = None


class Endpointer:
    """Energy-based endpointing over 10 ms windows of mono int16 audio.

    Stream time is counted in audio, not wall clock, as Deepgram counts it: a test that
    pushes audio faster than real time gets the same results.
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        threshold: float,
        min_silence_ms: int | None,
        interim: bool,
        utterance_end_ms: int | None,
    ) -> None:
        self._window = max(1, sample_rate // 100)
        self._rate = sample_rate
        self._threshold = threshold
        self._min_silence_windows = None if min_silence_ms is None else max(1, math.ceil(min_silence_ms / 10))
        self._interim = interim
        self._utterance_end_windows = (
            None if utterance_end_ms is None else max(1, math.ceil(utterance_end_ms / 10))
        )
        self._pending = np.zeros(0, dtype=np.int16)
        self._index = 0  # windows seen
        self._preroll: deque[np.ndarray] = deque(maxlen=_PREROLL_WINDOWS)
        self._voiced_run = 0
        self._speaking = False
        self._utterance: list[np.ndarray] = []
        self._utterance_start_index = 0
        self._silence_run = 0
        self._last_voiced_index = 0
        self._last_interim_index = 0
        self._last_word_end: float | None = None  # awaiting UtteranceEnd

    def _time(self, index: int) -> float:
        return index * self._window / self._rate

    def _segment(self, kind: str, **flags: bool) -> Segment:
        samples = np.concatenate(self._utterance) if self._utterance else np.zeros(0, np.int16)
        return Segment(
            samples=samples,
            start=self._time(self._utterance_start_index),
            last_voiced_end=self._time(self._last_voiced_index + 1),
            kind=kind,
            **flags,
        )

    def feed(self, samples: np.ndarray) -> list[EndpointerEvent]:
        events: list[EndpointerEvent] = []
        data = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        n_windows = len(data) // self._window
        self._pending = data[n_windows * self._window :].copy()
        for i in range(n_windows):
            window = data[i * self._window : (i + 1) * self._window]
            rms = float(np.sqrt(np.mean(window.astype(np.float64) ** 2)))
            events.extend(self._step(window, rms > self._threshold))
            self._index += 1
        return events

    def _step(self, window: np.ndarray, voiced: bool) -> list[EndpointerEvent]:
        events: list[EndpointerEvent] = []
        if not self._speaking:
            self._preroll.append(window)
            self._voiced_run = self._voiced_run + 1 if voiced else 0
            if self._last_word_end is not None and self._utterance_end_windows is not None:
                silent_for = self._index + 1 - round(self._last_word_end * self._rate / self._window)
                if silent_for >= self._utterance_end_windows:
                    events.append(EndpointerEvent("utterance_end", time=self._last_word_end))
                    self._last_word_end = None
            if self._voiced_run >= _START_WINDOWS:
                self._speaking = True
                self._utterance = list(self._preroll)
                self._utterance_start_index = self._index + 1 - len(self._preroll)
                self._last_voiced_index = self._index
                self._last_interim_index = self._index
                self._silence_run = 0
                onset = self._index + 1 - _START_WINDOWS
                events.append(EndpointerEvent("speech_started", time=self._time(onset)))
            return events

        self._utterance.append(window)
        if voiced:
            self._silence_run = 0
            self._last_voiced_index = self._index
        else:
            self._silence_run += 1
        if self._min_silence_windows is not None and self._silence_run >= self._min_silence_windows:
            events.append(self._end(speech_final=True))
        elif (self._index - self._utterance_start_index) * _WINDOW_S >= _MAX_UTTERANCE_S:
            # a monologue still gets finals, as Deepgram cuts long speech
            events.append(self._end(speech_final=False))
        elif self._interim and self._index - self._last_interim_index >= _INTERIM_EVERY_S / _WINDOW_S:
            self._last_interim_index = self._index
            events.append(EndpointerEvent("interim", segment=self._segment("interim")))
        return events

    def _end(self, *, speech_final: bool, from_finalize: bool = False) -> EndpointerEvent:
        segment = self._segment("final", speech_final=speech_final, from_finalize=from_finalize)
        self._speaking = False
        self._utterance = []
        self._preroll.clear()
        self._voiced_run = 0
        self._last_word_end = segment.last_voiced_end
        return EndpointerEvent("final", segment=segment)

    def finalize(self) -> EndpointerEvent | None:
        """End the current utterance now (client ``Finalize``/``CloseStream``)."""
        if not self._speaking:
            return None
        return self._end(speech_final=False, from_finalize=True)

    @property
    def audio_seconds(self) -> float:
        return self._time(self._index)


class _ListenSession:
    """One websocket: reads audio and control frames, answers in order from one task."""

    def __init__(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        opts: dict[str, Any],
        summary: dict[str, Any],
    ) -> None:
        self._summary = summary
        self._state: StubState = request.app[STATE_KEY]
        self._ws = ws
        self._opts = opts
        self.request_id = str(uuid.uuid4())
        self._outbox: asyncio.Queue[EndpointerEvent | dict[str, Any] | None] = asyncio.Queue()
        self._pending_interims = 0
        self._sha = hashlib.sha256()
        self.endpointer = Endpointer(
            opts["sample_rate"],
            threshold=self._state.energy_threshold,
            min_silence_ms=(
                None
                if opts["endpointing"] is None
                else max(opts["endpointing"], self._state.min_endpointing_ms)
            ),
            interim=opts["interim_results"],
            utterance_end_ms=opts["utterance_end_ms"],
        )

    def _mode(self) -> str:
        return self._state.behaviour("listen").mode

    async def run(self) -> None:
        summary = self._summary
        sender = asyncio.create_task(self._send_loop())
        try:
            async for msg in self._ws:
                if self._mode() == "error":
                    await self._ws.close(code=1011, message=b"stub was told to fail")
                    break
                if msg.type == WSMsgType.BINARY:
                    summary["audio_bytes"] += len(msg.data)
                    self._sha.update(msg.data)
                    samples = pcm16_to_mono(msg.data, self._opts["channels"])
                    for event in self.endpointer.feed(samples):
                        self._queue(event)
                elif msg.type == WSMsgType.TEXT:
                    summary["text_messages"].append(msg.data)
                    kind = _control_type(msg.data)
                    if kind == "Finalize":
                        self._queue(self.endpointer.finalize() or self._empty_final())
                    elif kind == "CloseStream":
                        if (last := self.endpointer.finalize()) is not None:
                            self._queue(last)
                        self._outbox.put_nowait(self._metadata())
                        break
                    # KeepAlive (and anything else) just keeps the socket open
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._outbox.put_nowait(None)
            await sender
        if not self._ws.closed:
            await self._ws.close()

    def _queue(self, event: EndpointerEvent) -> None:
        if event.type == "interim":
            # pocketsphinx is slower than real time on long audio; drop interims it can't keep up with
            if self._pending_interims:
                return
            self._pending_interims += 1
        self._outbox.put_nowait(event)

    def _empty_final(self) -> EndpointerEvent:
        now = self.endpointer.audio_seconds
        return EndpointerEvent(
            "final",
            segment=Segment(
                samples=np.zeros(0, np.int16),
                start=now,
                last_voiced_end=now,
                kind="final",
                from_finalize=True,
            ),
        )

    async def _send_loop(self) -> None:
        while (item := await self._outbox.get()) is not None:
            if isinstance(item, EndpointerEvent) and item.type == "interim":
                self._pending_interims -= 1
            if self._mode() != "ok":
                continue  # stalled (or failing): hear the audio, answer nothing
            if isinstance(item, dict):
                await self._send(item)
                continue
            if item.type == "speech_started":
                if self._opts["vad_events"]:
                    await self._send({"type": "SpeechStarted", "channel": [0, 1], "timestamp": item.time})
            elif item.type == "utterance_end":
                await self._send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": item.time})
            else:
                assert item.segment is not None
                await self._send(await self._results(item.segment))

    async def _send(self, message: dict[str, Any]) -> None:
        # hang/stall: the socket stays open and silent; error closes it on the next frame in
        if self._mode() != "ok" or self._ws.closed:
            return
        try:
            await self._ws.send_str(json.dumps(message))
        except ConnectionError:
            pass  # the client hung up while we were transcribing: nobody to tell

    async def _results(self, segment: Segment) -> dict[str, Any]:
        text, words = await _transcribe(self._state, segment.samples, self._opts["sample_rate"])
        if segment.kind == "final" and not text and len(segment.samples):
            text = self._state.fallback_transcript
        if segment.kind == "final":
            self._summary["transcripts"].append(text)
        duration = len(segment.samples) / self._opts["sample_rate"]
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(duration, 3),
            "start": round(segment.start, 3),
            "is_final": segment.kind == "final",
            "speech_final": segment.speech_final,
            "from_finalize": segment.from_finalize,
            "channel": {"alternatives": [_alternative(text, words, segment.start, self._opts["punctuate"])]},
            "metadata": {
                "request_id": self.request_id,
                "model_info": {"name": self._opts["model"], "version": "stub", "arch": "stub"},
                "model_uuid": _MODEL_UUID,
            },
        }

    def _metadata(self) -> dict[str, Any]:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": self._sha.hexdigest(),
            "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "duration": round(self.endpointer.audio_seconds, 3),
            "channels": self._opts["channels"],
            "models": [_MODEL_UUID],
            "model_info": {_MODEL_UUID: {"name": self._opts["model"], "version": "stub", "arch": "stub"}},
        }


def _control_type(data: str) -> str:
    try:
        message = json.loads(data)
    except json.JSONDecodeError:
        return ""
    return str(message.get("type", "")) if isinstance(message, dict) else ""


async def _transcribe(
    state: StubState, samples: np.ndarray, sample_rate: int
) -> tuple[str, list[RecognizedWord]]:
    if state.fixed_transcript is not None:
        return state.fixed_transcript, []
    if len(samples) == 0:
        return "", []
    words = await asyncio.to_thread(transcribe_words, samples, sample_rate, 1)
    return " ".join(w.word for w in words), words


def _alternative(text: str, words: list[RecognizedWord], offset: float, punctuate: bool) -> dict[str, Any]:
    transcript = text
    if punctuate and text:
        transcript = text[0].upper() + text[1:] + "."
    out_words = []
    for i, w in enumerate(words):
        punctuated = w.word
        if punctuate:
            if i == 0:
                punctuated = punctuated[:1].upper() + punctuated[1:]
            if i == len(words) - 1:
                punctuated += "."
        out_words.append(
            {
                "word": w.word,
                "start": round(offset + w.start, 3),
                "end": round(offset + w.end, 3),
                "confidence": round(w.confidence, 3),
                "punctuated_word": punctuated,
            }
        )
    if words:
        confidence = sum(w.confidence for w in words) / len(words)
    else:
        confidence = 1.0 if text else 0.0  # a configured transcript is certain
    return {"transcript": transcript, "confidence": round(confidence, 3), "words": out_words}


def _parse_options(query: Any) -> dict[str, Any]:
    """The query options the stub honours; raises ValueError like Deepgram's 400."""
    encoding = query.get("encoding")
    endpointing_raw = str(query.get("endpointing", "10")).lower()
    utterance_end = query.get("utterance_end_ms")
    opts: dict[str, Any] = {
        "encoding": encoding,
        "sample_rate": int(query["sample_rate"]) if query.get("sample_rate") else None,
        "channels": int(query.get("channels", "1")),
        "interim_results": _flag(query, "interim_results", False),
        "punctuate": _flag(query, "punctuate", False) or _flag(query, "smart_format", False),
        "vad_events": _flag(query, "vad_events", False),
        "endpointing": None if endpointing_raw == "false" else int(endpointing_raw),
        "utterance_end_ms": int(utterance_end) if utterance_end else None,
        "model": str(query.get("model", "base")),
        "language": str(query.get("language", "en")),
    }
    if encoding is not None and encoding != "linear16":
        raise ValueError(f"the stub only decodes linear16 audio, not {encoding!r}")
    if encoding == "linear16" and not opts["sample_rate"]:
        raise ValueError("sample_rate is required with encoding=linear16")
    if opts["channels"] < 1:
        raise ValueError("channels must be at least 1")
    return opts


def _deepgram_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"err_code": code, "err_msg": message, "request_id": str(uuid.uuid4())}, status=status
    )


async def listen(request: web.Request) -> web.StreamResponse:
    state: StubState = request.app[STATE_KEY]
    summary: dict[str, Any] = {"audio_bytes": 0, "text_messages": [], "transcripts": []}
    recorded = record_http(request, "listen", summary)

    auth = request.headers.get("Authorization", "")
    key = auth[len("Token ") :] if auth.startswith("Token ") else None
    if not state.check_key(key):
        return _deepgram_error(401, "INVALID_AUTH", "Invalid credentials.")
    behaviour = state.behaviour("listen")
    if behaviour.latency > 0:
        await asyncio.sleep(behaviour.latency)
    if behaviour.mode == "error":
        return _deepgram_error(behaviour.status, "INTERNAL_SERVER_ERROR", "The stub was told to fail.")
    if behaviour.mode == "hang":
        await hang(request.app)
        return _deepgram_error(503, "UNAVAILABLE", "The stub is shutting down.")
    try:
        opts = _parse_options(request.query)
    except (ValueError, KeyError) as e:
        return _deepgram_error(400, "Bad Request", str(e))

    if request.method == "POST":
        return await _prerecorded(request, state, opts, recorded)

    if not opts["sample_rate"]:
        return _deepgram_error(400, "Bad Request", "streaming needs encoding=linear16&sample_rate=N")
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await _ListenSession(request, ws, opts, summary).run()
    return ws


async def _prerecorded(
    request: web.Request, state: StubState, opts: dict[str, Any], recorded: Any
) -> web.StreamResponse:
    from .openai_stub import decode_audio

    body = await request.read()
    recorded.body["audio_bytes"] = len(body)
    if opts["encoding"] == "linear16":
        samples = pcm16_to_mono(body, opts["channels"])
        rate = opts["sample_rate"]
    else:
        try:
            interleaved, rate, channels = await asyncio.to_thread(decode_audio, body)
        except Exception as e:
            return _deepgram_error(400, "Bad Request", f"could not decode the audio: {e}")
        samples = pcm16_to_mono(interleaved, channels)
    text, words = await _transcribe(state, samples, rate)
    if not text and len(samples):
        text = state.fallback_transcript
    recorded.transcript = text
    if state.behaviour("listen").mode == "stall":
        await hang(request.app)
    request_id = str(uuid.uuid4())
    return web.json_response(
        {
            "metadata": {
                "request_id": request_id,
                "sha256": hashlib.sha256(body).hexdigest(),
                "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "duration": round(len(samples) / rate, 3) if rate else 0.0,
                "channels": 1,
                "models": [_MODEL_UUID],
            },
            "results": {"channels": [{"alternatives": [_alternative(text, words, 0.0, opts["punctuate"])]}]},
        }
    )
