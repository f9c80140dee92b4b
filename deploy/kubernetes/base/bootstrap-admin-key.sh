#!/bin/sh
# Create the first admin API key when the registry has no active one; do nothing otherwise.
#
# A server that listens beyond the pod refuses to start without an admin key or an OIDC issuer, and
# keys live in the registry database, so the first one is made here, against that database
# (FERRYMAN_DATABASE_URL, else the SQLite file under FERRYMAN_HOME). The key is printed once, on
# stdout: read it with `kubectl logs`, store it, and see docs/deployment.md ("The first admin key").
set -eu

if [ -n "${FERRYMAN_OIDC_ISSUER:-}" ]; then
  echo "ferryman-bootstrap: OIDC is configured; no admin key is needed" >&2
  exit 0
fi
if [ -n "${FERRYMAN_DATABASE_URL:-}" ]; then
  set -- --database-url "$FERRYMAN_DATABASE_URL"
else
  set -- --home "${FERRYMAN_HOME:?set FERRYMAN_HOME or FERRYMAN_DATABASE_URL}"
fi

keys=$(ferryman keys list "$@" --active --json)
has_admin=$(printf '%s' "$keys" | python3 -c '
import json, sys
keys = json.load(sys.stdin)["keys"]
print("yes" if any(k["role"] == "admin" and k["state"] == "active" for k in keys) else "no")
')
case "$has_admin" in
  yes)
    echo "ferryman-bootstrap: an active admin key exists; nothing to do" >&2
    ;;
  no)
    echo "ferryman-bootstrap: no active admin key: creating one (printed below, this once)" >&2
    ferryman keys create --role admin --name bootstrap "$@"
    ;;
  *)
    echo "ferryman-bootstrap: could not read the key list" >&2
    exit 1
    ;;
esac
