#!/usr/bin/env bash
# Installs the Debian packages callctl's dev stack and tests need, only those missing.
# (Asterisk itself comes from the cached sid root: scripts/asterisk-root.sh.)
set -euo pipefail
need=()
command -v sipp >/dev/null || need+=(sip-tester)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
command -v kamailio >/dev/null || need+=(kamailio)  # the SIP front door of a cluster (make cluster, issue 18)
command -v tmux >/dev/null || need+=(tmux)  # tests drive `callctl calls --watch` in tmux
command -v baresip >/dev/null || need+=(baresip-core)  # the TLS + SRTP softphone of the tests (issue 20)
command -v openssl >/dev/null || need+=(openssl)  # make run's self-signed TLS certificate
command -v dot >/dev/null || need+=(graphviz)  # callctl dialplan graph renders SVG/PNG with dot
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
  # Debian enables a Kamailio service on 5060 with its sample configuration: callctl runs its own
  # Kamailio in the foreground (scripts/cluster.py), so the package's service stays off.
  if [[ " ${need[*]} " == *" kamailio "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now kamailio >/dev/null 2>&1 || true
  fi
fi

# Prometheus and promtool for the ops/ tests, unpacked from Debian's package into a cache (like the
# Asterisk root): installing the package would enable a Prometheus service on the machine.
PROM_DIR=${CALLCTL_PROMETHEUS_DIR:-/var/cache/callctl/prometheus}
if [ ! -x "$PROM_DIR/usr/bin/promtool" ]; then
  echo "system-deps: unpacking Debian's prometheus into $PROM_DIR"
  tmp=$(mktemp -d)
  chmod 755 "$tmp"
  (cd "$tmp" && { apt-get download -q prometheus >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get download -q prometheus >/dev/null 2>&1; }; })
  rm -rf "$PROM_DIR.partial"
  dpkg-deb -x "$tmp"/prometheus_*.deb "$PROM_DIR.partial"
  mv "$PROM_DIR.partial" "$PROM_DIR"
  rm -rf "$tmp"
fi
