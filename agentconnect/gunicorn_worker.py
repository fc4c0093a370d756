"""gunicorn's threaded worker, with new connections spread over the workers.

gunicorn's gthread workers share one listening socket, and a kept-alive
connection stays with the worker that accepted it for its whole life. When
clients open several connections at once (a load balancer's pool, a browser's
parallel requests), every worker is woken, but the first one to run accepts
them one after another before its siblings are even scheduled. Measured with
10 keep-alive clients on 3 workers x 4 threads: one worker held 5 to 9 of the
10 connections; its requests queued for its 4 threads and its one
interpreter lock while its siblings had threads to spare.

Here a worker that already holds connections waits a moment before it
accepts another, a little longer for each one it holds, so that a sibling
holding fewer takes it first (the siblings were woken by the same
connection). Nothing is gated or refused: if no sibling took the connection
meanwhile, this worker accepts it, at most ACCEPT_DELAY_MAX later. Requests
already in the worker's threads go on during the wait; only its event loop
waits (a kept-alive connection whose response was just sent is watched again
after it), and only when a new connection arrives.
"""

from __future__ import annotations

import time
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

# Per connection held: long enough for a woken sibling to be scheduled and accept.
ACCEPT_DELAY_PER_CONNECTION = 0.0005
ACCEPT_DELAY_MAX = 0.005


class BalancedThreadWorker(ThreadWorker):
    def accept(self, listener: Any) -> None:
        if self.nr_conns:
            time.sleep(min(self.nr_conns * ACCEPT_DELAY_PER_CONNECTION, ACCEPT_DELAY_MAX))
        # A sibling that took the connection meanwhile leaves EAGAIN here, which
        # ThreadWorker.accept ignores.
        super().accept(listener)
