#!/bin/sh
# One image, several processes: the first argument chooses which.
#
#   web               gunicorn (deploy/gunicorn.conf.py) on :8000
#   worker            Celery worker (dispatch/stop tasks); extra args go to celery
#   beat              Celery beat (the reconcile schedule); run exactly one
#   voice-agent       manage.py run_voice_agent start (one-to-one agents)
#   conference-agent  manage.py run_conference_agent start (conference agents)
#   migrate           manage.py migrate (run once per release, before the rest)
#   manage ARGS...    any other management command (createsuperuser, seed_demo, ...)
#   healthcheck ROLE  the container health check for ROLE (deploy/healthcheck.py)
#
# `exec` everywhere: the process receives SIGTERM itself (compose's init, or
# systemd, delivers it) and drains as it should.
set -eu

cd "$(dirname "$0")/.."

role="${1:-web}"
[ "$#" -gt 0 ] && shift

case "$role" in
    web)
        exec python -m gunicorn --config deploy/gunicorn.conf.py "$@"
        ;;
    worker)
        exec celery -A agentconnect worker "$@"
        ;;
    beat)
        # The schedule file is disposable (the schedule lives in code): keep it on tmpfs.
        exec celery -A agentconnect beat --schedule /tmp/celerybeat-schedule "$@"
        ;;
    voice-agent)
        exec python manage.py run_voice_agent start "$@"
        ;;
    conference-agent)
        exec python manage.py run_conference_agent start "$@"
        ;;
    migrate)
        exec python manage.py migrate --noinput "$@"
        ;;
    manage)
        exec python manage.py "$@"
        ;;
    healthcheck)
        exec python deploy/healthcheck.py "$@"
        ;;
    *)
        echo "docker-entrypoint.sh: unknown command '$role' (web, worker, beat, voice-agent, conference-agent, migrate, manage, healthcheck)" >&2
        exit 2
        ;;
esac
