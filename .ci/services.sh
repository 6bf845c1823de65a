#!/usr/bin/env bash
# Makes sure what the tests and `make run` need is installed and running:
# sipp (sip-tester), MariaDB and Redis, plus a MariaDB account for the tests.
# Safe to run again and again; installs only what is missing. Uses sudo when not root.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "services: not root and no sudo; checking only" >&2; SUDO="none"; fi
fi
run_root() { if [ "$SUDO" = none ]; then return 1; fi; $SUDO "$@"; }

need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
# The TLS tests make a throw-away CA and certificates with the openssl command.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
for extra in influxdb ${SBC_EXTRA_PACKAGES:-}; do
  dpkg -s "$extra" >/dev/null 2>&1 || need+=("$extra")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "services: installing ${need[*]}"
  run_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  run_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

wait_for() { # name, command...
  local name=$1; shift
  for _ in $(seq 1 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "services: $name did not come up" >&2; return 1
}

# Redis on 127.0.0.1:6379, keeping nothing on disk.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "services: starting redis"
  run_root mkdir -p /var/lib/redis /var/log/redis
  run_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for redis redis-cli -h 127.0.0.1 -p 6379 ping

# MariaDB on 127.0.0.1:3306.
if ! mysqladmin -h127.0.0.1 -uroot ping >/dev/null 2>&1 && ! mysqladmin ping >/dev/null 2>&1; then
  echo "services: starting mariadb"
  run_root mkdir -p /run/mysqld
  run_root chown mysql:mysql /run/mysqld 2>/dev/null || true
  run_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql \
    || run_root service mariadb start
fi
wait_for mariadb sh -c 'mysqladmin -h127.0.0.1 -uroot ping || mysqladmin ping'

# The account tests and `make run` use: may create databases named sbc_*.
sql="CREATE USER IF NOT EXISTS 'sbc_test'@'localhost' IDENTIFIED BY 'sbc_test';
CREATE USER IF NOT EXISTS 'sbc_test'@'127.0.0.1' IDENTIFIED BY 'sbc_test';
GRANT ALL PRIVILEGES ON \`sbc\\_%\`.* TO 'sbc_test'@'localhost';
GRANT ALL PRIVILEGES ON \`sbc\\_%\`.* TO 'sbc_test'@'127.0.0.1';
FLUSH PRIVILEGES;"
if ! mysql -h127.0.0.1 -usbc_test -psbc_test -e 'SELECT 1' >/dev/null 2>&1; then
  echo "services: creating the MariaDB account sbc_test"
  mysql -h127.0.0.1 -uroot -e "$sql" 2>/dev/null || run_root mysql -uroot -e "$sql"
fi
mysql -h127.0.0.1 -usbc_test -psbc_test -e 'SELECT 1' >/dev/null
echo "services: sipp $(command -v sipp), redis and mariadb ready"
