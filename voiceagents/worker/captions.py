"""Captions in step with the voice, without stalling the reply's first audio.

With ``AGENT_SYNC_TRANSCRIPTION`` on (the default), livekit-agents' ``TranscriptSynchronizer``
releases the agent's words to the room (the widget's captions, and the transcript of an
interrupted reply) as they are heard. To pace them it estimates the voice's speaking rate:
a spectral flux over a 1 s window every 0.1 s (``voice/transcription/_speaking_rate.py``),
computed on the event loop with a Python loop of one FFT per 25 ms frame. With
preemptive TTS the whole reply is synthesized before the turn ends and reaches the
synchronizer at once, so the estimate works through all of it in one go while the
reply's first frame waits to be sent (figures in docs/benchmarks.md).

``FastSpeakingRateDetector`` computes the same spectral flux with the frames' FFTs in
one numpy call, and transforms each 25 ms frame once instead of once for each of the
ten windows that hold it: the same figures (see the test). The stream lets the loop
run between its input frames, so the first frame goes out while the estimate goes on.
``install()`` makes the synchronizer use it. livekit-agents builds its detector from a
module-level name with no option to pass one, so that name is what ``install()``
replaces; ``test_captions`` fails if a livekit-agents upgrade moves it.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import numpy as np
from livekit.agents.utils import aio
from livekit.agents.voice.transcription import synchronizer
from livekit.agents.voice.transcription._speaking_rate import SpeakingRateDetector, SpeakingRateStream


@functools.lru_cache(maxsize=8)
def _window(frame_length: int) -> tuple[np.ndarray, float]:
    window = np.hanning(frame_length)
    return window, 1.0 / float(np.sqrt(np.sum(window**2)))


class _TakingTurns(aio.Chan[Any]):
    """A channel whose reader lets the event loop run between items.

    The stream's task reads its input in a loop that never waits while frames are
    queued, and a preemptively synthesized reply arrives all at once: without a turn
    for the loop in between, the reply's first frame (a callback away from the room)
    waited until the estimate had worked through the whole reply."""

    async def recv(self) -> Any:
        item = await super().recv()
        await asyncio.sleep(0)
        return item


class _FastSpeakingRateStream(SpeakingRateStream):
    """The framework's stream, its spectral flux batched and reused between windows.

    The stream slides a 1 s window by 0.1 s, so nine in ten of a window's 25 ms frames
    were transformed for the window before: their magnitudes are kept and only the new
    frames go through the FFT."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # read by the stream's task, which has not started yet: nothing was pushed
        self._input_ch = _TakingTurns()
        self._last_audio: np.ndarray | None = None
        self._last_magnitudes: np.ndarray | None = None
        self.frames_transformed = 0  # FFTs computed, for the tests

    def _spectral_flux(self, audio: np.ndarray, sample_rate: int) -> float:
        # the parameters of SpeakingRateStream._spectral_flux: 25 ms frames, 50 % overlap
        frame_length = int(sample_rate * 0.025)
        hop_length = frame_length // 2
        if frame_length <= 0 or len(audio) < frame_length:
            return 0.0
        num_frames = (len(audio) - frame_length) // hop_length + 1
        magnitudes = self._magnitudes(audio, frame_length, hop_length, num_frames)
        flux = np.abs(np.diff(magnitudes, axis=0)).sum(axis=1)
        return float(np.mean(flux)) if flux.size else 0.0

    def _magnitudes(
        self, audio: np.ndarray, frame_length: int, hop_length: int, num_frames: int
    ) -> np.ndarray:
        reused = self._reusable(audio, frame_length, hop_length)
        window, scale = _window(frame_length)
        # the caller refills one buffer for every window: keep a copy
        self._last_audio = np.array(audio, copy=True)
        first_new = 0 if reused is None else len(reused)
        frames = np.lib.stride_tricks.sliding_window_view(audio, frame_length)[::hop_length][
            first_new:num_frames
        ]
        fresh = np.abs(np.fft.rfft(frames * window, axis=1) * scale)
        self.frames_transformed += len(fresh)
        magnitudes = fresh if reused is None else np.concatenate([reused, fresh])
        self._last_magnitudes = magnitudes
        return magnitudes

    def _reusable(self, audio: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray | None:
        """The previous window's magnitudes of the frames this window shares with it."""
        last, magnitudes = self._last_audio, self._last_magnitudes
        shift = self._step_size_samples
        if (
            last is None
            or magnitudes is None
            or len(last) != len(audio)
            or shift <= 0
            or shift % hop_length
            or shift >= len(audio)
            or magnitudes.shape[1] != frame_length // 2 + 1
            or not np.array_equal(audio[: len(audio) - shift], last[shift:])
        ):
            return None
        kept = magnitudes[shift // hop_length :]
        return kept if len(kept) else None


class FastSpeakingRateDetector(SpeakingRateDetector):
    """livekit-agents' speaking-rate detector, its spectral flux computed in one FFT call."""

    def stream(self) -> SpeakingRateStream:
        return _FastSpeakingRateStream(self, self._opts)


def install() -> None:
    """Make every TranscriptSynchronizer built from now on use FastSpeakingRateDetector."""
    synchronizer.SpeakingRateDetector = FastSpeakingRateDetector  # type: ignore[misc]
