#!/usr/bin/env bash
# Remove exactly what install.sh created (its manifest lists it). Review sessions, saved reference sets and cached
# adaptations in the user's data folder are the user's work and stay.
set -euo pipefail
PREFIX="${PREFIX:-$HOME/.local}"
manifest="$PREFIX/share/medad-viewer/install-manifest.txt"
if [ ! -f "$manifest" ]; then
    echo "No MedAD Viewer installation found in $PREFIX (no $manifest)." >&2
    exit 1
fi
app="$(head -1 "$manifest")"
case "$app" in */opt/medad-viewer) ;; *) echo "unexpected manifest: $manifest" >&2; exit 1;; esac
dirs=()
while IFS= read -r p; do
    [ -z "$p" ] && continue
    case "$p" in
        "dir "*) dirs=("${p#dir }" "${dirs[@]}") ;;  # deepest first
        "$app") rm -rf -- "$p" ;;
        *) rm -f -- "$p" ;;
    esac
done < "$manifest"
command -v update-mime-database >/dev/null 2>&1 && update-mime-database "$PREFIX/share/mime" >/dev/null 2>&1 || true
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$PREFIX/share/applications" >/dev/null 2>&1 || true
for d in "${dirs[@]}"; do
    # A folder install.sh made goes when nothing else lives in it (the MIME database it generated aside).
    if [ "$d" = "$PREFIX/share/mime" ] && [ -z "$(ls -A "$d/packages" 2>/dev/null)" ]; then
        rm -rf -- "$d"
    fi
    rmdir -- "$d" 2>/dev/null || true
done
echo "Removed MedAD Viewer from $PREFIX (your review sessions in the app data folder are kept)."
