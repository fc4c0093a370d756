from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections


@contextmanager
def database_unreachable(alias: str = "default") -> Iterator[None]:
    """Point one connection at a closed port (the discard port, 9) for the block, then restore it.

    The shared PostgreSQL keeps running; only this process's connection
    settings change, and the next query after the block reconnects.
    """
    conn = connections[alias]
    saved = copy.deepcopy(conn.settings_dict)
    conn.close()
    conn.settings_dict.update(HOST="127.0.0.1", PORT="9")
    try:
        yield
    finally:
        conn.close()
        conn.settings_dict.clear()
        conn.settings_dict.update(saved)
