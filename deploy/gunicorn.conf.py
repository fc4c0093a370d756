"""gunicorn settings for the web process (`docker-entrypoint.sh web`, agentconnect-web.service).

Override any of them without editing this file through gunicorn's own
environment: WEB_CONCURRENCY (workers) and GUNICORN_CMD_ARGS, e.g.
GUNICORN_CMD_ARGS="--bind 127.0.0.1:8000 --threads 8 --access-logfile -".
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Any

# The config file is loaded before gunicorn puts the project on sys.path.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gunicorn.glogging import Logger  # noqa: E402

from agentconnect.logconfig import logging_config  # noqa: E402

wsgi_app = "agentconnect.wsgi:application"
bind = ["0.0.0.0:8000"]
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
# Threads: a request waiting on LiveKit or PostgreSQL does not hold a whole process.
worker_class = "gthread"
threads = 4
timeout = 30
graceful_timeout = 30
keepalive = 5
# Recycle workers now and then, staggered, so a slow leak never becomes an outage.
max_requests = 2000
max_requests_jitter = 200
# The worker heartbeat file on tmpfs: an overlay or network filesystem can stall it.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# Access lines are off by default (the load balancer has them; probes would flood them).
accesslog = None

_debug = os.environ.get("DJANGO_DEBUG", "").lower() in ("1", "true", "yes", "on")
_format = os.environ.get("LOG_FORMAT") or ("text" if _debug else "json")
logconfig_dict: dict[str, Any] = logging_config(log_format=_format, level=os.environ.get("LOG_LEVEL", "INFO"))
logconfig_dict["loggers"] = {
    "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
    "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
}


class AccessLinesOnRequest(Logger):
    """Access lines only when asked for (`--access-logfile`): gunicorn writes one for
    every request as soon as logconfig_dict is set, as it is above for the JSON format,
    and formatting it cost the web tier CPU on each request."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if self.cfg.accesslog:
            super().access(resp, req, environ, request_time)


logger_class = AccessLinesOnRequest


def post_worker_init(worker: Any) -> None:
    """The application is loaded: move what it allocated (Django, DRF, the URL conf)
    out of the garbage collector's sight. A full collection walks all of it while
    the worker's threads stand still, and it lives as long as the process anyway."""
    gc.collect()
    gc.freeze()


def child_exit(server: Any, worker: Any) -> None:
    """A worker died: drop its live gauges from the shared metrics directory (multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
