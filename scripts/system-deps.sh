#!/usr/bin/env bash
# Installs the Debian packages callctl's dev stack and tests need, only those missing.
# (Asterisk itself comes from the cached sid root: scripts/asterisk-root.sh.)
set -euo pipefail
need=()
command -v sipp >/dev/null || need+=(sip-tester)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
command -v python3 >/dev/null || need+=(python3)
# Real-browser tests of the conference Online Space (selenium drives Debian's headless Chromium).
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql-15)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "system-deps: installing ${need[*]}"
  if [ "$(id -u)" != 0 ]; then echo "system-deps: run as root (or install: ${need[*]})" >&2; exit 1; fi
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
