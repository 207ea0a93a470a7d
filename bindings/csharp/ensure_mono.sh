#!/usr/bin/env bash
# bindings/csharp/ensure_mono.sh: makes sure the Mono C# compiler (mcs) and runtime (mono) are
# there, installing Debian's mono-devel with apt-get when they are missing and this runs as root
# (non-interactive). Exit status: 0 when both are available afterwards, 3 when they are not and
# cannot be installed here (the callers then skip with a message, never fail).
set -uo pipefail

have() { command -v mcs >/dev/null 2>&1 && command -v mono >/dev/null 2>&1; }

if have; then
    exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
    echo "ensure_mono: mcs/mono not found and not running as root: cannot apt-get install mono-devel"
    exit 3
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_mono: mcs/mono not found and no apt-get on this system"
    exit 3
fi
echo "ensure_mono: installing mono-devel with apt-get (Debian 12: about 200 MB, 40 s to 2 min)"
start=$SECONDS
log="$(mktemp)"
if DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mono-devel \
        >>"$log" 2>&1; then
    rm -f "$log"
else
    tail -n 20 "$log"
    rm -f "$log"
    echo "ensure_mono: apt-get install mono-devel failed"
    exit 3
fi
if ! have; then
    echo "ensure_mono: mono-devel installed but mcs/mono still not on PATH"
    exit 3
fi
echo "ensure_mono: $(mono --version | head -n 1) installed in $((SECONDS - start)) s"
