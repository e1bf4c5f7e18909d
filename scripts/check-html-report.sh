#!/bin/sh
# Renders an HTML page (a fleet report from `mdmsim report html` or `mdmsim fleet --html`) in
# headless Chromium, as a person would see it in a 1280-pixel-wide window, and writes the
# screenshot to a PNG file to look at.
#
#   scripts/check-html-report.sh REPORT.html OUT.png
#
# HEIGHT sets the window's height in pixels (default 2400); the screenshot is of the window.
# Exit 0 with the PNG written; 2 on bad arguments; 3 when Chromium is not installed (Debian:
# apt install chromium); 1 when Chromium failed or wrote no picture.
set -eu

if [ $# -ne 2 ]; then
    echo "usage: $0 REPORT.html OUT.png" >&2
    exit 2
fi
html=$1
png=$2
if [ ! -f "$html" ]; then
    echo "$html: no such file" >&2
    exit 2
fi
bin=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$bin" ]; then
    echo "chromium is not installed (Debian: apt install chromium)" >&2
    exit 3
fi

# Chromium wants absolute paths for the page's URL and for the screenshot.
abs() {
    case $1 in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$(pwd)" "$1" ;;
    esac
}
page=$(abs "$html")
shot=$(abs "$png")
rm -f "$shot"

# A profile of its own, so that a running browser of the user is neither used nor disturbed.
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT

# --no-sandbox: Chromium's sandbox needs user namespaces, which containers and root lack.
if ! "$bin" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
    --window-size="1280,${HEIGHT:-2400}" --screenshot="$shot" "file://$page" >"$profile/log" 2>&1; then
    cat "$profile/log" >&2
    echo "chromium could not render $html" >&2
    exit 1
fi
if [ ! -s "$shot" ]; then
    cat "$profile/log" >&2
    echo "chromium wrote no screenshot of $html" >&2
    exit 1
fi
echo "wrote $png ($(wc -c <"$shot") bytes) from $html"
