#!/usr/bin/env bash
# Loads the demo account of `make run` (.ci/local-demo.sql) into $JAMBONES_MYSQL_DATABASE, which
# must already have the schema, and prints its credentials. The client's password is encrypted
# here with ENCRYPTION_SECRET (else JWT_SECRET), AES-256-CBC, or AES-256-CTR with LEGACY_CRYPTO,
# as the jambonz api-server stores it, so the daemon started with the same variables decrypts it.
# Safe to run again: the rows are updated in place (a new IV each time).
# Usage: .ci/local-demo.sh [SIP-ADDRESS]; with the address (host:port of drachtio's SIP side) it
# also prints the sipp command line that registers the demo user there (the README's quick start).
# Used by .ci/run-local.sh and by tests/quickstart.rs (on a scratch database).
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_REALM=demo.sip.test   # .test never resolves (RFC 6761): nothing needs DNS
DEMO_USER=alice
DEMO_PASSWORD=alice-demo-pw

secret=${ENCRYPTION_SECRET:-${JWT_SECRET:-}}
if [ -z "$secret" ]; then
  echo "local-demo: ENCRYPTION_SECRET (or JWT_SECRET) must be set" >&2
  exit 1
fi
hex() { od -An -v -tx1 | tr -d ' \n'; }
# Key: the first 32 characters of base64(SHA-256(secret)), used as 32 raw bytes (spec 4.4).
key=$(printf '%s' "$secret" | openssl dgst -sha256 -binary | base64 | cut -c1-32 | tr -d '\n' | hex)
iv=$(openssl rand -hex 16)
cipher=aes-256-cbc
[ -n "${LEGACY_CRYPTO:-}" ] && cipher=aes-256-ctr
content=$(printf '%s' "$DEMO_PASSWORD" | openssl enc "-$cipher" -K "$key" -iv "$iv" | hex)

{
  printf "SET @demo_realm = '%s', @demo_user = '%s', @demo_password = '%s';\n" \
    "$DEMO_REALM" "$DEMO_USER" "{\"iv\":\"$iv\",\"content\":\"$content\"}"
  cat .ci/local-demo.sql
} | mysql -h"${JAMBONES_MYSQL_HOST:-127.0.0.1}" -P"${JAMBONES_MYSQL_PORT:-3306}" \
    -u"$JAMBONES_MYSQL_USER" -p"$JAMBONES_MYSQL_PASSWORD" "$JAMBONES_MYSQL_DATABASE"

echo "demo account in database $JAMBONES_MYSQL_DATABASE (clients table, no webhook):"
echo "  realm:    $DEMO_REALM"
echo "  user:     $DEMO_USER"
echo "  password: $DEMO_PASSWORD"
echo "  address:  sip:$DEMO_USER@$DEMO_REALM"
if [ -n "${1:-}" ]; then
  echo "  send to:  $1 (the phone's outbound proxy / registrar address)"
  echo "  register: sipp $1 -sf tests/scenarios/register_user.xml -m 1 -s $DEMO_USER -ap $DEMO_PASSWORD -key realm $DEMO_REALM"
fi
