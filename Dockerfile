# syntax=docker/dockerfile:1
# AgentConnect Voice: one image for every process; the command chooses
# (web, worker, beat, voice-agent, conference-agent, migrate; see
# deploy/docker-entrypoint.sh). Build: docker build -t agentconnect-voice .
#
# Base images are pinned by tag; for byte-for-byte rebuilds pin them by
# digest too (python:3.11-slim-bookworm@sha256:...), e.g. with --build-arg.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

# --- the widget and console bundles (widget/src -> static/agentconnect/{widget,console}.js) -
FROM ${NODE_IMAGE} AS widget
WORKDIR /src/widget
COPY widget/package.json widget/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY widget/ ./
RUN npm run build

# --- the application ----------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# No apt packages: every wheel bundles its native libraries (livekit's FFI,
# onnxruntime for silero, libespeak-ng via espeakng-loader, pocketsphinx, libpq)
# and needs only glibc, libstdc++ and zlib, which the base image has.

# Dependencies before the code: a code change does not reinstall them.
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt

# Model files that ship inside wheels: load each once now, so a missing one
# fails the build rather than the first call, and nothing is fetched at run time.
RUN python -c "\
from livekit.plugins import silero; silero.VAD.load(); \
import os, pocketsphinx; assert os.path.isfile(os.path.join(pocketsphinx.get_model_path(), 'en-us', 'en-us.lm.bin')); \
import espeakng_loader; assert os.path.exists(espeakng_loader.get_library_path()) and os.path.isdir(espeakng_loader.get_data_path()); \
print('bundled models present')"

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app

WORKDIR /app
# The code stays owned by root: the app user can run it, not change it.
COPY . .
COPY --from=widget /src/static/agentconnect/ static/agentconnect/

# Static files (admin, widget.js, console.js) collected into the image and served by WhiteNoise.
# Settings need these variables to import; nothing is connected to at build time.
RUN DJANGO_SECRET_KEY=collectstatic-only LIVEKIT_API_KEY=build LIVEKIT_API_SECRET=build \
        python manage.py collectstatic --noinput --verbosity 0 \
    && python -m compileall -q agentconnect sessions voiceagents \
    && chmod 0755 deploy/docker-entrypoint.sh

USER app:app
EXPOSE 8000
ENTRYPOINT ["/app/deploy/docker-entrypoint.sh"]
CMD ["web"]
