import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentconnect.settings")
application = get_wsgi_application()


def _import_what_first_requests_would() -> None:
    """Import and build, before the worker accepts a connection, what its first
    requests would otherwise each wait for: the URLconf and every view, and Celery's
    task registry, result backend and broker transport. No connection is opened."""
    from django.urls import get_resolver

    from agentconnect.celery import app

    get_resolver().url_patterns  # noqa: B018 - the access compiles the URLconf
    app.finalize(auto=True)
    app.backend  # noqa: B018 - the access builds the result backend
    with app.connection_for_write() as connection:
        connection.transport  # noqa: B018 - the access loads the transport


_import_what_first_requests_would()
