"""The offline STT (pocketsphinx, its bundled en-us model): word error rate and decoding time.

Run (from the repository root; CPU-bound, a benchmark: under the heavy lock):

    flock /tmp/agentconnect-heavy.lock .venv/bin/python bench/bench_offline_stt.py

A fixed set of 30 sentences a visitor might say, spoken by espeak-ng (voices
rotating over en-us, en-gb-x-rp, en-us+f3), sent the way a room delivers them
(48 kHz, resampled to the decoder's 16 kHz), decoded one utterance at a time
with each decoder configuration in the same run. Printed per configuration: WER
(word-level edit distance / reference words, over the whole set), and the CPU
time of a decode per second of speech (median, p95), which is what a visitor
waits for after the VAD ends the utterance. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.utterances import SAMPLE_RATE, speak
from voiceagents.providers import sphinx

VOICES = ("en-us", "en-gb-x-rp", "en-us+f3")
SENTENCES = [
    "what time do you open tomorrow",
    "i would like to book a table for two",
    "can i change my delivery address",
    "my order has not arrived yet",
    "how much does the premium plan cost",
    "i want to cancel my subscription",
    "do you ship to canada",
    "please send me the invoice by email",
    "the parcel arrived this morning",
    "i need a new password for my account",
    "is the shop open on sunday",
    "could you repeat that please",
    "thank you very much",
    "where is my order",
    "i moved to a new flat last week",
    "can i speak to a person",
    "the food was cold when it came",
    "i was charged twice this month",
    "what is your phone number",
    "i would like a refund please",
    "how long does delivery take",
    "my name is john smith",
    "i have a question about my bill",
    "can you help me with my order",
    "yes that is right",
    "no that is not what i asked",
    "good morning how are you",
    "i lost my card yesterday",
    "when does the next train leave",
    "that sounds good to me",
]


def wer_counts(reference: str, hypothesis: str) -> tuple[int, int]:
    ref, hyp = reference.split(), hypothesis.split()
    d = np.zeros((len(ref) + 1, len(hyp) + 1), dtype=int)
    d[:, 0], d[0, :] = np.arange(len(ref) + 1), np.arange(len(hyp) + 1)
    for i in range(1, len(ref) + 1):
        for j in range(1, len(hyp) + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]))
    return int(d[-1, -1]), len(ref)


def normalise(text: str) -> str:
    return " ".join(re.findall(r"[a-z']+", text.lower()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.parse_args()
    audio = [speak(s, voice=VOICES[i % len(VOICES)]) for i, s in enumerate(SENTENCES)]
    configs = sphinx.DECODER_CONFIGS
    print(f"== offline STT: {len(SENTENCES)} espeak-ng sentences, voices {', '.join(VOICES)}")
    for name in configs:
        errors = words = 0
        per_second = []
        for sentence, samples in zip(SENTENCES, audio, strict=True):
            started = time.process_time()
            text = sphinx.transcribe_pcm(samples, SAMPLE_RATE, config=name)
            per_second.append((time.process_time() - started) / (samples.size / SAMPLE_RATE))
            e, n = wer_counts(sentence, normalise(text))
            errors, words = errors + e, words + n
        a = np.asarray(per_second)
        print(
            f"   {name:<10} WER {errors / words * 100:5.1f} % ({errors}/{words} words)"
            f"   decode CPU per second of speech: median {np.median(a) * 1000:.0f} ms, p95 {np.percentile(a, 95) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
