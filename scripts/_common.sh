# Shared by scripts/run and scripts/test: a suitable Python, the virtualenv, the local services.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

python_ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }

find_python() {
    local candidate version
    if [ -n "${PYTHON:-}" ] && python_ok "$PYTHON"; then echo "$PYTHON"; return; fi
    for candidate in python3.13 python3.12 python3; do
        if command -v "$candidate" >/dev/null && python_ok "$candidate"; then command -v "$candidate"; return; fi
    done
    # pyenv shims fail until a version is selected: ask pyenv for the interpreters it has.
    if command -v pyenv >/dev/null; then
        for version in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[2-9]|[2-9][0-9])(\.[0-9]+)?$' | sort -rV); do
            candidate="$(pyenv prefix "$version" 2>/dev/null)/bin/python"
            if python_ok "$candidate"; then echo "$candidate"; return; fi
        done
    fi
    die "Python 3.12 or newer is needed (set PYTHON=/path/to/python3.12+)."
}

ensure_venv() {
    local requirements="$1" stamp
    if [ ! -x "$VENV/bin/python" ] || ! python_ok "$VENV/bin/python"; then
        local python
        python="$(find_python)"
        say "creating .venv with $("$python" --version)"
        rm -rf "$VENV"
        "$python" -m venv "$VENV"
    fi
    stamp="$VENV/.installed-$(cat "$ROOT/requirements.txt" "$ROOT/$requirements" | sha256sum | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        say "installing $requirements"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ROOT/$requirements"
        rm -f "$VENV"/.installed-*
        touch "$stamp"
    fi
}

# Run a Python check up to 30 times, half a second apart; succeed as soon as it does.
wait_until() {
    for _ in $(seq 1 30); do
        "$VENV/bin/python" -c "$1" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    return 1
}

ensure_postgres() {
    local host="${PGHOST:-127.0.0.1}" port="${PGPORT:-5432}"
    local check="import socket; socket.create_connection(('$host', $port), timeout=1).close()"
    if "$VENV/bin/python" -c "$check" >/dev/null 2>&1; then return; fi
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
        say "starting PostgreSQL"
        for version in /etc/postgresql/*; do
            pg_ctlcluster --skip-systemctl-redirect "$(basename "$version")" main start || true
        done
    elif command -v pg_ctl >/dev/null && [ -n "${PGDATA:-}" ]; then
        say "starting PostgreSQL ($PGDATA)"
        pg_ctl -D "$PGDATA" -w start
    else
        die "PostgreSQL is not running on $host:$port and is not installed here (Debian: apt-get install postgresql)."
    fi
    wait_until "$check" || die "PostgreSQL did not start on $host:$port."
}

ensure_redis() {
    local check="import redis; redis.Redis(host='127.0.0.1', port=6379, socket_timeout=1).ping()"
    if "$VENV/bin/python" -c "$check" >/dev/null 2>&1; then return; fi
    command -v redis-server >/dev/null || die "Redis is not running on 127.0.0.1:6379 and is not installed here (Debian: apt-get install redis-server)."
    say "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir "$( [ -w /var/lib/redis ] && echo /var/lib/redis || echo /tmp )" \
        --logfile "$( [ -w /var/log/redis ] && echo /var/log/redis/amy.log || echo /tmp/amy-redis.log )"
    wait_until "$check" || die "Redis did not start on 127.0.0.1:6379."
}

ensure_database() {
    # Create the database named in DATABASE_URL when it does not exist yet.
    "$VENV/bin/python" - <<'PY'
import os, sys
import environ, psycopg
from psycopg import sql
config = environ.Env.db_url_config(os.environ["DATABASE_URL"])
params = dict(host=config["HOST"] or None, port=config["PORT"] or None, user=config["USER"] or None,
              password=config["PASSWORD"] or None, dbname="postgres", connect_timeout=5, autocommit=True)
with psycopg.connect(**{k: v for k, v in params.items() if v is not None}) as conn:
    if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]]).fetchone():
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(config["NAME"])))
        print(f"created database {config['NAME']}", file=sys.stderr)
PY
}

# Debian packages the tests need, installed from apt once per machine (never downloaded at test
# time): ensure_apt_binaries "<what needs them>" "<package> ..." <binary>...
ensure_apt_binaries() {
    local why_for="$1" packages=($2) binaries=("${@:3}") missing=0 binary
    for binary in "${binaries[@]}"; do [ -x "$binary" ] || missing=1; done
    if [ "$missing" -eq 0 ]; then return; fi
    local why="$why_for needs ${binaries[*]}: install the Debian packages ${packages[*]}"
    command -v apt-get >/dev/null || die "$why (apt-get is not available here)."
    local as_root=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "$why (not root and no sudo)."
        as_root=(sudo -n)
    fi
    # Waits for another apt run's lock instead of failing at once (several checkouts, one machine).
    local apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600)
    local log
    log="$(mktemp)"
    say "installing ${packages[*]}"
    # A stale package index is the usual reason an install fails: update only then.
    if ! "${apt[@]}" install -y --no-install-recommends "${packages[@]}" >"$log" 2>&1; then
        if ! { "${apt[@]}" update && "${apt[@]}" install -y --no-install-recommends "${packages[@]}"; } >"$log" 2>&1; then
            tail -n 20 "$log" >&2
            rm -f "$log"
            die "$why (apt-get install failed; output above)."
        fi
    fi
    rm -f "$log"
    for binary in "${binaries[@]}"; do [ -x "$binary" ] || die "$why (installed, but $binary is missing)."; done
}

# The console's browser test drives Debian's chromium through its chromedriver: selenium-manager
# must never download a browser at test time.
ensure_chromium() {
    ensure_apt_binaries "the console's browser test" "chromium chromium-driver" /usr/bin/chromium /usr/bin/chromedriver
}

# The alert rules' unit tests run promtool, and a test scrapes the live stack with a real Prometheus.
ensure_prometheus() {
    ensure_apt_binaries "the alert rules' tests" "prometheus" /usr/bin/prometheus /usr/bin/promtool
}
