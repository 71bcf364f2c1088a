#!/usr/bin/env bash
# Build the self-contained app bundle: dist/medad-viewer/ (one folder: Python, PySide6 with its xcb plugin, the CPU
# build of torch, the ImageNet EfficientNet-Lite2 weights, the demo study and its reference set, the report's
# fonts), then dist/medad-viewer-<version>-linux-x86_64.tar.gz with install.sh / uninstall.sh / a desktop entry.
#
#   bash installer/build.sh            # from a checkout; prints the bundle size and the build time
#
# The build venv (build/venv) gets torch's CPU build: /opt/wheels/torch-*+cpu-*.whl when present, else torch from
# https://download.pytorch.org/whl/cpu. A site with NVIDIA GPUs builds its own bundle with a CUDA build instead:
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 bash installer/build.sh    (or TORCH_WHEEL=file.whl)
# On Debian/Ubuntu the system packages the build needs (python3-venv; binutils for strip) are installed with apt-get,
# with sudo when not root; installer/smoke_test.sh installs its own (Xvfb for the GUI check, …) the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
if command -v apt-get >/dev/null 2>&1; then
    missing=""
    for p in python3-venv binutils; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "Installing system packages:$missing"
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
    fi
fi
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
VERSION=$("$PY" -c "import re;print(re.search(r'__version__ = \"(.+)\"', open('medad_viewer/__init__.py').read())[1])")

venv=build/venv
if [ ! -x "$venv/bin/python" ]; then
    "$PY" -m venv "$venv"
fi
pip() { "$venv/bin/python" -m pip -q "$@"; }
pip install --upgrade pip
has_cpu_torch() { "$venv/bin/python" -c "import torch,sys; sys.exit(0 if torch.version.cuda is None else 1)" 2>/dev/null; }
if [ -n "${TORCH_WHEEL:-}" ]; then
    pip install "$TORCH_WHEEL"                       # a site's own build, e.g. a CUDA wheel (see the README)
elif [ -n "${TORCH_INDEX_URL:-}" ]; then
    pip install "torch>=2.2,<=2.14.1" --index-url "$TORCH_INDEX_URL"
elif ! has_cpu_torch; then
    wheel="$(ls /opt/wheels/torch-*+cpu-*.whl 2>/dev/null | sort | tail -1 || true)"
    if [ -n "$wheel" ]; then
        pip install "$wheel"
    else
        pip install "torch>=2.2,<=2.14.1" --index-url https://download.pytorch.org/whl/cpu
    fi
fi
# The app and its dependencies on top of that torch; torchvision and open_clip (CLIP backbones) are left out of the
# bundle by the spec, so the one matching this torch need not exist.
pip install --no-deps -e .
"$venv/bin/python" - <<'EOF' > build/requirements-bundle.txt
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
skip = ("torch", "torchvision", "open_clip_torch")
print("\n".join(d for d in deps if re.split(r"[<>=!~ ]", d)[0] not in skip))
EOF
pip install -r build/requirements-bundle.txt "pyinstaller>=6.5"
if [ -z "${TORCH_WHEEL:-}${TORCH_INDEX_URL:-}" ]; then
    has_cpu_torch || { echo "build/venv holds a CUDA build of torch; the default bundle carries the CPU build" >&2; exit 1; }
fi

rm -rf dist/medad-viewer build/pyi
"$venv/bin/python" -m PyInstaller --noconfirm --clean --log-level WARN --workpath build/pyi --distpath dist \
    installer/bundle/medad-viewer.spec
# torch's libraries carry symbol tables the app never needs (about 70 MB).
find dist/medad-viewer/_internal/torch/lib -name "*.so*" -exec strip --strip-unneeded {} + 2>/dev/null || true
cp installer/bundle/install.sh installer/bundle/uninstall.sh installer/bundle/medad-viewer.desktop \
   installer/bundle/medad-viewer.png installer/bundle/mime.xml dist/medad-viewer/
chmod +x dist/medad-viewer/install.sh dist/medad-viewer/uninstall.sh

archive="dist/medad-viewer-${VERSION}-linux-x86_64.tar.gz"
tar -C dist -czf "$archive" medad-viewer
end=$(date +%s)
echo "bundle:   dist/medad-viewer/  $(du -sh dist/medad-viewer | cut -f1) unpacked"
echo "archive:  $archive  $(du -sh "$archive" | cut -f1)"
echo "built in  $((end - start)) s"
