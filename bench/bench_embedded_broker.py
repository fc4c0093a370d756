"""The embedded filesystem broker (`make run`): enqueue -> a consumer has the message.

Run (from the repository root; light, no services):

    .venv/bin/python bench/bench_embedded_broker.py [--messages 40]

kombu's filesystem transport polls its folder; a dispatch under `make run` waits for
the next poll. For each polling interval (kombu's default 1.0 s, and the one
agentconnect/celery.py sets), in one run: a consumer thread drains a fresh queue in
a temporary folder while messages are published at random moments; printed are the
publish -> receive latency (median, p95) and the consumer's CPU per minute while idle.
Prints figures; asserts nothing. Bounded by --messages and a timeout per message.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from kombu import Connection, Exchange, Queue

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agentconnect.celery import EMBEDDED_BROKER_POLLING_SECONDS


def thread_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


def measure(polling: float, messages: int, idle_seconds: float) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory() as folder:
        options = {
            "data_folder_in": folder,
            "data_folder_out": folder,
            "store_processed": False,
            "control_folder": folder,
            "polling_interval": polling,
        }
        # kombu keeps declared exchanges per process: a fresh name per round
        name = f"bench-{polling}"
        exchange = Exchange(name, type="direct")
        queue = Queue(name, exchange, routing_key=name)
        received: dict[int, float] = {}
        got = threading.Condition()
        stop = threading.Event()
        idle_cpu: list[float] = []

        def consume() -> None:
            with Connection("filesystem://", transport_options=options) as conn:

                def on_message(body: dict[str, int], message: object) -> None:
                    with got:
                        received[int(body["n"])] = time.monotonic()
                        got.notify_all()
                    message.ack()  # type: ignore[attr-defined]

                with conn.Consumer(queue, callbacks=[on_message]):
                    start = thread_cpu()
                    idle_end = time.monotonic() + idle_seconds
                    while time.monotonic() < idle_end:
                        try:
                            conn.drain_events(timeout=2.0)  # as Celery's worker loop calls it
                        except TimeoutError:
                            pass
                    idle_cpu.append((thread_cpu() - start) / idle_seconds * 60)
                    ready.set()
                    while not stop.is_set():
                        try:
                            conn.drain_events(timeout=2.0)  # as Celery's worker loop calls it
                        except TimeoutError:
                            pass

        ready = threading.Event()
        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        ready.wait(idle_seconds + 30)
        rng = random.Random(21)
        latencies = []
        with Connection("filesystem://", transport_options=options) as conn:
            producer = conn.Producer(exchange=exchange, routing_key=name)
            for n in range(messages):
                time.sleep(rng.uniform(0.05, 0.3))  # a start lands anywhere in the poll cycle
                sent = time.monotonic()
                producer.publish({"n": n}, declare=[queue])
                with got:
                    got.wait_for(lambda: n in received, timeout=10)
                if n in received:
                    latencies.append(received[n] - sent)
        stop.set()
        consumer.join(5)
        return latencies, idle_cpu[0] if idle_cpu else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=40)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle polling measured")
    args = parser.parse_args()
    rows = []
    for polling in (1.0, EMBEDDED_BROKER_POLLING_SECONDS):
        latencies, idle = measure(polling, args.messages, args.idle)
        a = np.asarray(latencies)
        rows.append((polling, a, idle))
    print("\n== embedded filesystem broker: publish -> consumer has the message")
    for polling, a, idle in rows:
        label = "kombu default" if polling == 1.0 else "agentconnect/celery.py"
        print(
            f"   polling {polling:.2f} s ({label}): n={a.size} median {np.median(a) * 1000:.0f} ms"
            f" p95 {np.percentile(a, 95) * 1000:.0f} ms; idle consumer CPU {idle:.2f} s per minute"
        )
    base, ours = rows[0][1], rows[1][1]
    print(f"   median ratio default / ours: {np.median(base) / np.median(ours):.1f}x")


if __name__ == "__main__":
    main()
