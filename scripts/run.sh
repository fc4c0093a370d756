#!/usr/bin/env bash
# The demo (`make run`): everything on this machine, embedded defaults.
#
#   livekit-server --dev (loopback, keys devkey/secret, webhooks to Django)
#   Django runserver 127.0.0.1:8000 on SQLite (db.sqlite3)
#   Celery worker + beat on the embedded filesystem broker (no Redis)
#   the voice / conference agent workers, when their commands exist
#
# Output of each process is prefixed with its name. Ctrl-C (or SIGTERM) stops
# every process this script started, by pid, and exits. State: .run/dev/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DEV="$ROOT/.run/dev"
PY="$ROOT/.venv/bin/python"
CELERY="$ROOT/.venv/bin/celery"
LK_BIN="$ROOT/.bin/livekit-server"
LK_PORT=7880          # livekit --dev defaults: http/ws 7880, rtc tcp 7881, udp 7882
LK_RTC_TCP=7881
LK_RTC_UDP=7882
WEB_PORT=8000
LK_KEY=devkey         # livekit's --dev keys; dev mode accepts the short secret
LK_SECRET=secret
STOP_GRACE=15         # seconds a process gets to drain after SIGTERM

if [[ -t 1 ]]; then
    BOLD=$'\e[1m' DIM=$'\e[2m' RESET=$'\e[0m'
    COLORS=($'\e[36m' $'\e[32m' $'\e[33m' $'\e[35m' $'\e[34m' $'\e[31m' $'\e[96m')
else
    BOLD='' DIM='' RESET=''
    COLORS=('')
fi

say() { printf '%s==> %s%s\n' "$BOLD" "$*" "$RESET"; }
die() { printf 'run: error: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

http_status() {
    timeout 5 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n" "$2" "$1" >&3
        head -n1 <&3' _ "$1" "$2" 2>/dev/null | awk '{print $2}'
}

[[ -x "$PY" ]] || die ".venv missing: run scripts/install-deps.sh (or make run)"
[[ -x "$LK_BIN" ]] || die "$LK_BIN missing: run scripts/install-deps.sh (or make run)"
for p in "$LK_PORT" "$LK_RTC_TCP" "$WEB_PORT"; do
    if port_open "$p"; then
        die "port $p is already in use (another 'make run'?); stop that first"
    fi
done

mkdir -p "$DEV"

# ------------------------------------------------------------------ environment
# The demo runs on the embedded defaults: no DATABASE_URL means SQLite, no
# broker URL means Celery's filesystem broker. Empty REDIS_URL/CELERY_BROKER_URL
# count as "set", so a developer's .env cannot switch them back on.
unset DATABASE_URL
export REDIS_URL="" CELERY_BROKER_URL=""
export CELERY_BROKER_FILESYSTEM_DIR="$DEV/broker"
export DJANGO_DEBUG=true
export LIVEKIT_URL="ws://127.0.0.1:$LK_PORT"
export LIVEKIT_API_KEY="$LK_KEY" LIVEKIT_API_SECRET="$LK_SECRET"
export PYTHONUNBUFFERED=1
if [[ -f .env ]] && grep -qE '^[[:space:]]*(export[[:space:]]+)?DATABASE_URL=' .env; then
    say "note: .env sets DATABASE_URL, so the demo uses that database instead of SQLite"
fi

# ------------------------------------------------------------------ processes
NAMES=()
PIDS=()
color_i=0

prefix() {
    local label
    label="$(printf '%s%-16s|%s ' "${COLORS[color_i % ${#COLORS[@]}]}" "$1" "$RESET")"
    # sed -u: line by line, so the lines of different processes interleave promptly
    exec sed -u "s/^/$label/"
}

# Each process gets its own session (setsid), so the terminal's Ctrl-C reaches
# only this script, which then stops the processes in order. The inner shell
# is the session leader and execs the command: its pid is the process group.
start_proc() {
    local name="$1"
    shift
    setsid bash -c 'exec "$@"' _ "$@" </dev/null > >(prefix "$name") 2>&1 &
    NAMES+=("$name")
    PIDS+=("$!")
    color_i=$((color_i + 1))
}

# Run a command in the foreground with prefixed output; fail the script if it fails.
run_step() {
    local name="$1"
    shift
    # a pipeline (not >(...)): it ends only after the prefixer has flushed, and
    # with pipefail it fails when the command does
    "$@" </dev/null 2>&1 | prefix "$name"
    color_i=$((color_i + 1))
}

stopping=0
stop_all() {
    local rc="${1:-0}" i pid deadline
    [[ $stopping == 1 ]] && return
    stopping=1
    # Ignore further signals while stopping: `make` repeats a SIGTERM to its
    # child, and a second Ctrl-C must not leave orphans behind. The stop is
    # bounded anyway (STOP_GRACE, then SIGKILL).
    trap '' INT TERM
    echo
    say "stopping: ${NAMES[*]:-nothing}"
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM "${PIDS[i]}" 2>/dev/null || true
    done
    deadline=$((SECONDS + STOP_GRACE))
    for pid in "${PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.2
        done
    done
    # Leftovers in the process groups we created (runserver's reloaded child,
    # celery's pool processes, agent job processes): TERM, then KILL.
    for ((i = 0; i < ${#PIDS[@]}; i++)); do
        pid="${PIDS[i]}"
        if kill -0 -- "-$pid" 2>/dev/null; then
            kill -TERM -- "-$pid" 2>/dev/null || true
            sleep 1
            if kill -0 -- "-$pid" 2>/dev/null; then
                printf 'run: %s did not stop in time; killing it\n' "${NAMES[i]}" >&2
                kill -KILL -- "-$pid" 2>/dev/null || true
            fi
        fi
    done
    wait 2>/dev/null || true
    say "stopped"
    exit "$rc"
}
trap 'stop_all 130' INT
trap 'stop_all 143' TERM
trap 'stop_all $?' EXIT

# ------------------------------------------------------------------ livekit
# --dev would log at debug level: too much to read among the other processes
"$PY" agentconnect/livekit_config.py --port "$LK_PORT" --rtc-tcp-port "$LK_RTC_TCP" \
    --rtc-udp-port "$LK_RTC_UDP" --key "$LK_KEY" --secret "$LK_SECRET" \
    --webhook-url "http://127.0.0.1:$WEB_PORT/api/v1/livekit-agents/webhook" > "$DEV/livekit.yaml"

say "starting livekit-server (dev mode) on 127.0.0.1:$LK_PORT"
start_proc livekit "$LK_BIN" --dev --config "$DEV/livekit.yaml" --bind 127.0.0.1 --node-ip 127.0.0.1
deadline=$((SECONDS + 30))
until [[ "$(http_status "$LK_PORT" /)" == 200 ]]; do
    kill -0 "${PIDS[0]}" 2>/dev/null || die "livekit-server exited during start-up (see its lines above)"
    ((SECONDS < deadline)) || die "livekit-server does not answer on http://127.0.0.1:$LK_PORT/"
    sleep 0.2
done

# ------------------------------------------------------------------ django
say "migrating the SQLite database"
run_step migrate "$PY" manage.py migrate --noinput

seed_json=""
if compgen -G "*/management/commands/seed_demo.py" >/dev/null; then
    say "seeding the demo company and agents"
    run_step seed "$PY" manage.py seed_demo
    seed_json="$("$PY" manage.py seed_demo --json </dev/null | tail -n1)"
else
    say "note: no seed_demo command yet; skipping the demo data"
fi

say "starting Django, Celery worker and beat"
start_proc web "$PY" manage.py runserver "127.0.0.1:$WEB_PORT"
start_proc worker "$CELERY" -A agentconnect worker -l info --concurrency 2
start_proc beat "$CELERY" -A agentconnect beat -l info --schedule "$DEV/celerybeat-schedule"

if [[ -f voiceagents/management/commands/run_voice_agent.py ]]; then
    start_proc voice-agent "$PY" manage.py run_voice_agent dev
else
    say "note: voiceagents/management/commands/run_voice_agent.py not there yet; no voice agent"
fi
if [[ -f voiceagents/management/commands/run_conference_agent.py ]]; then
    start_proc conference-agent "$PY" manage.py run_conference_agent dev
else
    say "note: voiceagents/management/commands/run_conference_agent.py not there yet; no conference agent"
fi

deadline=$((SECONDS + 60))
until [[ -n "$(http_status "$WEB_PORT" /admin/login/)" ]]; do
    kill -0 "${PIDS[1]}" 2>/dev/null || die "Django runserver exited during start-up (see its lines above)"
    ((SECONDS < deadline)) || die "Django does not answer on http://127.0.0.1:$WEB_PORT/"
    sleep 0.3
done

# ------------------------------------------------------------------ banner
agent_id=N company_id=N widget_key='<widget_key from seed_demo --json>'
if [[ -n "$seed_json" ]]; then
    read -r agent_id company_id widget_key < <(
        "$PY" -c 'import json,sys; d=json.loads(sys.argv[1]); print(d.get("agent_id","N"), d.get("company_id","N"), d.get("widget_key","?"))' \
            "$seed_json" 2>/dev/null || echo "N N ?"
    )
fi
base="http://127.0.0.1:$WEB_PORT"
cat <<EOF

${BOLD}AgentConnect Voice demo is running${RESET}
  admin      $base/admin/        (create a login: .venv/bin/python manage.py createsuperuser)
  demo page  $base/demo/
  API        $base/api/v1/livekit-agents/   docs: $base/api/docs/
  LiveKit    ws://127.0.0.1:$LK_PORT  (key $LK_KEY, secret $LK_SECRET)
  processes  ${NAMES[*]}
  state      .run/dev/  (SQLite: db.sqlite3)

seed_demo --json: ${seed_json:-(none)}

Start a voice session:
  curl -sS -X POST $base/api/v1/livekit-agents/start-voice-session \\
    -H 'Content-Type: application/json' \\
    -H 'X-Widget-Key: $widget_key' \\
    -d '{"session_id": "demo-1", "agent_id": $agent_id, "company_id": $company_id}'

${DIM}Ctrl-C stops everything.${RESET}

EOF

# ------------------------------------------------------------------ supervise
# Poll rather than `wait -n`: the traps must run promptly on Ctrl-C, and the
# output prefixers are children too.
while :; do
    for ((i = 0; i < ${#PIDS[@]}; i++)); do
        if ! kill -0 "${PIDS[i]}" 2>/dev/null; then
            rc=0
            wait "${PIDS[i]}" 2>/dev/null || rc=$?
            printf 'run: %s exited (status %s); stopping the rest\n' "${NAMES[i]}" "$rc" >&2
            stop_all 1
        fi
    done
    sleep 1 &
    wait $! || true
done
