#!/usr/bin/env bash
# Sets up what `make demo` and `make test` need on a fresh Debian machine:
# a virtualenv with the project installed, and the Mosquitto broker binary.
set -euo pipefail
PYTHON=${1:-python3}
VENV=${2:-.venv}

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "error: $PYTHON not found. Install Python 3.11 or newer (Debian: apt-get install python3 python3-venv)." >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: Brigade needs Python 3.11 or newer; $PYTHON is $("$PYTHON" -V 2>&1)." >&2
  echo "       Run with PYTHON=/path/to/python3.11 make ..." >&2
  exit 1
fi

find_mosquitto() {
  command -v mosquitto 2>/dev/null || { [ -x /usr/sbin/mosquitto ] && echo /usr/sbin/mosquitto; } || true
}
if [ -z "$(find_mosquitto)" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing mosquitto (apt-get)"
    # The package's own service is not needed: Brigade starts its brokers on ports it picks.
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mosquitto >/dev/null
  else
    echo "error: the Mosquitto MQTT broker is not installed." >&2
    echo "       Install it with:  sudo apt-get install mosquitto" >&2
    echo "       (Brigade starts its own broker on a free loopback port; the system service is not used.)" >&2
    exit 1
  fi
fi
echo "==> mosquitto: $(find_mosquitto)"

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  if ! "$PYTHON" -m venv "$VENV"; then
    echo "error: could not create a virtualenv. On Debian: apt-get install python3-venv" >&2
    exit 1
  fi
fi
echo "==> installing brigade-kitchen[agent,control-plane,sim,dev] into $VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -e '.[agent,control-plane,sim,dev]'
echo "==> ready"
