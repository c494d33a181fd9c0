#!/usr/bin/env bash
# A local PostgreSQL server for the search tests (two workers on one study in a real database).
#
# Installs Debian's postgresql package (apt-get, non-interactive) unless a server is installed, starts the cluster,
# creates a user and a database, checks a password login over TCP, and exports CACHELAB_TEST_POSTGRES_URL:
#
#     source .ci/postgres.sh        # exports the variable into this shell
#     eval "$(.ci/postgres.sh)"     # the same from a subshell: stdout is only the export line (logs go to stderr)
#
# Also appends it to $GITHUB_ENV when that is set. Idempotent: reruns reuse the server, user and database.
# Settings: CACHELAB_PG_USER, CACHELAB_PG_PASSWORD, CACHELAB_PG_DB, CACHELAB_PG_PORT (cachelab, cachelab,
# cachelab_test, 5432). Needs root or sudo. The tests also need a driver in the venv: pip install psycopg2-binary.

_cachelab_pg_user="${CACHELAB_PG_USER:-cachelab}"
_cachelab_pg_password="${CACHELAB_PG_PASSWORD:-cachelab}"
_cachelab_pg_db="${CACHELAB_PG_DB:-cachelab_test}"
_cachelab_pg_port="${CACHELAB_PG_PORT:-5432}"

(
    set -euo pipefail
    exec 1>&2  # everything but the final export line goes to stderr

    user="$_cachelab_pg_user" password="$_cachelab_pg_password" db="$_cachelab_pg_db" port="$_cachelab_pg_port"
    for name in "$user" "$db"; do
        [[ "$name" =~ ^[a-z_][a-z0-9_]*$ ]] || { echo "postgres.sh: '$name' is not a plain SQL identifier"; exit 1; }
    done
    [[ "$password" != *"'"* ]] || { echo "postgres.sh: the password must not contain a single quote"; exit 1; }

    if [ "$(id -u)" = 0 ]; then
        as_root() { "$@"; }
        as_postgres() { runuser -u postgres -- "$@"; }
    else
        as_root() { sudo "$@"; }
        as_postgres() { sudo -u postgres "$@"; }
    fi

    if ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
        echo "postgres.sh: installing Debian's postgresql package"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql
    fi
    version="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"

    # Debian's package creates the cluster "main"; create it if the install skipped that (e.g. in some images).
    if ! pg_lsclusters -h | awk '{print $1, $2}' | grep -qx "$version main"; then
        as_root pg_createcluster --port "$port" "$version" main
    fi
    cluster_port="$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')"
    if [ "$cluster_port" != "$port" ]; then
        echo "postgres.sh: cluster $version/main listens on port $cluster_port, not $port; using $cluster_port"
        port="$cluster_port"
    fi
    if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $4}' | grep -q online; then
        echo "postgres.sh: starting cluster $version/main on port $port"
        as_root pg_ctlcluster "$version" main start
    fi
    for _ in $(seq 1 30); do
        pg_isready -q -h localhost -p "$port" && break
        sleep 1
    done
    pg_isready -h localhost -p "$port"

    sql() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$port" -d postgres -tAc "$1"; }
    if [ "$(sql "SELECT 1 FROM pg_roles WHERE rolname = '$user'")" != 1 ]; then
        sql "CREATE ROLE $user LOGIN PASSWORD '$password'"
    else
        sql "ALTER ROLE $user LOGIN PASSWORD '$password'"
    fi
    if [ "$(sql "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
        sql "CREATE DATABASE $db OWNER $user"
    fi
    # a password login over TCP, as the tests make it
    PGPASSWORD="$password" psql -X -q -h localhost -p "$port" -U "$user" -d "$db" -tAc "SELECT 1" >/dev/null
    echo "postgres.sh: PostgreSQL $version ready: database $db, user $user, localhost:$port"
    echo "$port" > "${TMPDIR:-/tmp}/cachelab-postgres-port"
) || { echo "postgres.sh: failed" >&2; return 1 2>/dev/null || exit 1; }

_cachelab_pg_port="$(cat "${TMPDIR:-/tmp}/cachelab-postgres-port")"
export CACHELAB_TEST_POSTGRES_URL="postgresql+psycopg2://${_cachelab_pg_user}:${_cachelab_pg_password}@localhost:${_cachelab_pg_port}/${_cachelab_pg_db}"
if [ -n "${GITHUB_ENV:-}" ]; then
    echo "CACHELAB_TEST_POSTGRES_URL=$CACHELAB_TEST_POSTGRES_URL" >> "$GITHUB_ENV"
fi
echo "export CACHELAB_TEST_POSTGRES_URL='$CACHELAB_TEST_POSTGRES_URL'"
unset _cachelab_pg_user _cachelab_pg_password _cachelab_pg_db _cachelab_pg_port
