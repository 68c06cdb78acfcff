#!/usr/bin/env bash
# Builds (once) a Debian sid root holding Asterisk 22, cached outside the checkout.
# Debian 12 has no asterisk package; sid has 22.x (see docs/operations.md).
# The same package list is installed by docker/Dockerfile.asterisk: keep them in step.
# Usage: scripts/asterisk-root.sh [DIR]   (default $CALLCTL_ASTERISK_ROOT or /var/cache/callctl/asterisk-root)
set -euo pipefail
root=${1:-${CALLCTL_ASTERISK_ROOT:-/var/cache/callctl/asterisk-root}}
packages=asterisk,asterisk-modules,asterisk-core-sounds-en-gsm,asterisk-core-sounds-fr-gsm,asterisk-moh-opsound-gsm,ca-certificates

if [ -x "$root/usr/sbin/asterisk" ] && [ -f "$root/.callctl-ready" ]; then
  echo "asterisk-root: reusing cached root $root ($(cat "$root/.callctl-ready"))"
  exit 0
fi
if command -v asterisk >/dev/null 2>&1 && [ "${CALLCTL_USE_SYSTEM_ASTERISK:-0}" = 1 ]; then
  echo "asterisk-root: using the system asterisk"; exit 0
fi

command -v debootstrap >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap; }

# The mirror is the machine's own: never a host written into the repository.
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $2 !~ /^\[/ {print $2; exit} $1=="deb" && $2 ~ /^\[/ {print $3; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || { echo "asterisk-root: no Debian mirror found in /etc/apt/sources.list*" >&2; exit 1; }
mirror=${mirror%-security}

tmp="$root.partial"
rm -rf "$tmp"
mkdir -p "$(dirname "$root")"
echo "asterisk-root: building Debian sid root with Asterisk in $root (about a minute)"
debootstrap --variant=minbase --include="$packages" sid "$tmp" "$mirror" >"$tmp.log" 2>&1 || {
  echo "asterisk-root: debootstrap failed, last lines of $tmp.log:" >&2; tail -20 "$tmp.log" >&2; exit 1; }
version=$(chroot "$tmp" asterisk -V 2>/dev/null || echo unknown)
echo "$version" > "$tmp/.callctl-ready"
rm -rf "$root"; mv "$tmp" "$root"; rm -f "$tmp.log"
echo "asterisk-root: ready: $version"
