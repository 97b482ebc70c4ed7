#!/usr/bin/env bash
# Validates docker/compose.yaml (or the files given) against the Compose
# Specification's JSON schema, with check-jsonschema and the copy of the schema it
# ships (`--builtin-schema vendor.compose-spec`: no network needed to validate).
# No Docker engine is needed: this checks the file's shape, not that it runs.
#
#   scripts/validate-compose.sh [FILE…]
#
# check-jsonschema is installed into the project's virtualenv (.venv/) when it is
# missing or not the pinned version. Before trusting a pass, the script checks that
# the validator rejects two broken copies of docker/compose.yaml (an unknown
# top-level key, a depends_on condition that does not exist): a validator that
# accepts everything would fail here instead of passing silently.
# Prints one line when every file is valid; otherwise the validator's errors.
# Exit status: 0 valid, 1 invalid, 2 the validator could not be set up or proved.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
VERSION=0.39.0
SCHEMA=vendor.compose-spec
CHECK="$VENV/bin/check-jsonschema"

fail() { printf 'validate-compose: %s\n' "$*" >&2; exit 2; }

installed_version() { "$CHECK" --version 2>/dev/null | sed -n 's/.*version \([0-9.]*\).*/\1/p'; }

if [ "$(installed_version)" != "$VERSION" ]; then
  if [ ! -x "$VENV/bin/pip" ]; then
    python3 -m venv "$VENV" >/dev/null 2>&1 || fail "could not create the virtualenv $VENV (install python3-venv, or run scripts/install-deps.sh)"
  fi
  printf '==> installing check-jsonschema %s into %s\n' "$VERSION" "$VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check "check-jsonschema==$VERSION" >&2 \
    || fail "pip install check-jsonschema==$VERSION failed; check that PyPI is reachable"
  [ "$(installed_version)" = "$VERSION" ] || fail "check-jsonschema $VERSION is not runnable from $CHECK"
fi

validate() { "$CHECK" --builtin-schema "$SCHEMA" "$@"; }

if [ $# -eq 0 ]; then set -- "$ROOT/docker/compose.yaml"; fi
for f in "$@"; do [ -f "$f" ] || { printf 'compose: INVALID: %s: no such file\n' "$f" >&2; exit 1; }; done

# The negative controls: broken copies of the project's compose file must be rejected.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/validate-compose.XXXXXX") || fail "mktemp failed"
trap 'rm -rf "$scratch"' EXIT
base="$ROOT/docker/compose.yaml"
[ -f "$base" ] || fail "$base is missing"
{ cat "$base"; printf '\nservicez: {}\n'; } > "$scratch/unknown-top-level-key.yaml"
sed 's/condition: service_[a-z_]*/condition: service_finished/' "$base" > "$scratch/bad-condition.yaml"
grep -q 'condition: service_finished' "$scratch/bad-condition.yaml" \
  || fail "cannot build the bad-condition control: $base has no depends_on condition"
for broken in "$scratch"/*.yaml; do
  if validate "$broken" >/dev/null 2>&1; then
    fail "the validator accepted a deliberately broken file ($(basename "$broken")); its verdict cannot be trusted"
  fi
done

if out=$(validate "$@" 2>&1); then
  printf 'compose: OK: %s valid against the Compose Specification schema (check-jsonschema %s, %s; 2 broken copies rejected)\n' \
    "$(printf '%s ' "${@#"$ROOT/"}" | sed 's/ $//')" "$VERSION" "$SCHEMA"
else
  printf 'compose: INVALID against the Compose Specification schema (check-jsonschema %s, %s):\n%s\n' "$VERSION" "$SCHEMA" "$out" >&2
  exit 1
fi
