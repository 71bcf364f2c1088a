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
pip() { .venv/bin/python -m pip -q "$@"; }
pip install --upgrade pip
# The installed torch's version from its metadata (it does not import before its dependencies are in).
torch_version() { .venv/bin/python -c "from importlib.metadata import version; print(version('torch'))" 2>/dev/null; }
# torch first, pinned, so that no resolver pulls a second multi-GB build. TORCH_WHEEL=file.whl or TORCH_INDEX_URL=...
# choose a site's own build (a CUDA one for NVIDIA GPUs). Otherwise: a build already on this machine's disk (pip's
# find-links, such as /opt/wheels; the CPU build is about 0.8 GB installed), then PyTorch's CPU index where it is
# reachable, and only then torch 2.14.1 from the configured index (PyPI's Linux x86_64 build is the CUDA one: about
# 5.5 GB installed, more than a small disk holds).
if [ -n "${TORCH_WHEEL:-}" ]; then
    pip install "$TORCH_WHEEL"
elif [ -n "${TORCH_INDEX_URL:-}" ]; then
    pip install "torch>=2.2,<=2.14.1" --index-url "$TORCH_INDEX_URL"
elif [ -z "$(torch_version)" ]; then
    if pip install --no-index --no-deps "torch>=2.2,<=2.14.1" 2>/dev/null; then
        pip install "torch==$(torch_version)"    # its dependencies, from the index
    elif ! pip install "torch>=2.2,<=2.14.1" --index-url https://download.pytorch.org/whl/cpu --retries 0 --timeout 20 \
            2>/dev/null; then    # PyTorch's CPU builds, where that index is reachable
        pip install "torch==2.14.1"
    fi
fi
pip install -e ".[test]"
# CLIP backbones (open_clip and the torchvision built for this torch) are optional: the default backbone is
# EfficientNet-Lite2. PyPI's torchvision is built against PyPI's CUDA torch and does not import beside a CPU build;
# where it does not, the CLIP backbones are left out, the app says so when one is asked for, and their tests skip.
torch_v="$(torch_version)"; no_clip=".venv/.medad-no-clip-$torch_v"
if [ ! -e "$no_clip" ] && ! .venv/bin/python -c "import open_clip" 2>/dev/null; then
    tv_minor="$(echo "$torch_v" | cut -d. -f2)"; tv_minor=$((tv_minor + 15))    # torch 2.N goes with torchvision 0.(N+15)
    if pip install "torch==$torch_v" "torchvision==0.$tv_minor.*" -e ".[clip]" && .venv/bin/python -c "import open_clip" 2>/dev/null; then
        echo "CLIP backbones installed (open_clip, torchvision $(.venv/bin/python -c 'import torchvision; print(torchvision.__version__)'))"
    else
        pip uninstall -y open_clip_torch timm torchvision >/dev/null 2>&1 || true
        touch "$no_clip"
        echo "Note: no torchvision that imports beside torch $torch_v was found, so the optional CLIP backbones are not" \
             "installed; the default EfficientNet-Lite2 backbone does not need them."
    fi
fi

case "$mode" in
    --demo) exec .venv/bin/medad-viewer --demo ;;
    --test) export QT_QPA_PLATFORM=offscreen; exec .venv/bin/python -m pytest -q ;;
    "") echo "Installed. Run: .venv/bin/medad-viewer --demo" ;;
    *) echo "usage: installer/setup.sh [--demo|--test]" >&2; exit 2 ;;
esac
