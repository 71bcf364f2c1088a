#!/usr/bin/env bash
# One-step install for Debian/Ubuntu (and a best effort elsewhere): system libraries Qt needs, a virtual environment
# in .venv, the app with its test extras. Then:  --demo  opens the app on the bundled demo study;
#                                               --test  runs the test suite;  (no flag) only installs.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"

# Qt's xcb platform plugin needs these on a bare Linux; poppler-utils renders report PDFs in the tests.
APT_PACKAGES="python3-venv python3-pip libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 \
libxcb-render-util0 libxcb-shape0 libxcb-xkb1 libxkbcommon-x11-0 libxkbcommon0 libegl1 libgl1 libglib2.0-0 \
libfontconfig1 libdbus-1-3 poppler-utils"

if command -v apt-get >/dev/null 2>&1; then
    missing=""
    for p in $APT_PACKAGES; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "Installing system packages:$missing"
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
    fi
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# Pin torch explicitly: an unpinned torch in a constraint-free resolver pulls a second multi-GB build.
if [ "$(uname -s)" = "Linux" ] && [ "$(uname -m)" = "x86_64" ]; then
    .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
.venv/bin/python -m pip install -q -e ".[test]"

case "$mode" in
    --demo) exec .venv/bin/medad-viewer --demo ;;
    --test) export QT_QPA_PLATFORM=offscreen; exec .venv/bin/python -m pytest -q ;;
    "") echo "Installed. Run: .venv/bin/medad-viewer --demo" ;;
    *) echo "usage: installer/setup.sh [--demo|--test]" >&2; exit 2 ;;
esac
