#!/usr/bin/env bash
# Install everything the project needs on a Debian 12 machine: system
# packages, the livekit-server binary (built from source with Go) and the
# Python virtualenv. Idempotent: a second run only checks and returns quickly.
#
#   scripts/install-deps.sh            # everything
#   SKIP_APT=1 scripts/install-deps.sh # e.g. on a machine you do not own
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

LIVEKIT_VERSION="v1.13.5"
LIVEKIT_MODULE="github.com/livekit/livekit-server/cmd/server"
BIN_DIR="$ROOT/.bin"
VENV="$ROOT/.venv"
STAMP="$VENV/.agentconnect-requirements.sha256"

say() { printf '==> %s\n' "$*"; }
die() { printf 'install-deps: error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# ---------------------------------------------------------------- apt
# make: `make test` is the CI entry, and minimal Debian images lack it.
# ca-certificates: Go reaches the module proxy over TLS with the system roots.
APT_PACKAGES=(postgresql redis-server espeak-ng sox libespeak-ng1 make ca-certificates)
# chromium: the widget's browser tests drive Debian's Chromium with Playwright
# (never a downloaded browser build).
APT_PACKAGES+=(chromium chromium-driver)

# Debian's own python3 cannot create a venv without python3-venv (no
# ensurepip); a python built elsewhere (pyenv, python.org) brings it along.
if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    APT_PACKAGES+=(python3-venv)
fi

apt_missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    [[ "$status" == "install ok installed" ]] || apt_missing+=("$pkg")
done

if [[ ${#apt_missing[@]} -eq 0 ]]; then
    say "apt packages present (${APT_PACKAGES[*]})"
elif [[ "${SKIP_APT:-}" == 1 ]]; then
    say "SKIP_APT=1: not installing missing apt packages: ${apt_missing[*]}"
else
    say "apt: installing ${apt_missing[*]} (apt-get update first, ~1-3 min)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${apt_missing[@]}"
fi

# ---------------------------------------------------------------- livekit-server
livekit_ok() {
    [[ -x "$BIN_DIR/livekit-server" ]] && "$BIN_DIR/livekit-server" --version >/dev/null 2>&1
}

if livekit_ok; then
    say "livekit-server present: $("$BIN_DIR/livekit-server" --version 2>&1 | head -n1)"
else
    mkdir -p "$BIN_DIR"
    if [[ ! -x "$BIN_DIR/server" ]] || ! "$BIN_DIR/server" --version >/dev/null 2>&1; then
        GO="$(command -v go || true)"
        [[ -z "$GO" && -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go
        [[ -n "$GO" ]] || die "go not found (need Go >= 1.25 to build livekit-server)"
        say "building livekit-server $LIVEKIT_VERSION with $("$GO" version | awk '{print $3}') (first time, ~5 min)"
        # CGO off: a static binary, and no C compiler needed on the machine.
        GOBIN="$BIN_DIR" CGO_ENABLED=0 "$GO" install "$LIVEKIT_MODULE@$LIVEKIT_VERSION"
    fi
    ln -sfn server "$BIN_DIR/livekit-server"
    livekit_ok || die "$BIN_DIR/livekit-server --version fails after the build"
    say "livekit-server ready: $("$BIN_DIR/livekit-server" --version 2>&1 | head -n1)"
fi

# ---------------------------------------------------------------- python venv
if [[ -x "$VENV/bin/python" ]] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    # e.g. the interpreter it was made from moved away
    say "python venv at .venv is broken, recreating it"
    rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating python venv .venv with $(python3 --version 2>&1)"
    python3 -m venv "$VENV"
fi

req_files=()
for f in requirements*.txt; do
    [[ -f "$f" ]] && req_files+=("$f")
done
[[ ${#req_files[@]} -gt 0 ]] || die "no requirements*.txt in $ROOT"
req_file=requirements-dev.txt
[[ -f "$req_file" ]] || req_file=requirements.txt

# The stamp covers every requirements file (dev includes the base one) and the
# interpreter, so a changed pin or a recreated venv triggers a reinstall.
want_hash="$( { "$VENV/bin/python" -c 'import sys; print(sys.version)'; \
                for f in "${req_files[@]}"; do printf '%s\n' "$f"; cat "$f"; done; } \
              | sha256sum | cut -d' ' -f1)"
have_hash="$(cat "$STAMP" 2>/dev/null || true)"

if [[ "$want_hash" == "$have_hash" ]]; then
    say "python packages up to date (${req_files[*]} unchanged)"
else
    say "pip install -r $req_file into .venv (first time several minutes: livekit, onnxruntime, numpy ...)"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -r "$req_file"
    printf '%s\n' "$want_hash" > "$STAMP"
    say "python packages installed"
fi

# ---------------------------------------------------------------- voice widget
# npm ci + esbuild into static/agentconnect/widget.js; skips what is up to date.
"$ROOT/scripts/build-widget.sh"
