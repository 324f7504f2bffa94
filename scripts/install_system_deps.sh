#!/usr/bin/env bash
# Installs the system packages the tests use, only when they are missing: Debian's PostgreSQL server and
# client (the jobs' tests start throwaway clusters) and openssl (TLS test clusters). Needs root or sudo;
# idempotent.
set -euo pipefail

missing=()
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ] || [ ! -x "$pg_bin/pg_dump" ]; then
  missing+=(postgresql postgresql-client)
fi
command -v openssl >/dev/null 2>&1 || missing+=(openssl)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing system packages: ${missing[*]}"
as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian's package starts a cluster of its own; the tests start their own in temp dirs, so stop it.
if command -v pg_ctlcluster >/dev/null 2>&1; then
  for cluster in $(pg_lsclusters -h 2>/dev/null | awk '{print $1"/"$2}'); do
    "${as_root[@]}" pg_ctlcluster ${cluster/\// } stop 2>/dev/null || true
  done
fi
