# Redis from Debian's package: install, start, probe.
# Sourced by deploy/local/stack.sh, which sets the versions, the layout and the ports.
# shellcheck shell=bash

# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------
redis_installed() { command -v redis-server >/dev/null && command -v redis-cli >/dev/null; }

redis_install() {
  redis_installed && return 0
  need_cmd apt-get "to install $REDIS_APT_PACKAGE (or install Redis yourself)"
  ((EUID == 0)) || die "redis-server is missing; install it with: sudo apt-get install -y $REDIS_APT_PACKAGE"
  local t0
  t0=$(now_us)
  log "redis: installing $REDIS_APT_PACKAGE with apt-get"
  # Try the existing package lists first; refresh them only when that fails (stale or empty lists).
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$REDIS_APT_PACKAGE" >"$LOG_DIR/redis-install.log" 2>&1 ||
    { apt-get update -q >>"$LOG_DIR/redis-install.log" 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$REDIS_APT_PACKAGE" >>"$LOG_DIR/redis-install.log" 2>&1; } ||
    die "redis: apt-get install $REDIS_APT_PACKAGE failed; see ${LOG_DIR#"$REPO_ROOT"/}/redis-install.log"
  redis_stop_system_service
  log "redis: installed $(redis-server --version | grep -o 'v=[0-9.]*') in $(since "$t0")"
}

# Debian's package starts its own redis on 6379 as a system service (unless policy-rc.d forbids it,
# as in containers). We run our own instance under .local/, so stop that service and keep it from
# coming back at boot; otherwise it would hold the port.
redis_stop_system_service() {
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    systemctl disable --now redis-server >/dev/null 2>&1 || true
  else
    service redis-server stop >/dev/null 2>&1 || true
    update-rc.d redis-server disable >/dev/null 2>&1 || true
  fi
  local pidf=/run/redis/redis-server.pid pid
  if [[ -f $pidf ]]; then
    pid=$(<"$pidf")
    if [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
  fi
}

redis_start() {
  start_bg redis redis-server "$SCRIPT_DIR/redis/redis.conf" --port "$REDIS_PORT" --dir "$REDIS_DATA"
}

redis_probe() { [[ $(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }
