"""The conference mixer on its own: sums, stalls, bounds, departures, taps, attribution, the clock.

Blocks are produced by calling `mix_block()` directly where the behaviour is
about content, so nothing depends on timing; the clock tests await frames
with timeouts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
from livekit import rtc

from tests.helpers import run_async
from voiceagents.worker.mixer import ConferenceMixer, MixerAudioInput

RATE = 16000
BLOCK = RATE // 100


def frame(value: int, samples: int = BLOCK, rate: int = RATE) -> rtc.AudioFrame:
    return rtc.AudioFrame(np.full(samples, value, dtype=np.int16).tobytes(), rate, 1, samples)


def values(f: rtc.AudioFrame | None) -> np.ndarray:
    assert f is not None
    return np.frombuffer(f.data, dtype=np.int16)


def mixer(**kwargs: int) -> ConferenceMixer:
    return ConferenceMixer(sample_rate=RATE, frame_ms=10, jitter_ms=20, max_latency_ms=100, **kwargs)


async def _sum_and_clip() -> None:
    m = mixer()
    m.add_source("a")
    m.add_source("b")
    for _ in range(2):  # jitter_ms = 20: a source is used once it holds two blocks
        m.push("a", frame(1000))
        m.push("b", frame(-300))
    assert values(m.mix_block()).tolist() == [700] * BLOCK
    m.push("a", frame(30000))
    m.push("b", frame(30000))
    assert values(m.mix_block()).tolist() == [700] * BLOCK  # the second queued pair
    loud = m.mix_block()
    assert values(loud).max() == 32767  # clipped, not wrapped round
    await m.aclose()


def test_mix_is_the_clipped_sum_of_the_sources() -> None:
    run_async(_sum_and_clip())


async def _stall() -> None:
    m = mixer()
    m.add_source("talker")
    m.add_source("stalled")
    m.push("stalled", frame(5))
    for _ in range(50):
        m.push("talker", frame(100))
        m.push("talker", frame(100))
        out = m.mix_block()
        # the stalled stream never holds the block back and adds nothing
        assert out is not None and set(values(out).tolist()) == {100}
        m.mix_block()
    assert m.stats.blocks == 100
    await m.aclose()


def test_a_stalled_stream_contributes_silence_and_delays_nobody() -> None:
    run_async(_stall())


async def _bounded() -> None:
    m = mixer()
    m.add_source("burst")
    for i in range(100):  # one second arrives at once (a stream catching up after a stall)
        m.push("burst", frame(i))
    assert m.queued_ms("burst") == 1000
    first = values(m.mix_block())
    # trimmed back to jitter_ms: the oldest audio went, latency is bounded
    assert m.queued_ms("burst") <= 20
    assert first[0] == 98
    assert m.stats.trimmed_blocks == 98
    await m.aclose()


def test_a_burst_is_trimmed_so_latency_stays_bounded() -> None:
    run_async(_bounded())


async def _departure_and_attribution() -> None:
    m = mixer()
    m.add_source("maya")
    m.add_source("tom")
    t0 = time.time()
    m._t0_wall = t0  # block i covers [t0 + i*10ms, ...)
    for _ in range(30):  # maya talks loudly for 300 ms, tom murmurs
        m.push("maya", frame(8000))
        m.push("tom", frame(50))
        m.mix_block()
    m.remove_source("maya")
    for _ in range(30):
        m.push("tom", frame(3000))
        m.mix_block()
    assert not m.has_source("maya")
    assert m.dominant_source(t0, t0 + 0.29) == "maya"  # attributed after she left
    assert m.dominant_source(t0 + 0.31, t0 + 0.59) == "tom"
    assert m.dominant_source(t0 + 0.61, t0 + 10) is None  # the future holds nobody
    quiet = mixer()
    quiet.add_source("breathing")
    quiet._t0_wall = t0
    for _ in range(10):
        quiet.push("breathing", frame(3))
        quiet.mix_block()
    assert quiet.dominant_source(t0, t0 + 0.1) is None
    await m.aclose()
    await quiet.aclose()


def test_attribution_by_energy_survives_the_speaker_leaving() -> None:
    run_async(_departure_and_attribution())


async def _taps() -> None:
    m = mixer(mix=False, levels=False)
    got: dict[str, list[int]] = {"a": [], "b": []}
    m.add_source("a", tap=lambda f: got["a"].append(int(values(f)[0])))
    m.add_source("b", tap=lambda f: got["b"].append(int(values(f)[0])))
    for _ in range(3):
        m.push("a", frame(7))
    assert got["a"] == [7, 7, 7]  # passed on as they come: every frame, in order, no jitter wait
    assert m.mix_block() is None  # no mix wanted
    for _ in range(11):
        m.mix_block()
    # 100 ms without a frame: stalled, and the clock gives its VAD silence to hear time pass
    assert got["a"] == [7, 7, 7, 0, 0]
    assert got["b"] == [0, 0]
    m.mix_block(owed=5)  # the clock catching up after a loop stall: not a stall of the stream
    assert got["b"] == [0, 0]
    await m.aclose()


async def _catch_up() -> None:
    m = mixer()
    m.add_source("a")
    for i in range(30):  # 300 ms arrived while the event loop was blocked
        m.push("a", frame(i))
    heard = [int(values(m.mix_block(owed=29 - k))[0]) for k in range(30)]
    assert heard == list(range(30))  # the clock owed those blocks: nothing trimmed, nothing lost
    assert m.stats.trimmed_blocks == 0
    await m.aclose()


def test_catching_up_after_a_loop_stall_loses_no_audio() -> None:
    run_async(_catch_up())


def test_taps_pass_every_frame_on_and_fill_stalls_with_silence() -> None:
    run_async(_taps())


async def _resample() -> None:
    m = mixer()
    m.add_source("wideband")
    for _ in range(20):
        m.push("wideband", frame(1000, samples=480, rate=48000))
    out = [values(m.mix_block()) for _ in range(10)]
    assert all(block.shape[0] == BLOCK for block in out)
    assert max(int(block.max()) for block in out) > 500  # the audio came through
    await m.aclose()


def test_frames_at_another_rate_are_resampled_and_rechunked() -> None:
    run_async(_resample())


async def finite(count: int, value: int) -> AsyncIterator[rtc.AudioFrame]:
    for _ in range(count):
        yield frame(value)
        await asyncio.sleep(0)


async def failing() -> AsyncIterator[rtc.AudioFrame]:
    yield frame(1)
    raise RuntimeError("track went away badly")


async def _clock() -> None:
    m = mixer()
    m.add_source("short", finite(5, 400))
    m.add_source("broken", failing())
    m.start()
    source = MixerAudioInput(m)
    heard: list[int] = []
    for _ in range(40):  # 400 ms of blocks, whatever the sources do
        heard.append(int(values(await asyncio.wait_for(source.__anext__(), 2)).max()))
    assert 400 in heard
    assert heard[-1] == 0  # silence once everyone has gone, and the clock still runs
    assert m.source_keys == []
    await m.aclose()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(source.__anext__(), 2)


def test_the_clock_runs_on_through_ended_and_failed_streams() -> None:
    run_async(_clock())


async def _backlog() -> None:
    m = mixer()
    m.add_source("a")
    source = MixerAudioInput(m)
    for i in range(5):
        m.push("a", frame(i + 1))
    for _ in range(4):  # the session was busy while the clock made four blocks
        m.mix_block()
    caught_up = await asyncio.wait_for(source.__anext__(), 2)
    assert caught_up.samples_per_channel == 4 * BLOCK  # handed over at once, in order
    assert values(caught_up)[::BLOCK].tolist() == [1, 2, 3, 4]
    await m.aclose()


def test_a_session_that_fell_behind_gets_the_backlog_in_one_frame() -> None:
    run_async(_backlog())
