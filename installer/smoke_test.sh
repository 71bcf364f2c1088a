#!/usr/bin/env bash
# Smoke test of the frozen app in dist/medad-viewer/ (made by installer/build.sh), with PATH and PYTHONPATH stripped
# so nothing outside the bundle is used: --version, info, score (4 references), report (PDF) on the sample CT series,
# then the GUI under Xvfb on the demo study (first slice within 10 s, screenshot docs/screenshots/bundle.png).
# Prints the bundle size, the archive size and the cold start time to the first window.
#   bash installer/smoke_test.sh   [MEDAD_SAMPLE_DATA=path/to/sample-data; default: tests/data of the checkout]
# Needs Xvfb (the GUI check), bc, libxcb and OpenGL/EGL; on Debian/Ubuntu it installs what is missing with apt-get
# (with sudo when not root), as installer/setup.sh does for Qt's libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
app="$(pwd)/dist/medad-viewer/medad-viewer"
[ -x "$app" ] || { echo "no bundle at $app: run installer/build.sh first" >&2; exit 1; }
samples="${MEDAD_SAMPLE_DATA:-$(pwd)/tests/data}"
ct="$samples/ct-dicom"
[ -d "$ct" ] || { echo "sample CT series not found at $ct (set MEDAD_SAMPLE_DATA)" >&2; exit 1; }
# What a desktop has and a bare build machine may lack: an X server for the GUI check (Xvfb), the libraries the bundle
# expects from the system (libxcb, OpenGL/EGL; see the README), bc for the timings.
if command -v apt-get >/dev/null 2>&1; then
    missing=""
    for p in xvfb bc libxcb1 libegl1 libgl1; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "Installing system packages:$missing"
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
    fi
fi
command -v bc >/dev/null 2>&1 || { echo "bc is needed (apt-get install bc)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'kill ${XVFB_PID:-} ${APP_PID:-} 2>/dev/null || true; rm -rf "$work"' EXIT
fail() { echo "SMOKE FAIL: $*" >&2; exit 1; }
# Only what a fresh desktop session has: no PATH entries of ours, no PYTHONPATH, a fresh data folder.
run() { env -i HOME="$work/home" LANG=C.UTF-8 PATH=/usr/bin:/bin MEDAD_VIEWER_DATA_DIR="$work/data" "$@"; }
mkdir -p "$work/home"

version="$(run "$app" --version)" || fail "--version"
echo "ok  $version"
run QT_QPA_PLATFORM=offscreen "$app" info "$ct" > "$work/info.txt" || fail "info"
grep -q "20 " "$work/info.txt" || fail "info does not list the 20-slice series: $(cat "$work/info.txt")"
echo "ok  info: $(sed -n 3p "$work/info.txt" | tr -s ' ')"
t0=$(date +%s.%N)
run QT_QPA_PLATFORM=offscreen "$app" score "$ct" --refs "$ct:2,5,14,17" --out "$work/run" 2> "$work/score.log" \
    || fail "score: $(tail -3 "$work/score.log")"
t1=$(date +%s.%N)
[ -s "$work/run/scores.csv" ] && [ -s "$work/run/maps.npy" ] || fail "score wrote no scores"
grep -q "efficientnet-lite2" "$work/run/run.json" && grep -q "ImageNet" "$work/run/run.json" \
    || fail "run.json does not name the backbone and its weights"
printf 'ok  score: 20 slices, 4 references in %.1f s\n' "$(echo "$t1 - $t0" | bc)"
run QT_QPA_PLATFORM=offscreen "$app" report "$work/run" --out "$work/report.pdf" > /dev/null 2>&1 || fail "report"
head -c 5 "$work/report.pdf" | grep -q "%PDF-" || fail "report is not a PDF"
if command -v pdftotext >/dev/null 2>&1; then
    pdftotext "$work/report.pdf" - | grep -q "efficientnet" || fail "the report does not name the backbone"
fi
echo "ok  report: $(du -h "$work/report.pdf" | cut -f1) PDF"
# eval on a tiny BMAD-style layout of the sample chest X-rays (image labels only; the labels are arbitrary here:
# this checks that the command runs from the bundle, not how well it ranks).
xr=("$samples"/xray/*.png)
mkdir -p "$work/bmad/train/good/img" "$work/bmad/test/good/img" "$work/bmad/test/Ungood/img"
cp "${xr[0]}" "${xr[1]}" "$work/bmad/train/good/img/" && cp "${xr[2]}" "$work/bmad/test/good/img/"
cp "${xr[3]}" "$work/bmad/test/Ungood/img/"
run QT_QPA_PLATFORM=offscreen "$app" eval "$work/bmad" --k 2 --seeds 0 --input-size 128 --json > "$work/eval.json" \
    2> "$work/eval.log" || fail "eval: $(tail -3 "$work/eval.log")"
grep -q '"image_auroc"' "$work/eval.json" || fail "eval printed no image AUROC"
echo "ok  eval: $(grep -o '"backbone": "[^"]*"' "$work/eval.json" | head -1)"

# The GUI: Xvfb, the demo study, first slice within 10 s.
command -v Xvfb >/dev/null 2>&1 || fail "Xvfb is needed for the GUI check (apt-get install xvfb; done by this script on Debian/Ubuntu)"
display=":$((90 + RANDOM % 9))"
Xvfb "$display" -screen 0 1600x1000x24 >/dev/null 2>&1 & XVFB_PID=$!
sleep 1
if [ "$(id -u)" -eq 0 ] && [ -w /proc/sys/vm/drop_caches ]; then sync; echo 1 > /proc/sys/vm/drop_caches; cold="cold"; else cold="warm"; fi
log="$work/startup.log"
start=$(date +%s.%N)
run DISPLAY="$display" MEDAD_VIEWER_STARTUP_LOG="$log" "$app" --demo > "$work/gui.log" 2>&1 & APP_PID=$!
for _ in $(seq 100); do
    grep -q "^first-slice" "$log" 2>/dev/null && break
    kill -0 "$APP_PID" 2>/dev/null || fail "the GUI exited: $(tail -5 "$work/gui.log")"
    sleep 0.1
done
grep -q "^first-slice" "$log" 2>/dev/null || fail "no slice shown within 10 s: $(tail -5 "$work/gui.log")"
window=$(awk '/^window/ {print $2; exit}' "$log")
first=$(awk '/^first-slice/ {print $2; exit}' "$log")
sleep 1.5  # let the overlay and the tray finish drawing
if command -v import >/dev/null 2>&1; then
    mkdir -p docs/screenshots
    DISPLAY="$display" import -window root docs/screenshots/bundle.png && echo "ok  screenshot docs/screenshots/bundle.png"
fi
kill "$APP_PID"; wait "$APP_PID" 2>/dev/null || true
printf 'ok  GUI: window after %.1f s, demo slice after %.1f s (%s start)\n' \
    "$(echo "$window - $start" | bc)" "$(echo "$first - $start" | bc)" "$cold"
echo "bundle size: $(du -sh dist/medad-viewer | cut -f1) unpacked; archive: $(du -sh dist/medad-viewer-*.tar.gz 2>/dev/null | cut -f1 | tail -1) packed"
echo "SMOKE OK"
