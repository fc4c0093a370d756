#!/usr/bin/env bash
# Private, loopback-only PostgreSQL, Redis and livekit-server for the tests.
#
#   scripts/test-services.sh start [--started-file FILE]   # idempotent
#   scripts/test-services.sh stop [postgres|redis|livekit ...]
#   scripts/test-services.sh status                        # exit 0 = all up
#   scripts/test-services.sh env                           # print the env file
#
# Ports: postgres 54329, redis 63799, livekit 7980 (rtc tcp 7981, udp 7982),
# webhooks to the test live server on 18765. All state lives under .run/test/
# (ignored by git). `start` leaves a running instance alone and, with
# --started-file, appends the names of the services it did start, so a caller
# can stop exactly those afterwards. `stop` only touches the processes named by
# our own pidfiles.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/.run/test"

# The ports are fixed so the env file is predictable; the TEST_*_PORT variables
# exist only to run a second checkout's services next to the first one.
PG_PORT="${TEST_PG_PORT:-54329}"
REDIS_PORT="${TEST_REDIS_PORT:-63799}"
LK_PORT="${TEST_LIVEKIT_PORT:-7980}"
LK_RTC_TCP="${TEST_LIVEKIT_RTC_TCP_PORT:-$((LK_PORT + 1))}"
LK_RTC_UDP="${TEST_LIVEKIT_RTC_UDP_PORT:-$((LK_PORT + 2))}"
LIVESERVER_PORT="${TEST_LIVESERVER_PORT:-18765}"   # the Django live server webhooks go to
LK_KEY=testkey
START_TIMEOUT=60          # seconds per service

LK_BIN="$ROOT/.bin/livekit-server"
LK_CONF="$RUN/livekit.yaml"
LK_PID="$RUN/livekit.pid"
LK_LOG="$RUN/livekit.log"
LK_SECRET_FILE="$RUN/livekit.secret"
REDIS_DIR="$RUN/redis"
REDIS_PID="$RUN/redis.pid"
REDIS_LOG="$RUN/redis.log"
ENV_FILE="$RUN/env"

say() { printf '==> %s\n' "$*"; }
warn() { printf 'test-services: %s\n' "$*" >&2; }
die() { warn "error: $*"; exit 1; }

log_tail() {
    local file="$1"
    if [[ -f "$file" ]]; then
        warn "---- last lines of $file ----"
        tail -n 40 "$file" >&2 || true
        warn "---- end of $file ----"
    fi
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# GET http://127.0.0.1:$1$2 with bash alone (curl is not on minimal Debian);
# prints the response (status line, headers, body).
http_get() {
    local port="$1" path="$2"
    timeout 5 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n" "$2" "$1" >&3
        cat <&3' _ "$port" "$path" 2>/dev/null
}

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

read_pid() { [[ -f "$1" ]] && head -n1 "$1" | tr -dc '0-9' || true; }

# ------------------------------------------------------------------ postgres
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"

# postgres refuses to run as root: as root, run it as the `postgres` OS user.
if [[ $EUID -eq 0 ]]; then
    PG_OS_USER=postgres
else
    PG_OS_USER="$(id -un)"
fi

as_pg() {
    if [[ $EUID -eq 0 ]]; then
        # cd /: runuser keeps the cwd, which user postgres may not be able to read
        (cd / && runuser -u "$PG_OS_USER" -- "$@")
    else
        "$@"
    fi
}

# Where the cluster lives: .run/test/pg, unless user postgres cannot reach the
# checkout (e.g. a clone under /root, mode 700) or the socket path would be too
# long for a unix socket (107 bytes); then a per-checkout dir in /tmp, linked
# from .run/test/pg so it is still found in the usual place.
pg_base_dir() {
    local link="$RUN/pg"
    if [[ -L "$link" ]]; then
        readlink "$link"
        return
    fi
    if [[ -d "$link" ]]; then
        printf '%s\n' "$link"
        return
    fi
    local sock="$link/socket/.s.PGSQL.$PG_PORT"
    if [[ ${#sock} -lt 100 ]] && id "$PG_OS_USER" >/dev/null 2>&1 \
        && as_pg test -x "$RUN" 2>/dev/null; then
        printf '%s\n' "$link"
    else
        local hash
        hash="$(printf '%s' "$ROOT" | sha256sum | cut -c1-10)"
        printf '%s\n' "/tmp/agentconnect-test-pg-$EUID-$hash"
    fi
}

pg_paths() {
    PG_BASE="$(pg_base_dir)"
    PGDATA="$PG_BASE/data"
    PG_SOCKET_DIR="$PG_BASE/socket"
    PG_LOG="$PG_BASE/postgres.log"
}

pg_running() {
    pg_paths
    [[ -f "$PGDATA/postmaster.pid" ]] && as_pg "$PG_BIN/pg_ctl" status -D "$PGDATA" >/dev/null 2>&1
}

pg_psql() {
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres "$@"
}

pg_start() {
    [[ -n "$PG_BIN" && -x "$PG_BIN/pg_ctl" ]] \
        || die "PostgreSQL binaries not found in /usr/lib/postgresql/*/bin (run scripts/install-deps.sh)"
    pg_paths
    if pg_running; then
        say "postgres already running on 127.0.0.1:$PG_PORT (data $PGDATA)"
        return 0
    fi
    if port_open "$PG_PORT"; then
        die "port $PG_PORT is taken by another process; not starting postgres"
    fi

    if [[ "$PG_BASE" != "$RUN/pg" ]]; then
        # the /tmp fallback: make sure nobody else planted that directory
        # (we hand it to the postgres user below, so either owner is ours)
        mkdir -p -m 0755 "$PG_BASE"
        local owner
        owner="$(stat -c %u "$PG_BASE")"
        if [[ "$owner" != "$EUID" && "$owner" != "$(id -u "$PG_OS_USER")" ]]; then
            die "$PG_BASE belongs to uid $owner, not to us; remove it or move the checkout"
        fi
        ln -sfn "$PG_BASE" "$RUN/pg"
    else
        mkdir -p "$PG_BASE"
    fi
    mkdir -p "$PG_SOCKET_DIR"
    if [[ $EUID -eq 0 ]]; then
        chown "$PG_OS_USER:" "$PG_BASE" "$PG_SOCKET_DIR"
    fi
    chmod 0700 "$PG_SOCKET_DIR"

    if [[ ! -f "$PGDATA/PG_VERSION" ]]; then
        say "postgres: initdb in $PGDATA ($("$PG_BIN/postgres" --version))"
        rm -rf "$PGDATA"
        as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --no-locale \
            >"$PG_BASE/initdb.log" 2>&1 || { log_tail "$PG_BASE/initdb.log"; die "initdb failed"; }
    fi

    # Rewritten on every start so a changed port/dir takes effect.
    as_pg tee "$PGDATA/agentconnect-test.conf" >/dev/null <<EOF
# written by scripts/test-services.sh
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCKET_DIR'
max_connections = 200
# a throwaway test cluster: durability buys nothing, speed does
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    as_pg tee "$PGDATA/pg_hba.conf" >/dev/null <<EOF
# written by scripts/test-services.sh: trust, loopback only
local   all          all                 trust
host    all          all   127.0.0.1/32  trust
EOF
    grep -q "^include_if_exists = 'agentconnect-test.conf'" "$PGDATA/postgresql.conf" \
        || as_pg sh -c "echo \"include_if_exists = 'agentconnect-test.conf'\" >> '$PGDATA/postgresql.conf'"

    say "postgres: starting on 127.0.0.1:$PG_PORT"
    if ! as_pg "$PG_BIN/pg_ctl" start -D "$PGDATA" -l "$PG_LOG" -w -t "$START_TIMEOUT" >/dev/null; then
        log_tail "$PG_LOG"
        die "postgres did not start"
    fi
    local deadline=$((SECONDS + START_TIMEOUT))
    until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; do
        if ((SECONDS > deadline)); then
            log_tail "$PG_LOG"
            die "postgres does not answer on 127.0.0.1:$PG_PORT"
        fi
        sleep 0.2
    done
    STARTED+=(postgres)
}

pg_ensure_db() {
    # superuser, so pytest-django can create and drop its test database
    pg_psql -c "DO \$\$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'agentconnect') THEN
            CREATE ROLE agentconnect LOGIN SUPERUSER;
        END IF; END \$\$;"
    if [[ -z "$(pg_psql -tAc "SELECT 1 FROM pg_database WHERE datname = 'agentconnect'")" ]]; then
        pg_psql -c "CREATE DATABASE agentconnect OWNER agentconnect"
    fi
}

pg_stop() {
    pg_paths
    if ! pg_running; then
        say "postgres not running"
        return 0
    fi
    say "postgres: stopping (pid $(read_pid "$PGDATA/postmaster.pid"))"
    as_pg "$PG_BIN/pg_ctl" stop -D "$PGDATA" -m fast -w -t 30 >/dev/null
}

pg_status() {
    pg_paths
    if pg_running; then
        printf '%-9s running  pid %-7s 127.0.0.1:%s  data %s\n' postgres \
            "$(read_pid "$PGDATA/postmaster.pid")" "$PG_PORT" "$PGDATA"
    else
        printf '%-9s stopped\n' postgres
        return 1
    fi
}

# ------------------------------------------------------------------ redis
redis_running() {
    local pid
    pid="$(read_pid "$REDIS_PID")"
    pid_alive "$pid" && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == redis-server* ]]
}

redis_start() {
    if redis_running; then
        say "redis already running on 127.0.0.1:$REDIS_PORT"
        return 0
    fi
    command -v redis-server >/dev/null || die "redis-server not found (run scripts/install-deps.sh)"
    if port_open "$REDIS_PORT"; then
        die "port $REDIS_PORT is taken by another process; not starting redis"
    fi
    mkdir -p "$REDIS_DIR"
    rm -f "$REDIS_PID"
    say "redis: starting on 127.0.0.1:$REDIS_PORT"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes \
        --dir "$REDIS_DIR" --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" \
        --save '' --appendonly no \
        || { log_tail "$REDIS_LOG"; die "redis-server failed to start"; }
    local deadline=$((SECONDS + START_TIMEOUT))
    until [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; do
        if ((SECONDS > deadline)); then
            log_tail "$REDIS_LOG"
            die "redis does not answer on 127.0.0.1:$REDIS_PORT"
        fi
        sleep 0.2
    done
    STARTED+=(redis)
}

# Stop a process we started: TERM, wait, then KILL.
stop_pid() {
    local name="$1" pid="$2" i
    say "$name: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    warn "$name (pid $pid) ignored SIGTERM for 10s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

redis_stop() {
    if ! redis_running; then
        say "redis not running"
        rm -f "$REDIS_PID"
        return 0
    fi
    stop_pid redis "$(read_pid "$REDIS_PID")"
    rm -f "$REDIS_PID"
}

redis_status() {
    if redis_running; then
        printf '%-9s running  pid %-7s 127.0.0.1:%s\n' redis "$(read_pid "$REDIS_PID")" "$REDIS_PORT"
    else
        printf '%-9s stopped\n' redis
        return 1
    fi
}

# ------------------------------------------------------------------ livekit
lk_secret() {
    if [[ ! -s "$LK_SECRET_FILE" ]]; then
        mkdir -p "$RUN"
        # livekit-server wants secrets of 32+ characters; 48 hex digits
        (umask 077 && od -An -tx1 -N24 /dev/urandom | tr -d ' \n' > "$LK_SECRET_FILE")
    fi
    cat "$LK_SECRET_FILE"
}

lk_running() {
    local pid exe
    pid="$(read_pid "$LK_PID")"
    pid_alive "$pid" || return 1
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
    [[ "$exe" == "$(readlink -f "$LK_BIN")" ]]
}

lk_write_config() {
    local secret="$1"
    "$ROOT/.venv/bin/python" "$ROOT/agentconnect/livekit_config.py" --port "$LK_PORT" \
        --rtc-tcp-port "$LK_RTC_TCP" --rtc-udp-port "$LK_RTC_UDP" --key "$LK_KEY" --secret "$secret" \
        --webhook-url "http://127.0.0.1:$LIVESERVER_PORT/api/v1/livekit-agents/webhook" \
        --development --empty-timeout 10 --departure-timeout 5 > "$LK_CONF"
}

lk_start() {
    if lk_running; then
        say "livekit-server already running on 127.0.0.1:$LK_PORT"
        return 0
    fi
    [[ -x "$LK_BIN" ]] || die "$LK_BIN not found (run scripts/install-deps.sh)"
    local p
    for p in "$LK_PORT" "$LK_RTC_TCP"; do
        if port_open "$p"; then
            die "port $p is taken by another process; not starting livekit-server"
        fi
    done
    mkdir -p "$RUN"
    lk_write_config "$(lk_secret)"
    say "livekit-server: starting on 127.0.0.1:$LK_PORT (rtc tcp $LK_RTC_TCP, udp $LK_RTC_UDP)"
    # a pidfile left by an instance that died must not be read as the new one's
    rm -f "$LK_PID"
    # setsid: its own session, so a Ctrl-C meant for pytest does not kill it;
    # the inner shell writes its own pid and then becomes livekit-server.
    setsid bash -c 'echo $$ > "$1"; shift; exec "$@"' _ "$LK_PID" \
        "$LK_BIN" --config "$LK_CONF" </dev/null >"$LK_LOG" 2>&1 &
    local deadline=$((SECONDS + START_TIMEOUT)) pid
    while :; do
        pid="$(read_pid "$LK_PID")"
        if [[ -n "$pid" ]] && ! pid_alive "$pid"; then
            log_tail "$LK_LOG"
            die "livekit-server exited during start-up"
        fi
        if http_get "$LK_PORT" / | head -n1 | grep -q ' 200 '; then
            break
        fi
        if ((SECONDS > deadline)); then
            log_tail "$LK_LOG"
            die "livekit-server does not answer on http://127.0.0.1:$LK_PORT/"
        fi
        sleep 0.2
    done
    STARTED+=(livekit)
}

lk_stop() {
    if ! lk_running; then
        say "livekit-server not running"
        rm -f "$LK_PID"
        return 0
    fi
    stop_pid livekit-server "$(read_pid "$LK_PID")"
    rm -f "$LK_PID"
}

lk_status() {
    if lk_running; then
        printf '%-9s running  pid %-7s http://127.0.0.1:%s  rtc tcp %s udp %s\n' livekit \
            "$(read_pid "$LK_PID")" "$LK_PORT" "$LK_RTC_TCP" "$LK_RTC_UDP"
    else
        printf '%-9s stopped\n' livekit
        return 1
    fi
}

# ------------------------------------------------------------------ env
write_env() {
    local secret
    secret="$(lk_secret)"
    cat > "$ENV_FILE.tmp" <<EOF
# written by scripts/test-services.sh; source it: . .run/test/env
export DATABASE_URL=postgres://agentconnect@127.0.0.1:$PG_PORT/agentconnect
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
export CELERY_BROKER_URL=redis://127.0.0.1:$REDIS_PORT/1
export LIVEKIT_URL=ws://127.0.0.1:$LK_PORT
export LIVEKIT_API_KEY=$LK_KEY
export LIVEKIT_API_SECRET=$secret
export TEST_LIVESERVER_PORT=$LIVESERVER_PORT
# pytest-django imports the settings before conftest.py runs, and with DEBUG
# off the settings refuse to start without a secret key
export DJANGO_SECRET_KEY=test-only-secret-key-not-for-production
# tests speak plain HTTP on loopback (and livekit's webhooks too): no HTTPS redirect
export DJANGO_SECURE_SSL_REDIRECT=false
EOF
    mv "$ENV_FILE.tmp" "$ENV_FILE"
}

# ------------------------------------------------------------------ commands
ALL_SERVICES=(postgres redis livekit)
STARTED=()

record_started() {
    local file="$1" s
    if [[ -n "$file" && ${#STARTED[@]} -gt 0 ]]; then
        for s in "${STARTED[@]}"; do
            grep -qx "$s" "$file" 2>/dev/null || printf '%s\n' "$s" >> "$file"
        done
    fi
}

cmd_start() {
    local started_file=""
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --started-file) started_file="$2"; shift 2 ;;
            *) die "start: unknown argument $1" ;;
        esac
    done
    mkdir -p "$RUN"
    STARTED=()
    # Record each service as soon as it is up, so a caller can still stop it
    # when a later one fails to start.
    pg_start
    record_started "$started_file"
    pg_ensure_db
    redis_start
    record_started "$started_file"
    lk_start
    record_started "$started_file"
    write_env
    say "test services up; environment in ${ENV_FILE#"$ROOT"/}"
}

cmd_stop() {
    local services=("$@") s
    [[ ${#services[@]} -gt 0 ]] || services=("${ALL_SERVICES[@]}")
    # reverse start order: livekit's webhooks and the app depend on the others
    for s in livekit redis postgres; do
        [[ " ${services[*]} " == *" $s "* ]] || continue
        case "$s" in
            postgres) pg_stop ;;
            redis) redis_stop ;;
            livekit) lk_stop ;;
        esac
    done
    for s in "${services[@]}"; do
        [[ " ${ALL_SERVICES[*]} " == *" $s "* ]] || die "stop: unknown service $s"
    done
}

cmd_status() {
    local rc=0
    pg_status || rc=3
    redis_status || rc=3
    lk_status || rc=3
    if [[ -f "$ENV_FILE" ]]; then
        printf 'env file  %s\n' "$ENV_FILE"
    fi
    return "$rc"
}

case "${1:-}" in
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    status) cmd_status ;;
    env) cat "$ENV_FILE" ;;
    *)
        echo "usage: $0 start [--started-file FILE] | stop [postgres|redis|livekit ...] | status | env" >&2
        exit 2
        ;;
esac
