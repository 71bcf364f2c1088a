#!/usr/bin/env bash
# Install MedAD Viewer for this user, without root: the app under ~/.local/opt/medad-viewer, the command
# ~/.local/bin/medad-viewer, a desktop entry with its icon and file types. Run from the unpacked archive:
#   ./install.sh            (PREFIX=/some/where ./install.sh to install elsewhere than ~/.local)
# What it creates is listed in <prefix>/share/medad-viewer/install-manifest.txt; ./uninstall.sh removes exactly that.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
PREFIX="${PREFIX:-$HOME/.local}"
app="$PREFIX/opt/medad-viewer"
manifest_dir="$PREFIX/share/medad-viewer"
manifest="$manifest_dir/install-manifest.txt"
bin="$PREFIX/bin/medad-viewer"
desktop="$PREFIX/share/applications/medad-viewer.desktop"
icon="$PREFIX/share/icons/hicolor/256x256/apps/medad-viewer.png"
mime="$PREFIX/share/mime/packages/medad-viewer.xml"

if [ -e "$manifest" ]; then
    echo "MedAD Viewer is already installed in $PREFIX; run $app/uninstall.sh first." >&2
    exit 1
fi
for p in "$app" "$bin" "$desktop" "$icon" "$mime"; do
    if [ -e "$p" ] || [ -L "$p" ]; then
        echo "$p exists and was not made by this installer; move it away first." >&2
        exit 1
    fi
done
# Folders that do not exist yet are made here and listed too ("dir <path>"), so uninstall.sh can remove them.
made=()
for d in "$PREFIX/opt" "$PREFIX/bin" "$(dirname "$desktop")" "$(dirname "$icon")" "$(dirname "$mime")" "$manifest_dir"; do
    missing=()
    p="$d"
    while [ ! -e "$p" ]; do missing=("$p" "${missing[@]}"); p="$(dirname "$p")"; done
    made+=("${missing[@]}")
    mkdir -p "$d"
done
if [ "$here" != "$app" ]; then
    cp -a "$here" "$app"
fi
ln -s "$app/medad-viewer" "$bin"
sed "s|@EXEC@|$app/medad-viewer|" "$here/medad-viewer.desktop" > "$desktop"
cp "$here/medad-viewer.png" "$icon"
cp "$here/mime.xml" "$mime"
printf '%s\n' "$app" "$bin" "$desktop" "$icon" "$mime" "$manifest" > "$manifest"
for d in "${made[@]}"; do printf 'dir %s\n' "$d" >> "$manifest"; done
command -v update-mime-database >/dev/null 2>&1 && update-mime-database "$PREFIX/share/mime" >/dev/null 2>&1 || true
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$PREFIX/share/applications" >/dev/null 2>&1 || true
echo "Installed MedAD Viewer in $app"
echo "Start it from the applications menu, or run: $bin --demo"
case ":$PATH:" in *":$PREFIX/bin:"*) ;; *) echo "(add $PREFIX/bin to PATH to run 'medad-viewer' by name)";; esac
