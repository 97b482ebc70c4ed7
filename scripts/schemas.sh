#!/usr/bin/env bash
# Runs scripts/schemas.py (check | bundle | serve) with the project's virtualenv,
# installing its validators there first when they are missing: jsonschema (the
# reference implementation of JSON Schema 2020-12, through check-jsonschema, which
# scripts/validate-compose.sh pins too), jsonschema-rs (a second, fast one, for the
# thousands of messages the integration tests check) and openapi-spec-validator for
# OpenAPI 3.1.
#
#   scripts/schemas.sh [check]   exit 0 when everything in schemas/ holds (see schemas.py)
#   scripts/schemas.sh bundle    regenerate Sources/HTTPAPI/OpenAPIDocument.swift
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
OPENAPI_VALIDATOR=0.9.0
CHECK_JSONSCHEMA=0.39.0
JSONSCHEMA_RS=0.61.2

fail() { printf 'schemas: %s\n' "$*" >&2; exit 2; }

have() { "$VENV/bin/python" - <<PY 2>/dev/null
import importlib.metadata as m, sys
sys.exit(0 if m.version("openapi-spec-validator") == "$OPENAPI_VALIDATOR" and m.version("check-jsonschema") == "$CHECK_JSONSCHEMA"
         and m.version("jsonschema-rs") == "$JSONSCHEMA_RS" else 1)
PY
}

if ! have; then
  if [ ! -x "$VENV/bin/pip" ]; then
    python3 -m venv "$VENV" >/dev/null 2>&1 || fail "could not create the virtualenv $VENV (install python3-venv, or run scripts/install-deps.sh)"
  fi
  printf '==> installing openapi-spec-validator %s, check-jsonschema %s and jsonschema-rs %s into %s\n' \
    "$OPENAPI_VALIDATOR" "$CHECK_JSONSCHEMA" "$JSONSCHEMA_RS" "$VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check "openapi-spec-validator==$OPENAPI_VALIDATOR" "check-jsonschema==$CHECK_JSONSCHEMA" \
    "jsonschema-rs==$JSONSCHEMA_RS" >&2 \
    || fail "pip install failed; check that PyPI is reachable"
  have || fail "the validators are not importable from $VENV/bin/python"
fi
exec "$VENV/bin/python" "$ROOT/scripts/schemas.py" "${@:-check}"
