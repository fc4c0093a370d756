"""Offline speech-to-text: pocketsphinx with the English model bundled in its wheel.

Two faces over one decoder (the decoding itself is in ``sphinx.py``):

- ``PocketSphinxSTT``: a livekit-agents ``stt.STT`` for the no-account demo agent. It is
  non-streaming (one buffered utterance in, one final transcript out); in a live session
  it needs a VAD to cut the audio into utterances (``stt.StreamAdapter``), see
  ``voiceagents.providers.factory``.
- ``transcribe_pcm`` / ``transcribe_words``: plain blocking functions the stub servers use
  to give a fake OpenAI/Groq/Deepgram real ears.

``PocketSphinxSTT`` decodes in a subprocess of its own, not on a thread: pocketsphinx
holds the GIL for a whole utterance (1.8 s for 2.6 s of speech on a quiet 2-core
machine, many times that on a loaded one), and on a thread that froze the whole job
process: the event loop, the VAD threads, the audio going out and the conference
mixer's clock.
"""

from __future__ import annotations

import asyncio
import atexit
import multiprocessing
import threading
from multiprocessing.pool import Pool

from livekit import rtc
from livekit.agents import APIConnectOptions, LanguageCode, stt, utils
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer

from .sphinx import (
    DECODER_SAMPLE_RATE,
    RecognizedWord,
    load_decoder,
    pcm16_to_mono,
    resample_pcm16,
    transcribe_pcm,
    transcribe_words,
)

__all__ = [
    "DECODER_SAMPLE_RATE",
    "PocketSphinxSTT",
    "RecognizedWord",
    "load_decoder",
    "pcm16_to_mono",
    "resample_pcm16",
    "transcribe_pcm",
    "transcribe_words",
]

_POOL: Pool | None = None
_POOL_LOCK = threading.Lock()


def decoding_process() -> Pool:
    """This process's decoding subprocess (one, with its decoder), started on first use.

    Spawned, not forked: the caller is a job process with the rtc SDK's threads
    running. The child imports numpy, pocketsphinx and (as every spawned process
    does) the parent's main module, which manage.py and pytest allow. A multiprocessing Pool rather than a ProcessPoolExecutor: its worker
    is a daemon process and its threads are daemon threads, so a job process
    exits without waiting for (or warning about) them, and a worker that dies is
    replaced.
    """
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = multiprocessing.get_context("spawn").Pool(processes=1, initializer=load_decoder)
            # ended while the interpreter is whole: left to Pool.__del__ at exit, it
            # tries to message its worker after multiprocessing's modules are torn down
            atexit.register(_POOL.terminate)
        return _POOL


def _settle(
    done: asyncio.Future[list[RecognizedWord]],
    result: list[RecognizedWord] | None,
    error: BaseException | None,
) -> None:
    if done.done():  # the caller gave up (timeout, cancelled)
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result or [])


class PocketSphinxSTT(stt.STT):
    """Offline, non-streaming STT on pocketsphinx's bundled US-English model.

    Accuracy is far below the cloud providers (it suits a demo and tests, not visitors);
    wrap it in ``stt.StreamAdapter`` with a VAD, or give the AgentSession a VAD, to use it
    on a live audio track.
    """

    def __init__(self, *, language: str = "en-US") -> None:
        super().__init__(
            capabilities=stt.STTCapabilities(streaming=False, interim_results=False, offline_recognize=True)
        )
        self._language = language
        # start the subprocess and load its decoder now, not on the visitor's first words
        decoding_process()

    @property
    def model(self) -> str:
        return "pocketsphinx-en-us"

    @property
    def provider(self) -> str:
        return "local"

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        frame = rtc.combine_audio_frames(buffer)
        pcm = frame.data.tobytes()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[RecognizedWord]] = loop.create_future()

        # the pool calls these on its result thread
        def resolve(result: list[RecognizedWord]) -> None:
            loop.call_soon_threadsafe(_settle, done, result, None)

        def fail(error: BaseException) -> None:
            loop.call_soon_threadsafe(_settle, done, None, error)

        decoding_process().apply_async(
            transcribe_words,
            (pcm, frame.sample_rate, frame.num_channels),
            callback=resolve,
            error_callback=fail,
        )
        # a worker that dies mid-utterance is replaced, but its result never comes
        words = await asyncio.wait_for(done, conn_options.timeout)
        text = " ".join(w.word for w in words)
        lang = LanguageCode(language if utils.is_given(language) else self._language)
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=utils.shortuuid("sphinx_"),
            alternatives=[
                stt.SpeechData(
                    language=lang,
                    text=text,
                    start_time=words[0].start if words else 0.0,
                    end_time=words[-1].end if words else 0.0,
                    confidence=(sum(w.confidence for w in words) / len(words)) if words else 0.0,
                )
            ],
        )
