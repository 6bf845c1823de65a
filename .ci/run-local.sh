#!/usr/bin/env bash
# `make run`: the daemon in the foreground on local defaults. Every variable below can be
# overridden from the environment. Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}

export DRACHTIO_HOST=${DRACHTIO_HOST:-127.0.0.1}
export DRACHTIO_PORT=${DRACHTIO_PORT:-9022}
export DRACHTIO_SECRET=${DRACHTIO_SECRET:-cymru}
export JAMBONES_MYSQL_HOST=${JAMBONES_MYSQL_HOST:-127.0.0.1}
export JAMBONES_MYSQL_USER=${JAMBONES_MYSQL_USER:-sbc_test}
export JAMBONES_MYSQL_PASSWORD=${JAMBONES_MYSQL_PASSWORD:-sbc_test}
export JAMBONES_MYSQL_DATABASE=${JAMBONES_MYSQL_DATABASE:-sbc_local}
export JAMBONES_REDIS_HOST=${JAMBONES_REDIS_HOST:-127.0.0.1}
export JAMBONES_TIME_SERIES_HOST=${JAMBONES_TIME_SERIES_HOST:-127.0.0.1}
export ENCRYPTION_SECRET=${ENCRYPTION_SECRET:-local-development-secret}
export SBC_SOCKET_PATH=${SBC_SOCKET_PATH:-/tmp/sbc-sip-sidecar.sock}
export JAMBONES_LOGLEVEL=${JAMBONES_LOGLEVEL:-info}
# The drachtio double's SIP address (used only when no drachtio-server answers).
DOUBLE_SIP_ADDRESS=${DOUBLE_SIP_ADDRESS:-127.0.0.1:5060}

mysql -h"$JAMBONES_MYSQL_HOST" -u"$JAMBONES_MYSQL_USER" -p"$JAMBONES_MYSQL_PASSWORD" \
  -e "CREATE DATABASE IF NOT EXISTS \`$JAMBONES_MYSQL_DATABASE\`"
mysql -h"$JAMBONES_MYSQL_HOST" -u"$JAMBONES_MYSQL_USER" -p"$JAMBONES_MYSQL_PASSWORD" \
  "$JAMBONES_MYSQL_DATABASE" < src/store/schema.sql

double_pid=""
cleanup() { [ -n "$double_pid" ] && kill "$double_pid" 2>/dev/null || true; }
trap cleanup EXIT INT TERM
sip="<the SIP address of your drachtio-server>"
if ! (exec 3<>"/dev/tcp/$DRACHTIO_HOST/$DRACHTIO_PORT") 2>/dev/null; then
  echo "run: no drachtio-server on $DRACHTIO_HOST:$DRACHTIO_PORT; starting the drachtio double (SIP on $DOUBLE_SIP_ADDRESS)"
  "$BIN/drachtio-double" --admin "$DRACHTIO_HOST:$DRACHTIO_PORT" --sip "$DOUBLE_SIP_ADDRESS" --secret "$DRACHTIO_SECRET" &
  double_pid=$!
  sip=$DOUBLE_SIP_ADDRESS
  sleep 0.5
fi

# The demo account (local database only) and how to register it; see the README's quick start.
echo "run: ----------------------------------------------------------------------------"
bash .ci/local-demo.sh "$sip" | sed 's/^/run: /'
echo "run:   then:    $BIN/sbcctl --socket $SBC_SOCKET_PATH status"
echo "run: ----------------------------------------------------------------------------"
"$BIN/sbc-sidecar" --foreground --log stderr
