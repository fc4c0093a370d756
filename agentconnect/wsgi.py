import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentconnect.settings")
application = get_wsgi_application()


def _import_what_first_requests_would() -> None:
    """Import now, while the web worker boots and before it accepts a connection, what
    its first requests would otherwise import and build: every view (the URLconf is
    loaded on the first request that reaches it), and Celery's task registry, result
    backend and broker transport (kombu imports it, and redis-py with it, on the
    first task queued). A worker's first
    start-voice-session spent about 190 ms of CPU on these imports, and
    several times that in wall time when its threads all started at once; gunicorn
    replaces its workers every few thousand requests (max_requests). No connection
    is opened here."""
    from django.urls import get_resolver

    from agentconnect.celery import app

    get_resolver().url_patterns  # noqa: B018 - the access compiles the URLconf
    app.finalize(auto=True)
    app.backend  # noqa: B018 - the access builds the result backend
    with app.connection_for_write() as connection:
        connection.transport  # noqa: B018 - the access loads the transport


_import_what_first_requests_would()
