#!/bin/sh
# Fills asterisk-conf/ placeholders from the environment, as scripts/devstack.py install_conf does.
set -eu
: "${ARI_PASSWORD:?set ARI_PASSWORD (no default password is shipped)}"
: "${DEMO_SIP_PASSWORD:?set DEMO_SIP_PASSWORD}"
inst=/var/lib/callctl-instances/docker
mkdir -p "$inst/etc" "$inst/db" "$inst/spool/recording" "$inst/run" "$inst/log" "$inst/cache"
for f in /opt/callctl/asterisk-conf/*.conf; do
  sed -e "s|@ETC_DIR@|$inst/etc|g" -e "s|@STATE_DIR@|$inst|g" -e "s|@SYSTEM_NAME@|callctl-docker|g" \
      -e "s|@HTTP_PORT@|${HTTP_PORT:-8088}|g" -e "s|@SIP_PORT@|${SIP_PORT:-5060}|g" \
      -e "s|@SIP_BIND@|${SIP_BIND:-0.0.0.0}|g" -e "s|@RTP_START@|${RTP_START:-20000}|g" \
      -e "s|@RTP_END@|${RTP_END:-22000}|g" -e "s|@ARI_USER@|${ARI_USER:-callctl}|g" \
      -e "s|@ARI_PASSWORD@|$ARI_PASSWORD|g" -e "s|@ARI_APP@|${ARI_APP:-callctl}|g" \
      -e "s|@DEMO_SIP_PASSWORD@|$DEMO_SIP_PASSWORD|g" -e "s|@TRUNK_PORT@|${TRUNK_PORT:-5070}|g" -e "s|@EMERGENCY_PORT@|${EMERGENCY_PORT:-5071}|g" \
      -e "s|@DB_HOST@|${DB_HOST:-postgres}|g" \
      -e "s|@DB_PORT@|${DB_PORT:-5432}|g" \
      -e "s|@DB_NAME@|${DB_NAME:-callctl}|g" \
      -e "s|@DB_USER@|${DB_USER:-callctl}|g" \
      -e "s|@DB_PASSWORD@|${DB_PASSWORD:-}|g" -e "s|@CEL_ENABLED@|${CEL_ENABLED:-yes}|g" \
      -e "s|@AMI_ENABLED@|$([ -n "${AMI_PASSWORD:-}" ] && echo yes || echo no)|g" -e "s|@AMI_PORT@|${AMI_PORT:-5038}|g" \
      -e "s|@AMI_USER@|${AMI_USER:-callctl}|g" -e "s|@AMI_PASSWORD@|${AMI_PASSWORD:-}|g" "$f" > "$inst/etc/$(basename "$f")"
done
# SIP over TLS (docs/security.md): the operator's certificate and key, mounted, named by TLS_CERT and TLS_KEY.
if [ -n "${TLS_CERT:-}" ]; then
  : "${TLS_KEY:?set TLS_KEY with TLS_CERT}"
  printf '[transport-tls]\ntype = transport\nprotocol = tls\nbind = %s:%s\ncert_file = %s\npriv_key_file = %s\nmethod = tlsv1_2\n' \
    "${SIP_BIND:-0.0.0.0}" "${TLS_PORT:-5061}" "$TLS_CERT" "$TLS_KEY" > "$inst/etc/pjsip_tls.conf"
fi
# http.conf binds ARI to loopback: in compose, callctl shares this container's network namespace.
exec /usr/sbin/asterisk -f -n -C "$inst/etc/asterisk.conf"
