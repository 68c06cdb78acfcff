#!/usr/bin/env bash
# Builds (once) a Debian sid root holding Asterisk 22, cached outside the checkout.
# Debian 12 has no asterisk package; sid has 22.x (see docs/operations.md).
# The same package list is installed by docker/Dockerfile.asterisk: keep them in step.
# Usage: scripts/asterisk-root.sh [DIR]   (default $CALLCTL_ASTERISK_ROOT or /var/cache/callctl/asterisk-root)
set -euo pipefail
root=${1:-${CALLCTL_ASTERISK_ROOT:-/var/cache/callctl/asterisk-root}}
packages=asterisk,asterisk-modules,asterisk-core-sounds-en-gsm,asterisk-core-sounds-fr-gsm,asterisk-moh-opsound-gsm,ca-certificates

# The chroot has no /etc/hosts of its own, so Asterisk asked the DNS server for this machine's name
# and then A.ROOT-SERVERS.NET on every call (acl.c ast_find_ourip: "Unable to lookup 'vm'"), and
# pjlib for the name's IPv6 address at start (checked with strace, docs/operations.md). Answered
# here from a minimal hosts file: the machine's name as the machine itself resolves it. Rewritten
# at every run (a cached root follows a renamed machine), atomically, only when it changes.
write_hosts() {
  local dir=$1 name addr want
  name=$(hostname 2>/dev/null || cat /etc/hostname 2>/dev/null || echo localhost)
  addr=$(timeout 5 getent ahostsv4 "$name" 2>/dev/null | awk 'NR==1 {print $1}' || true)
  [ -n "$addr" ] || addr=127.0.1.1
  want=$(printf '%s\n' "# written by scripts/asterisk-root.sh: names Asterisk resolves, answered without DNS" \
    "127.0.0.1	localhost" "::1	localhost ip6-localhost ip6-loopback" "$addr	$name" "::1	$name")
  if [ "$(cat "$dir/etc/hosts" 2>/dev/null)" != "$want" ]; then
    printf '%s\n' "$want" > "$dir/etc/hosts.callctl-tmp" && mv "$dir/etc/hosts.callctl-tmp" "$dir/etc/hosts"
  fi
}

if [ -x "$root/usr/sbin/asterisk" ] && [ -f "$root/.callctl-ready" ]; then
  write_hosts "$root"
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
write_hosts "$tmp"
version=$(chroot "$tmp" asterisk -V 2>/dev/null || echo unknown)
echo "$version" > "$tmp/.callctl-ready"
rm -rf "$root"; mv "$tmp" "$root"; rm -f "$tmp.log"
echo "asterisk-root: ready: $version"
