#!/usr/bin/env bash
# Make headless Chromium available for the report's browser test (tests/test_report_browser.py).
# Installs the Debian package `chromium` with apt only when no chromium binary is on PATH.
# Exit 0: a binary is available (its path printed). Exit 3: it cannot be installed here (no apt-get,
# neither root nor passwordless sudo, or apt failed / timed out), with the reason on stderr.
# Bounded: each apt step is limited to CHROMIUM_APT_TIMEOUT_S seconds (default 600).
set -uo pipefail
for b in chromium chromium-browser; do
  if p=$(command -v "$b"); then echo "$p"; exit 0; fi
done
limit=${CHROMIUM_APT_TIMEOUT_S:-600}
if ! command -v apt-get >/dev/null; then
  echo "ensure_chromium: no chromium on PATH and no apt-get to install the Debian package 'chromium'" >&2; exit 3
fi
if [ "$(id -u)" -eq 0 ]; then sudo=(); elif sudo -n true 2>/dev/null; then sudo=(sudo -n); else
  echo "ensure_chromium: no chromium on PATH; installing it needs root or passwordless sudo" >&2; exit 3
fi
export DEBIAN_FRONTEND=noninteractive
install() { timeout "$limit" "${sudo[@]}" apt-get install -y -q --no-install-recommends chromium >&2; }
if ! install; then
  # the package lists may be stale or absent: refresh once, then try again
  timeout "$limit" "${sudo[@]}" apt-get update -q >&2 && install || {
    echo "ensure_chromium: apt-get could not install 'chromium' (offline, no such package, or over ${limit}s)" >&2
    exit 3
  }
fi
for b in chromium chromium-browser; do
  if p=$(command -v "$b"); then echo "$p"; exit 0; fi
done
echo "ensure_chromium: apt-get finished but no chromium binary is on PATH" >&2
exit 3
