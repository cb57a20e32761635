#!/usr/bin/env bash
# Make PostgreSQL (127.0.0.1:5432, trust auth for the tests) and Redis (127.0.0.1:6379)
# available: use them if running, start them if installed, install them if missing (as root;
# otherwise print the exact command to run).
set -euo pipefail

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 60); do listening "$1" && return 0; sleep 0.5; done
  echo "nothing listening on 127.0.0.1:$1 after 30 s" >&2; return 1
}
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else
    echo "run as root, then re-run this script:  sudo $*" >&2; exit 1
  fi
}
apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

postgres() {
  listening 5432 && return 0
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    echo "PostgreSQL missing: installing it from the system's packages"
    apt_install postgresql
  fi
  local version hba
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! grep -q "^host all all 127.0.0.1/32 trust" "$hba" 2>/dev/null; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  fi
  echo "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_port 5432
}

redis() {
  listening 6379 && return 0
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "Redis missing: installing it from the system's packages"
    apt_install redis-server
  fi
  echo "starting Redis"
  mkdir -p /tmp/omoi-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/omoi-redis --logfile /tmp/omoi-redis/redis.log
  wait_port 6379
}

postgres
redis
echo "PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 are up"
