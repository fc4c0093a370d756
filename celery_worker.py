"""Start a Celery worker for AgentConnect Voice: `python celery_worker.py [celery worker options]`.

Equivalent to `celery -A agentconnect worker`; beat runs separately
(`celery -A agentconnect beat`) so that exactly one scheduler exists.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentconnect.settings")
    from agentconnect.celery import app

    app.worker_main(["worker", "--loglevel=INFO", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
