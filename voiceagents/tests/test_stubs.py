"""The provider stubs, driven through the real livekit plugins (and, for the Deepgram
socket, through a bare websocket to pin the wire messages themselves).

No database, no network beyond 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import numpy as np
import pytest
from livekit import rtc
from livekit.agents import (
    APIConnectionError,
    APIConnectOptions,
    APIError,
    APIStatusError,
    APITimeoutError,
    llm,
    stt,
)
from livekit.plugins import deepgram, groq, openai

from stubs import StubState
from stubs.server import StubServer
from voiceagents.providers.offline_stt import transcribe_pcm
from voiceagents.providers.offline_tts import speech_frames, synthesize_samples

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
# fail fast: a stub told to fail must not be retried into a slow test
NO_RETRY = APIConnectOptions(max_retry=0, timeout=10.0)
# longer than any healthy answer on a loaded 2-core machine, shorter than a hang
SHORT = APIConnectOptions(max_retry=0, timeout=3.0)


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run one test body on a fresh loop, never longer than ``timeout``."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    server = StubServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_state(stub: StubServer) -> Iterator[None]:
    stub.state.reset()
    yield
    # a test that left requests hanging must not leave them for the next one
    stub.release_hangs()


def _chat(text: str) -> llm.ChatContext:
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="system", content="You are a stub's client.")
    ctx.add_message(role="user", content=text)
    return ctx


async def _deepgram_events(
    stream: stt.RecognizeStream, until: stt.SpeechEventType, timeout: float = 30.0
) -> list[stt.SpeechEvent]:
    events: list[stt.SpeechEvent] = []

    async def read() -> None:
        async for ev in stream:
            events.append(ev)
            if ev.type == until:
                return

    await asyncio.wait_for(read(), timeout)
    return events


# -- OpenAI-compatible LLM -------------------------------------------------------------


def test_openai_llm_streams_the_stub_reply_and_reports_usage(stub: StubServer) -> None:
    async def body() -> tuple[list[llm.ChatChunk], llm.CollectedResponse]:
        model = openai.LLM(model="gpt-4o-mini", base_url=stub.openai_base_url, api_key="test")
        chunks = [c async for c in model.chat(chat_ctx=_chat("what is the weather"))]
        collected = await model.chat(chat_ctx=_chat("and tomorrow")).collect()
        await model.aclose()
        return chunks, collected

    chunks, collected = run(body())

    text = "".join(c.delta.content for c in chunks if c.delta and c.delta.content)
    assert text == "Stub reply to: what is the weather"
    assert len([c for c in chunks if c.delta and c.delta.content]) > 1  # streamed, not one blob
    usage = [c.usage for c in chunks if c.usage]
    assert len(usage) == 1
    # the stub counts words: 7 in the reply, 5 + 4 in the system and user messages
    assert usage[0].completion_tokens == 7 and usage[0].prompt_tokens == 9
    assert usage[0].total_tokens == 16
    assert collected.text == "Stub reply to: and tomorrow"
    request = stub.state.last("chat")
    assert request is not None
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.body["model"] == "gpt-4o-mini"
    assert request.headers["Authorization"] == "Bearer test"


def test_a_trigger_phrase_streams_a_tool_call_the_plugin_assembles(stub: StubServer) -> None:
    stub.state.tool_triggers = {"look up order": {"name": "order_status", "arguments": {"order": "A-1234"}}}

    @llm.function_tool
    async def order_status(order: str) -> str:
        """Look up an order."""
        return "shipped"

    async def body() -> tuple[list[llm.ChatChunk], str, str]:
        model = openai.LLM(base_url=stub.openai_base_url, api_key="test")
        chunks = [
            c async for c in model.chat(chat_ctx=_chat("Please LOOK UP ORDER one"), tools=[order_status])
        ]
        # without the tool offered, the phrase is only words
        plain = (await model.chat(chat_ctx=_chat("look up order one")).collect()).text
        # the call's output in the history: the reply quotes it
        ctx = _chat("look up order one")
        call = llm.FunctionCall(call_id="call_1", name="order_status", arguments='{"order": "A-1234"}')
        ctx.insert(call)
        ctx.insert(
            llm.FunctionCallOutput(call_id="call_1", name="order_status", output="shipped", is_error=False)
        )
        after = (await model.chat(chat_ctx=ctx, tools=[order_status]).collect()).text
        await model.aclose()
        return chunks, plain, after

    chunks, plain, after = run(body())
    calls = [call for c in chunks if c.delta for call in c.delta.tool_calls]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("order_status", {"order": "A-1234"})]
    assert not any(c.delta and c.delta.content for c in chunks)
    assert plain == "Stub reply to: look up order one"
    assert after == "The tool order_status answered: shipped"
    request = stub.state.requests("chat")[0]
    assert request.body["tools"][0]["function"]["name"] == "order_status"


def test_groq_llm_speaks_the_same_protocol_under_its_own_path(stub: StubServer) -> None:
    stub.state.reply_template = "Groq stub heard {text}"

    async def body() -> str:
        model = groq.LLM(base_url=stub.groq_base_url, api_key="test")
        response = await model.chat(chat_ctx=_chat("ping")).collect()
        await model.aclose()
        return response.text

    assert run(body()) == "Groq stub heard ping"
    request = stub.state.last("chat")
    assert request is not None and request.path == "/openai/v1/chat/completions"
    assert request.body["model"] == "llama-3.3-70b-versatile"


def test_wrong_api_key_is_a_401_from_the_plugin(stub: StubServer) -> None:
    stub.state.api_key = "the-right-key"

    async def body() -> None:
        model = openai.LLM(base_url=stub.openai_base_url, api_key="a-wrong-key")
        try:
            await model.chat(chat_ctx=_chat("hi"), conn_options=NO_RETRY).collect()
        finally:
            await model.aclose()

    with pytest.raises(APIStatusError) as info:
        run(body())
    assert info.value.status_code == 401


def test_llm_error_mode_is_an_api_status_error(stub: StubServer) -> None:
    stub.state.behave("chat", mode="error", status=503)

    async def body() -> None:
        model = openai.LLM(base_url=stub.openai_base_url, api_key="test")
        try:
            await model.chat(chat_ctx=_chat("hi"), conn_options=NO_RETRY).collect()
        finally:
            await model.aclose()

    with pytest.raises(APIStatusError) as info:
        run(body())
    assert info.value.status_code == 503
    assert stub.state.count("chat") == 1


def test_llm_hang_mode_times_out(stub: StubServer) -> None:
    stub.state.behave("chat", mode="hang")

    async def body() -> None:
        model = openai.LLM(base_url=stub.openai_base_url, api_key="test")
        try:
            await model.chat(chat_ctx=_chat("hi"), conn_options=SHORT).collect()
        finally:
            await model.aclose()

    with pytest.raises(APITimeoutError):
        run(body(), timeout=20)
    assert stub.state.count("chat") == 1


def test_llm_stall_mode_times_out_mid_stream_after_the_first_words(stub: StubServer) -> None:
    stub.state.behave("chat", mode="stall")
    received: list[str] = []

    async def body() -> None:
        model = openai.LLM(base_url=stub.openai_base_url, api_key="test")
        try:
            async for chunk in model.chat(chat_ctx=_chat("hi"), conn_options=SHORT):
                if chunk.delta and chunk.delta.content:
                    received.append(chunk.delta.content)
        finally:
            await model.aclose()

    with pytest.raises(APITimeoutError) as info:
        run(body(), timeout=20)
    assert received == ["Stub"]
    # output already reached the caller: retrying would say it twice
    assert not info.value.retryable


def test_latency_longer_than_the_client_timeout_times_out_shorter_passes(stub: StubServer) -> None:
    async def ask() -> str:
        model = openai.LLM(base_url=stub.openai_base_url, api_key="test")
        try:
            return (await model.chat(chat_ctx=_chat("slow"), conn_options=SHORT).collect()).text
        finally:
            await model.aclose()

    stub.state.behave("chat", latency=0.5)
    assert run(ask()) == "Stub reply to: slow"
    stub.state.behave("chat", latency=SHORT.timeout + 3.0)
    with pytest.raises(APITimeoutError):
        run(ask(), timeout=30)


# -- OpenAI / Groq STT -----------------------------------------------------------------


def test_openai_stt_transcribes_espeak_speech(stub: StubServer) -> None:
    async def body() -> str:
        model = openai.STT(base_url=stub.openai_base_url, api_key="test")
        event = await model.recognize(speech_frames("hello world"), conn_options=NO_RETRY)
        await model.aclose()
        return event.alternatives[0].text

    assert "hello" in run(body())
    request = stub.state.last("transcriptions")
    assert request is not None
    assert request.transcript == "hello world"
    assert request.body["model"] == "gpt-4o-mini-transcribe"
    assert request.body["file"]["content_type"] == "audio/wav"


def test_groq_stt_transcribes_espeak_speech(stub: StubServer) -> None:
    async def body() -> str:
        model = groq.STT(base_url=stub.groq_base_url, api_key="test")
        event = await model.recognize(speech_frames("hello world"), conn_options=NO_RETRY)
        await model.aclose()
        return event.alternatives[0].text

    assert "hello" in run(body())
    request = stub.state.last("transcriptions")
    assert request is not None and request.path == "/openai/v1/audio/transcriptions"
    assert request.body["model"] == "whisper-large-v3-turbo"


def test_whisper_verbose_json_and_the_fixed_transcript(stub: StubServer) -> None:
    stub.state.fixed_transcript = "a configured sentence"

    async def body() -> str:
        model = openai.STT(model="whisper-1", base_url=stub.openai_base_url, api_key="test")
        event = await model.recognize(speech_frames("yes please"), conn_options=NO_RETRY)
        await model.aclose()
        return event.alternatives[0].text

    assert run(body()) == "a configured sentence"
    request = stub.state.last("transcriptions")
    assert request is not None and request.body["response_format"] == "verbose_json"


def test_stt_error_mode_is_an_api_status_error(stub: StubServer) -> None:
    stub.state.behave("transcriptions", mode="error")

    async def body() -> None:
        model = openai.STT(base_url=stub.openai_base_url, api_key="test")
        try:
            await model.recognize(speech_frames("hello world"), conn_options=NO_RETRY)
        finally:
            await model.aclose()

    with pytest.raises(APIStatusError) as info:
        run(body())
    assert info.value.status_code == 500


# -- OpenAI TTS --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response_format", "model"),
    [
        ("pcm", "gpt-4o-mini-tts"),  # SSE speech.audio.delta events
        ("pcm", "tts-1"),  # raw audio/pcm body
        ("mp3", "gpt-4o-mini-tts"),  # the plugin's default format
        ("wav", "tts-1"),
        ("opus", "tts-1"),
        ("flac", "tts-1"),
    ],
)
def test_openai_tts_gives_frames_of_sensible_duration(
    stub: StubServer, response_format: str, model: str
) -> None:
    async def body() -> list[rtc.AudioFrame]:
        tts = openai.TTS(
            model=model,
            voice="alloy",
            base_url=stub.openai_base_url,
            api_key="test",
            response_format=response_format,
        )
        frames = [ev.frame async for ev in tts.synthesize("what is your name", conn_options=NO_RETRY)]
        await tts.aclose()
        return frames

    frames = run(body())

    duration = sum(f.duration for f in frames)
    espeak_duration = len(synthesize_samples("what is your name")) / 22050
    assert abs(duration - espeak_duration) < 0.15  # codecs pad a little, never much
    assert {f.sample_rate for f in frames} == {24000}
    pcm = b"".join(f.data.tobytes() for f in frames)
    if response_format != "flac":
        # livekit's stream decoder drops the first ~0.1 s of a FLAC body (PyAV alone
        # decodes the same bytes whole), which costs pocketsphinx the first words
        assert transcribe_pcm(pcm, 24000) == "what is your name"
    request = stub.state.last("speech")
    assert request is not None
    assert request.body["response_format"] == response_format
    assert request.body["stream_format"] == ("audio" if model == "tts-1" else "sse")


def test_speech_for_a_repeated_input_is_answered_from_what_was_rendered(stub: StubServer) -> None:
    """A stub provider answers a repeated reply at once (the bench's "instant" TTS)."""
    from stubs import openai_stub

    async def speech() -> bytes:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                stub.openai_base_url + "/audio/speech",
                json={"model": "tts-1", "input": "thank you", "voice": "alloy", "response_format": "pcm"},
                headers={"Authorization": "Bearer test"},
            ) as response,
        ):
            assert response.status == 200
            return await response.read()

    openai_stub._SPEECH_CACHE.clear()
    first = run(speech())
    assert ("thank you", openai_stub.DEFAULT_RATE_WPM, "pcm") in openai_stub._SPEECH_CACHE
    # espeak-ng never renders a sentence twice the same way: equal bytes come from the cache
    assert run(speech()) == first and len(first) > 24000
    # bounded: rendering something new drops the oldest
    openai_stub._SPEECH_CACHE.clear()
    for n in range(openai_stub._SPEECH_CACHE_SIZE + 5):
        openai_stub._SPEECH_CACHE[(f"filler {n}", 0, "pcm")] = (b"", "audio/pcm")
    run(speech())
    assert len(openai_stub._SPEECH_CACHE) == openai_stub._SPEECH_CACHE_SIZE
    assert ("filler 0", 0, "pcm") not in openai_stub._SPEECH_CACHE
    openai_stub._SPEECH_CACHE.clear()


def test_tts_error_and_stall_modes(stub: StubServer) -> None:
    async def speak() -> rtc.AudioFrame:
        tts = openai.TTS(base_url=stub.openai_base_url, api_key="test", response_format="pcm")
        try:
            return await tts.synthesize("yes please", conn_options=NO_RETRY).collect()
        finally:
            await tts.aclose()

    stub.state.behave("speech", mode="error", status=502)
    with pytest.raises(APIStatusError) as info:
        run(speak())
    assert info.value.status_code == 502

    # the plugin's read timeout is its own 30 s, so the test's deadline is what ends this:
    # a stalled TTS leaves a turn silent rather than failing it quickly
    stub.state.behave("speech", mode="stall")
    with pytest.raises(TimeoutError):
        run(speak(), timeout=5)
    assert stub.state.count("speech") == 2  # one each: neither failure was retried


# -- Deepgram ----------------------------------------------------------------------------


def test_deepgram_stream_gives_a_final_transcript(stub: StubServer) -> None:
    async def body() -> list[stt.SpeechEvent]:
        async with aiohttp.ClientSession() as http:
            model = deepgram.STT(base_url=stub.deepgram_base_url, api_key="test", http_session=http)
            stream = model.stream(conn_options=NO_RETRY)
            for frame in speech_frames("hello world", lead_silence=0.3, trail_silence=1.0):
                stream.push_frame(frame)
            events = await _deepgram_events(stream, stt.SpeechEventType.END_OF_SPEECH)
            await stream.aclose()
            return events

    events = run(body())

    types = [ev.type for ev in events if ev.type != stt.SpeechEventType.RECOGNITION_USAGE]
    assert types[0] == stt.SpeechEventType.START_OF_SPEECH
    assert types[-2:] == [stt.SpeechEventType.FINAL_TRANSCRIPT, stt.SpeechEventType.END_OF_SPEECH]
    final = [ev for ev in events if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT][0]
    assert "hello" in final.alternatives[0].text.lower()
    assert final.alternatives[0].words and str(final.alternatives[0].words[0]) == "Hello"
    request = stub.state.last("listen")
    assert request is not None
    assert request.headers["Authorization"] == "Token test"
    assert request.query["encoding"] == "linear16" and request.query["sample_rate"] == "16000"
    assert request.body["transcripts"][0] == "hello world"


def test_deepgram_wire_messages(stub: StubServer) -> None:
    """What Deepgram sends, message by message: SpeechStarted, interim and final Results,
    UtteranceEnd, and Metadata after CloseStream."""
    audio = np.concatenate(
        [
            np.zeros(3200, np.int16),
            synthesize_samples("one two three four five", sample_rate=16000),
            np.zeros(16000 * 2, np.int16),  # long enough for utterance_end_ms=1000
        ]
    )
    query = (
        "?model=nova-3&encoding=linear16&sample_rate=16000&channels=1&interim_results=true"
        "&vad_events=true&punctuate=true&endpointing=25&utterance_end_ms=1000"
    )

    async def body() -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as http:
            url = stub.deepgram_base_url.replace("http", "ws", 1) + query
            async with http.ws_connect(url, headers={"Authorization": "Token test"}) as ws:
                await ws.send_str(json.dumps({"type": "KeepAlive"}))
                for i in range(0, len(audio), 1600):
                    await ws.send_bytes(audio[i : i + 1600].tobytes())
                await ws.send_str(json.dumps({"type": "CloseStream"}))
                async for msg in ws:
                    messages.append(json.loads(msg.data))
        return messages

    messages = run(body())

    kinds = [m["type"] for m in messages]
    assert kinds[0] == "SpeechStarted"
    assert kinds[-1] == "Metadata"
    results = [m for m in messages if m["type"] == "Results"]
    interim = [m for m in results if not m["is_final"]]
    final = [m for m in results if m["is_final"]]
    assert interim, "one second of speech should produce an interim result"
    assert len(final) == 1 and final[0]["speech_final"] is True
    assert final[0]["channel"]["alternatives"][0]["transcript"] == "One two three four five."
    assert kinds.index("UtteranceEnd") > messages.index(final[0])
    utterance_end = messages[kinds.index("UtteranceEnd")]
    assert 0.2 < utterance_end["last_word_end"] <= final[0]["start"] + final[0]["duration"]
    metadata = messages[-1]
    assert metadata["duration"] == pytest.approx(len(audio) / 16000, abs=0.02)
    assert metadata["channels"] == 1
    request = stub.state.last("listen")
    assert request is not None and request.body["text_messages"][0] == '{"type": "KeepAlive"}'


def test_deepgram_finalize_flushes_the_current_utterance(stub: StubServer) -> None:
    speech = synthesize_samples("yes please", sample_rate=16000)  # no trailing silence

    async def body() -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            url = stub.deepgram_base_url.replace("http", "ws", 1) + "?encoding=linear16&sample_rate=16000"
            async with http.ws_connect(url, headers={"Authorization": "Token test"}) as ws:
                await ws.send_bytes(np.concatenate([np.zeros(3200, np.int16), speech]).tobytes())
                await ws.send_str(json.dumps({"type": "Finalize"}))
                while True:
                    message = json.loads((await ws.receive(timeout=30)).data)
                    if message["type"] == "Results":
                        return message

    message = run(body())

    assert message["is_final"] is True and message["from_finalize"] is True
    assert message["channel"]["alternatives"][0]["transcript"] == "yes please"


def test_deepgram_bad_key_and_bad_options_are_rejected_at_the_handshake(stub: StubServer) -> None:
    stub.state.api_key = "right"

    async def connect(key: str, query: str) -> int:
        async with aiohttp.ClientSession() as http:
            url = stub.deepgram_base_url.replace("http", "ws", 1) + query
            try:
                async with http.ws_connect(url, headers={"Authorization": f"Token {key}"}):
                    return 101
            except aiohttp.WSServerHandshakeError as e:
                return e.status

    assert run(connect("wrong", "?encoding=linear16&sample_rate=16000")) == 401
    assert run(connect("right", "?encoding=mulaw&sample_rate=8000")) == 400
    assert run(connect("right", "?encoding=linear16&sample_rate=16000")) == 101


def test_deepgram_error_mode_fails_the_handshake(stub: StubServer) -> None:
    stub.state.behave("listen", mode="error", status=500)

    async def body() -> None:
        async with aiohttp.ClientSession() as http:
            model = deepgram.STT(base_url=stub.deepgram_base_url, api_key="test", http_session=http)
            stream = model.stream(conn_options=NO_RETRY)
            stream.push_frame(speech_frames("hello")[0])
            try:
                await _deepgram_events(stream, stt.SpeechEventType.FINAL_TRANSCRIPT)
            finally:
                await stream.aclose()

    with pytest.raises(APIStatusError) as info:
        run(body())
    assert info.value.status_code == 500


def test_deepgram_hang_mode_times_out_the_connect(stub: StubServer) -> None:
    stub.state.behave("listen", mode="hang")

    async def body() -> None:
        async with aiohttp.ClientSession() as http:
            model = deepgram.STT(base_url=stub.deepgram_base_url, api_key="test", http_session=http)
            stream = model.stream(conn_options=SHORT)
            stream.push_frame(speech_frames("hello")[0])
            try:
                await _deepgram_events(stream, stt.SpeechEventType.FINAL_TRANSCRIPT)
            finally:
                await stream.aclose()

    with pytest.raises(APIConnectionError, match="failed to connect to deepgram"):
        run(body(), timeout=20)


def test_deepgram_failing_mid_conversation_ends_the_stream_with_an_api_error(stub: StubServer) -> None:
    async def body() -> tuple[str, BaseException | None]:
        async with aiohttp.ClientSession() as http:
            model = deepgram.STT(base_url=stub.deepgram_base_url, api_key="test", http_session=http)
            stream = model.stream(conn_options=NO_RETRY)
            for frame in speech_frames("yes please", lead_silence=0.3, trail_silence=1.0):
                stream.push_frame(frame)
            events = await _deepgram_events(stream, stt.SpeechEventType.FINAL_TRANSCRIPT)
            first = events[-1].alternatives[0].text
            # the provider breaks between two turns: the next frame in closes the socket
            stub.state.behave("listen", mode="error")
            for frame in speech_frames("thank you", lead_silence=0.3, trail_silence=1.0):
                stream.push_frame(frame)
            error: BaseException | None = None
            try:
                await _deepgram_events(stream, stt.SpeechEventType.FINAL_TRANSCRIPT)
            except APIError as e:
                error = e
            await stream.aclose()
            return first, error

    first, error = run(body())

    assert first == "Yes please."
    assert isinstance(error, APIStatusError)
    assert "closed unexpectedly" in str(error)


def test_deepgram_stall_mode_keeps_the_socket_but_sends_nothing(stub: StubServer) -> None:
    stub.state.behave("listen", mode="stall")

    async def body() -> list[stt.SpeechEvent]:
        async with aiohttp.ClientSession() as http:
            model = deepgram.STT(base_url=stub.deepgram_base_url, api_key="test", http_session=http)
            stream = model.stream(conn_options=NO_RETRY)
            for frame in speech_frames("hello world", lead_silence=0.3, trail_silence=1.0):
                stream.push_frame(frame)
            events: list[stt.SpeechEvent] = []
            with pytest.raises(TimeoutError):
                events = await _deepgram_events(stream, stt.SpeechEventType.FINAL_TRANSCRIPT, timeout=5)
            await stream.aclose()
            return events

    run(body())
    request = stub.state.last("listen")
    assert request is not None and request.body["audio_bytes"] > 0
    assert request.body["transcripts"] == []


def test_deepgram_prerecorded_post(stub: StubServer) -> None:
    async def body() -> str:
        async with aiohttp.ClientSession() as http:
            model = deepgram.STT(base_url=stub.deepgram_base_url, api_key="test", http_session=http)
            event = await model.recognize(speech_frames("can you hear me"), conn_options=NO_RETRY)
            return event.alternatives[0].text

    assert run(body()) == "Can you hear me."


# -- the server itself -------------------------------------------------------------------


def test_in_process_async_server_and_remote_control() -> None:
    async def body() -> tuple[int, dict[str, Any], dict[str, Any]]:
        async with StubServer(state=StubState(reply_template="R: {text}")) as server:
            assert server.base_url.startswith("http://127.0.0.1:")
            async with aiohttp.ClientSession() as http:
                control = server.base_url + "/_control"
                async with http.post(control, json={"endpoint": "chat", "mode": "error", "status": 418}) as r:
                    assert r.status == 200
                model = openai.LLM(base_url=server.openai_base_url, api_key="test")
                try:
                    await model.chat(chat_ctx=_chat("x"), conn_options=NO_RETRY).collect()
                    status = 200
                except APIStatusError as e:
                    status = e.status_code
                async with http.post(control, json={"reset": True}) as r:
                    after_reset = await r.json()
                reply = await model.chat(chat_ctx=_chat("x"), conn_options=NO_RETRY).collect()
                await model.aclose()
                async with http.get(control) as r:
                    snapshot = await r.json()
                assert reply.text == "R: x"
        return status, after_reset, snapshot

    status, after_reset, snapshot = run(body())

    assert status == 418
    assert after_reset["behaviours"]["chat"]["mode"] == "ok"
    assert after_reset["requests"]["chat"]["count"] == 0
    assert snapshot["requests"]["chat"]["count"] == 1
    assert snapshot["requests"]["chat"]["last"]["body"]["messages"][-1]["content"] == "x"


def test_control_rejects_unknown_endpoints_and_settings(stub: StubServer) -> None:
    def post(payload: dict[str, Any]) -> int:
        request = urllib.request.Request(
            stub.base_url + "/_control",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as e:
            return e.code

    assert post({"endpoint": "nope", "mode": "error"}) == 400
    assert post({"endpoint": "chat", "mode": "explode"}) == 400
    assert post({"settings": {"not_a_setting": 1}}) == 400
    assert post({"settings": {"fixed_transcript": "fixed"}}) == 200
    assert stub.state.fixed_transcript == "fixed"


def test_hung_requests_are_released_and_the_next_one_hangs_again(stub: StubServer) -> None:
    stub.state.behave("models", mode="hang")

    async def body() -> tuple[int, bool]:
        async with aiohttp.ClientSession() as http:
            url = stub.openai_base_url + "/models"
            headers = {"Authorization": "Bearer test"}
            pending = asyncio.ensure_future(http.get(url, headers=headers))
            assert await stub.state.await_requests("models", 1, timeout=10)
            stub.release_hangs()
            async with await asyncio.wait_for(pending, 10) as released:
                status = released.status
            # re-armed: a new request in hang mode hangs again
            try:
                async with http.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=0.5)):
                    hung_again = False
            except TimeoutError:
                hung_again = True
        return status, hung_again

    assert run(body()) == (503, True)


def test_server_runs_as_a_separate_process() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "stubs.server", "--port", "0", "--reply-template", "CLI: {text}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first_line = proc.stdout.readline()  # printed once it listens
        assert first_line.startswith("stub server listening on http://127.0.0.1:"), first_line
        base_url = first_line.rsplit(" ", 1)[1].strip()

        async def body() -> str:
            model = openai.LLM(base_url=base_url + "/v1", api_key="test")
            reply = await model.chat(chat_ctx=_chat("from a test"), conn_options=NO_RETRY).collect()
            await model.aclose()
            return reply.text

        assert run(body()) == "CLI: from a test"
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
