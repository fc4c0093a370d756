"""Imported once in the worker's forkserver, before it forks any job process.

What every job needs anyway (Django's apps and models, the session services, the
transcript writer) is then loaded once per worker, in pages the job processes
share, instead of once per process in its prewarm. The prewarm's own
``django.setup()`` then finds Django ready and returns.
"""

from __future__ import annotations

import django

django.setup()

import sessions.services  # noqa: E402
import sessions.transcripts  # noqa: E402,F401
