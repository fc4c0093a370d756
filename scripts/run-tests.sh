#!/usr/bin/env bash
# What `make test` runs: start the private test services, run pytest with
# their environment, stop again whatever this run started (services that were
# already up stay up, so a developer can iterate). Arguments go to pytest.
#
# Exit status: pytest's, except that "no tests collected" (pytest's 5) is a
# failure reported as 1; an interrupted run exits 130/143. CI is passed
# through from the caller's environment (.ci/run sets CI=true).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf '==> %s\n' "$*"; }

[[ -x .venv/bin/pytest ]] || { echo "run-tests: .venv/bin/pytest missing; run scripts/install-deps.sh" >&2; exit 1; }

# One `make test` at a time per checkout: colleagues share this working tree,
# and two runs would share (and one would stop) the services and fight over
# pytest-django's test database.
mkdir -p .run/test
exec 9>.run/test/run-tests.lock
if ! flock -n 9; then
    say "another 'make test' is running in this checkout; waiting for it to finish"
    flock 9
fi

services_up=0
started_file="$(mktemp "${TMPDIR:-/tmp}/agentconnect-started.XXXXXX")"
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -s "$started_file" ]]; then
        # shellcheck disable=SC2046
        scripts/test-services.sh stop $(cat "$started_file") 9>&- || true
    elif [[ $services_up == 1 ]]; then
        say "test services were already running before this run; leaving them up"
    fi
    rm -f "$started_file"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 9>&-: the daemons must not inherit the lock, or it would outlive this run
scripts/test-services.sh start --started-file "$started_file" 9>&-
services_up=1

# shellcheck disable=SC1091
. .run/test/env

# pytest.ini pins the live server to 127.0.0.1:18765 (where livekit's webhooks
# go); follow a TEST_LIVESERVER_PORT override (a second checkout's services).
extra=()
if [[ "$TEST_LIVESERVER_PORT" != 18765 ]]; then
    extra=(--liveserver "127.0.0.1:$TEST_LIVESERVER_PORT")
fi

say "pytest ${extra[*]} $*"
rc=0
.venv/bin/pytest "${extra[@]}" "$@" 9>&- || rc=$?

case "$rc" in
    0) say "tests passed" ;;
    5) say "pytest collected no tests: that is a failure"; rc=1 ;;
    *) say "tests FAILED (pytest exit status $rc)" ;;
esac
exit "$rc"
