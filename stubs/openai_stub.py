"""The OpenAI REST API as the livekit openai and groq plugins use it.

Routes are served under ``/v1`` (OpenAI's layout) and ``/openai/v1`` (Groq's), so the
same server stands in for both providers:

- ``POST /chat/completions``: deterministic reply (``StubState.reply_template``) to the
  last user message, as SSE ``chat.completion.chunk`` events ending ``data: [DONE]``,
  with a usage chunk when ``stream_options.include_usage`` is set (or one JSON body
  without ``stream``). A trigger phrase (``StubState.tool_triggers``) in that message
  makes it call one of the request's ``tools`` instead, streamed as ``tool_calls``
  deltas (the name first, the arguments in fragments, ``finish_reason: tool_calls``);
  when the last message is a tool's output, the reply quotes it
  (``StubState.tool_reply_template``).
- ``POST /audio/transcriptions``: multipart upload; the text is pocketsphinx's real
  transcription of the audio (``json``, ``verbose_json`` or ``text``).
- ``POST /audio/speech``: espeak-ng speaking ``input`` at 24 kHz mono in the requested
  ``response_format`` (pcm, wav, mp3, opus, aac, flac), as raw bytes or, with
  ``stream_format=sse``, as ``speech.audio.delta`` / ``speech.audio.done`` events.
- ``GET /models``: what the LLM plugin's prewarm asks for.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import uuid
import wave
from collections import OrderedDict
from typing import Any

import numpy as np
from aiohttp import web

from voiceagents.providers.offline_stt import transcribe_words
from voiceagents.providers.offline_tts import DEFAULT_RATE_WPM, synthesize_samples

from . import STATE_KEY, StubState, hang, record_http

SPEECH_SAMPLE_RATE = 24000  # what OpenAI's pcm format is
MAX_SPEECH_INPUT = 4096  # OpenAI rejects longer input
# ~100 ms of 24 kHz s16le per chunk: small enough that a client sees audio early
_AUDIO_CHUNK_BYTES = 4800
# characters of a tool call's arguments per streamed delta: a client must join fragments
_ARGUMENT_FRAGMENT = 8
# speech already rendered, by (input, rate, format): a repeated reply is answered at once,
# as a provider "answering instantly" would, instead of after ~10-30 ms of espeak-ng
_SPEECH_CACHE: OrderedDict[tuple[str, int, str], tuple[bytes, str]] = OrderedDict()
_SPEECH_CACHE_SIZE = 64
# response_format -> (content type, libav container, codec, codec sample rate)
_ENCODED_FORMATS: dict[str, tuple[str, str, str, int]] = {
    "mp3": ("audio/mpeg", "mp3", "libmp3lame", SPEECH_SAMPLE_RATE),
    "opus": ("audio/opus", "ogg", "libopus", 48000),
    "aac": ("audio/aac", "adts", "aac", SPEECH_SAMPLE_RATE),
    "flac": ("audio/flac", "flac", "flac", SPEECH_SAMPLE_RATE),
}


def add_routes(app: web.Application) -> None:
    for prefix in ("/v1", "/openai/v1"):
        app.router.add_post(prefix + "/chat/completions", chat_completions)
        app.router.add_post(prefix + "/audio/transcriptions", audio_transcriptions)
        app.router.add_post(prefix + "/audio/speech", audio_speech)
        app.router.add_get(prefix + "/models", list_models)


def openai_error(status: int, message: str, *, type_: str, code: str | None = None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": type_, "param": None, "code": code}},
        status=status,
    )


async def _gate(request: web.Request, endpoint: str) -> web.Response | None:
    """Auth, then the endpoint's latency and failure mode. A response means: send it."""
    state = request.app[STATE_KEY]
    auth = request.headers.get("Authorization", "")
    key = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
    if not state.check_key(key):
        return openai_error(
            401, "Incorrect API key provided.", type_="invalid_request_error", code="invalid_api_key"
        )
    behaviour = state.behaviour(endpoint)
    if behaviour.latency > 0:
        await asyncio.sleep(behaviour.latency)
    if behaviour.mode == "error":
        return openai_error(behaviour.status, "The stub was told to fail this request.", type_="server_error")
    if behaviour.mode == "hang":
        await hang(request.app)
        return openai_error(503, "The stub is shutting down.", type_="server_error")
    return None


def _stalled(request: web.Request, endpoint: str) -> bool:
    return request.app[STATE_KEY].behaviour(endpoint).mode == "stall"


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _offered_tools(body: dict[str, Any]) -> set[str]:
    names = set()
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and tool.get("type") == "function":
            names.add(str((tool.get("function") or {}).get("name") or ""))
    return names


def _tool_name(messages: list[Any], tool_message: dict[str, Any]) -> str:
    """The function name of the call a tool message answers (it carries only the call id)."""
    call_id = tool_message.get("tool_call_id")
    for message in reversed(messages):
        for call in (message.get("tool_calls") or []) if isinstance(message, dict) else []:
            if call.get("id") == call_id:
                return str((call.get("function") or {}).get("name") or "")
    return ""


def _count_tokens(text: str) -> int:
    # a word is a token here: deterministic, and close enough for usage plumbing
    return len(text.split())


async def chat_completions(request: web.Request) -> web.StreamResponse:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        record_http(request, "chat", None)
        return openai_error(400, "We could not parse the JSON body.", type_="invalid_request_error")
    record_http(request, "chat", body)
    if (early := await _gate(request, "chat")) is not None:
        return early

    state: StubState = request.app[STATE_KEY]
    messages = body.get("messages") or []
    user_texts = [_message_text(m) for m in messages if m.get("role") == "user"]
    user_text = next((t.strip() for t in reversed(user_texts) if t.strip()), "")
    tool_call: dict[str, Any] | None = None
    last = messages[-1] if messages else {}
    if isinstance(last, dict) and last.get("role") == "tool":
        reply = state.reply_for_tool(_tool_name(messages, last), _message_text(last))
    else:
        tool_call = state.tool_call_for(user_text, _offered_tools(body))
        reply = "" if tool_call else state.reply_for(user_text)
    model = str(body.get("model") or "stub-model")
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    prompt_tokens = sum(_count_tokens(_message_text(m)) for m in messages)
    call_id = f"call_{uuid.uuid4().hex[:24]}"
    arguments = json.dumps(tool_call["arguments"]) if tool_call else ""
    completion_tokens = _count_tokens(reply) + _count_tokens(arguments)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }

    if not body.get("stream"):
        return web.json_response(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply}
                        if tool_call is None
                        else {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [
                                {
                                    "id": call_id,
                                    "type": "function",
                                    "function": {"name": tool_call["name"], "arguments": arguments},
                                }
                            ],
                        },
                        "finish_reason": "stop" if tool_call is None else "tool_calls",
                        "logprobs": None,
                    }
                ],
                "usage": usage,
            }
        )

    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: dict[str, Any], finish_reason: str | None) -> bytes:
        event: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            event["usage"] = None
        return f"data: {json.dumps(event)}\n\n".encode()

    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    if tool_call is not None:
        # as OpenAI streams a call: id, type and name in the first delta with empty
        # arguments, then the arguments' JSON text in fragments, keyed by the call's index
        first = {
            "index": 0,
            "id": call_id,
            "type": "function",
            "function": {"name": tool_call["name"], "arguments": ""},
        }
        await response.write(chunk({"role": "assistant", "content": None, "tool_calls": [first]}, None))
        for i in range(0, len(arguments), _ARGUMENT_FRAGMENT):
            fragment = {"index": 0, "function": {"arguments": arguments[i : i + _ARGUMENT_FRAGMENT]}}
            await response.write(chunk({"tool_calls": [fragment]}, None))
        await response.write(chunk({}, "tool_calls"))
    else:
        await response.write(chunk({"role": "assistant", "content": ""}, None))
        words = reply.split(" ")
        for i, word in enumerate(words):
            await response.write(chunk({"content": word if i == 0 else " " + word}, None))
            if i == 0 and _stalled(request, "chat"):
                await hang(request.app)
                return response
        await response.write(chunk({}, "stop"))
    if include_usage:
        usage_event = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }
        await response.write(f"data: {json.dumps(usage_event)}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def decode_audio(data: bytes) -> tuple[np.ndarray, int, int]:
    """Upload bytes -> (int16 samples interleaved, sample rate, channels)."""
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise ValueError("only 16-bit WAV is supported")
            frames = wav.readframes(wav.getnframes())
            return np.frombuffer(frames, dtype=np.int16), wav.getframerate(), wav.getnchannels()
    except wave.Error:
        pass
    import av  # any other container the SDK might be handed (mp3, ogg, m4a...)

    with av.open(io.BytesIO(data), mode="r") as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        chunks = []
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    samples = np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)
    return samples, 16000, 1


async def transcribe_upload(state: StubState, data: bytes) -> tuple[str, float, list[Any]]:
    """(text, audio duration, words) for uploaded audio, per the state's transcript rules."""
    samples, rate, channels = await asyncio.to_thread(decode_audio, data)
    duration = len(samples) / channels / rate if rate else 0.0
    if state.fixed_transcript is not None:
        return state.fixed_transcript, duration, []
    words = await asyncio.to_thread(transcribe_words, samples, rate, channels)
    text = " ".join(w.word for w in words)
    return (text or state.fallback_transcript), duration, words


async def audio_transcriptions(request: web.Request) -> web.StreamResponse:
    state: StubState = request.app[STATE_KEY]
    form: dict[str, Any] = {}
    audio: bytes | None = None
    try:
        post = await request.post()
    except ValueError:
        post = None
    if post is not None:
        for name, value in post.items():
            if isinstance(value, web.FileField):
                audio = value.file.read()
                form[name] = {
                    "filename": value.filename,
                    "content_type": value.content_type,
                    "size": len(audio),
                }
            else:
                form[name] = value
    recorded = record_http(request, "transcriptions", form)
    if (early := await _gate(request, "transcriptions")) is not None:
        return early
    if audio is None:
        return openai_error(400, "No file was uploaded.", type_="invalid_request_error")
    if not form.get("model"):
        return openai_error(400, "you must provide a model parameter", type_="invalid_request_error")
    try:
        text, duration, words = await transcribe_upload(state, audio)
    except Exception as e:
        return openai_error(400, f"Could not decode the audio file: {e}", type_="invalid_request_error")
    recorded.transcript = text

    if _stalled(request, "transcriptions"):
        await hang(request.app)
    response_format = str(form.get("response_format") or "json")
    if response_format == "json":
        return web.json_response({"text": text})
    if response_format == "verbose_json":
        return web.json_response(
            {
                "task": "transcribe",
                "language": "english",
                "duration": round(duration, 3),
                "text": text,
                "words": [{"word": w.word, "start": w.start, "end": w.end} for w in words],
                "segments": [],
            }
        )
    if response_format == "text":
        return web.Response(text=text + "\n", content_type="text/plain")
    return openai_error(
        400,
        f"response_format {response_format!r} is not supported by the stub",
        type_="invalid_request_error",
    )


def encode_speech(samples: np.ndarray, response_format: str) -> tuple[bytes, str]:
    """24 kHz mono int16 samples -> (body bytes, content type) in ``response_format``."""
    if response_format == "pcm":
        return samples.tobytes(), "audio/pcm"
    if response_format == "wav":
        buf = io.BytesIO()
        with wave.open(buf, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(SPEECH_SAMPLE_RATE)
            wav.writeframes(samples.tobytes())
        return buf.getvalue(), "audio/wav"
    content_type, container_format, codec, codec_rate = _ENCODED_FORMATS[response_format]
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container_format) as out:
        stream = out.add_stream(codec, rate=codec_rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="s16", layout="mono")
        frame.sample_rate = SPEECH_SAMPLE_RATE
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue(), content_type


async def audio_speech(request: web.Request) -> web.StreamResponse:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        record_http(request, "speech", None)
        return openai_error(400, "We could not parse the JSON body.", type_="invalid_request_error")
    record_http(request, "speech", body)
    if (early := await _gate(request, "speech")) is not None:
        return early

    text = str(body.get("input") or "")
    if not text.strip():
        return openai_error(400, "input must not be empty", type_="invalid_request_error")
    if len(text) > MAX_SPEECH_INPUT:
        return openai_error(
            400, f"input is longer than {MAX_SPEECH_INPUT} characters", type_="invalid_request_error"
        )
    response_format = str(body.get("response_format") or "mp3")  # OpenAI's default
    if response_format not in ("pcm", "wav", *_ENCODED_FORMATS):
        return openai_error(
            400, f"response_format {response_format!r} is not supported", type_="invalid_request_error"
        )
    speed = float(body.get("speed") or 1.0)
    if not 0.25 <= speed <= 4.0:
        return openai_error(400, "speed must be between 0.25 and 4.0", type_="invalid_request_error")

    rate_wpm = int(DEFAULT_RATE_WPM * speed)

    def render() -> tuple[bytes, str]:
        samples = synthesize_samples(text, rate_wpm=rate_wpm, sample_rate=SPEECH_SAMPLE_RATE)
        return encode_speech(samples, response_format)

    key = (text, rate_wpm, response_format)
    if (rendered := _SPEECH_CACHE.get(key)) is None:
        rendered = await asyncio.to_thread(render)
        _SPEECH_CACHE[key] = rendered
        while len(_SPEECH_CACHE) > _SPEECH_CACHE_SIZE:
            _SPEECH_CACHE.popitem(last=False)
    audio, content_type = rendered
    stalled = _stalled(request, "speech")
    chunks = [audio[i : i + _AUDIO_CHUNK_BYTES] for i in range(0, len(audio), _AUDIO_CHUNK_BYTES)]

    if body.get("stream_format") == "sse":
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        for i, piece in enumerate(chunks):
            event = {"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode()}
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
            if i == 0 and stalled:
                await hang(request.app)
                return response
        input_tokens = len(text.split())
        output_tokens = max(1, len(audio) // 1000)
        done = {
            "type": "speech.audio.done",
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            },
        }
        await response.write(f"data: {json.dumps(done)}\n\n".encode())
        await response.write_eof()
        return response

    response = web.StreamResponse(headers={"Content-Type": content_type})
    await response.prepare(request)
    for i, piece in enumerate(chunks):
        await response.write(piece)
        if i == 0 and stalled:
            await hang(request.app)
            return response
    await response.write_eof()
    return response


async def list_models(request: web.Request) -> web.StreamResponse:
    record_http(request, "models", None)
    if (early := await _gate(request, "models")) is not None:
        return early
    return web.json_response(
        {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "stub"}
                for m in ("gpt-4o-mini", "gpt-4o-mini-transcribe", "gpt-4o-mini-tts", "whisper-1")
            ],
        }
    )
