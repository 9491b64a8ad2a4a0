#!/usr/bin/env bash
# Local infrastructure for Switchboard: Apache Kafka (KRaft, single node), FerretDB (MongoDB wire
# protocol on SQLite), Redis, and for traces Jaeger v2 (OTLP in, query API) and Zipkin (the trace
# UI), installed and run as plain processes under <repo>/.local/.
#
#   deploy/local/stack.sh up            install what is missing, start what is stopped, wait until ready
#   deploy/local/stack.sh down [--purge] stop everything (--purge also deletes .local/data)
#   deploy/local/stack.sh status        show each component (exit 3 when Kafka, FerretDB or Redis is stopped)
#
# The chat needs Kafka, FerretDB and Redis only; `up` waits for those. Jaeger and Zipkin start
# beside them without being waited for, and Jaeger, whose first build takes minutes, is built
# in the background (.local/logs/jaeger-build.log) and started when it is ready; the services
# export their spans once it is up. SWITCHBOARD_STACK_WAIT_TRACING=1 (set by `make test` and
# `make bench`, whose tests query Jaeger) builds Jaeger in the foreground and waits for both.
#
# Environment (all optional):
#   SWITCHBOARD_KAFKA_PORT (9092)  SWITCHBOARD_KAFKA_CONTROLLER_PORT (9093)
#   SWITCHBOARD_MONGO_PORT (27017) SWITCHBOARD_REDIS_PORT (6379)
#   SWITCHBOARD_OTLP_PORT (4317)   SWITCHBOARD_OTLP_HTTP_PORT (4318)  SWITCHBOARD_JAEGER_UI_PORT (16686)
#   SWITCHBOARD_JAEGER_QUERY_GRPC_PORT (16685)  SWITCHBOARD_JAEGER_HEALTH_PORT (13133)  SWITCHBOARD_ZIPKIN_PORT (9411)
#   SWITCHBOARD_STACK_WAIT_TRACING (0)  SWITCHBOARD_JAEGER_START_TIMEOUT_S (30)  SWITCHBOARD_ZIPKIN_START_TIMEOUT_S (90)
#   SWITCHBOARD_KAFKA_START_TIMEOUT_S (90)  SWITCHBOARD_FERRETDB_START_TIMEOUT_S (30)
#   SWITCHBOARD_REDIS_START_TIMEOUT_S (15)  SWITCHBOARD_STOP_TIMEOUT_S (30)   [seconds]
#   SWITCHBOARD_LOCK_TIMEOUT_S (900)  SWITCHBOARD_FERRETDB_LOG_LEVEL (warn)  JAVA_HOME
#   SWITCHBOARD_FERRETDB_PPROF_ADDR (empty: off; e.g. 127.0.0.1:6060 for `go tool pprof`)
set -euo pipefail

# ---------------------------------------------------------------------------------------------
# Pinned versions: the one place to change them.
# ---------------------------------------------------------------------------------------------
KAFKA_VERSION=4.1.1         # passed to deploy/local/kafka/pom.xml as -Dkafka.version
LOG4J_VERSION=2.24.3        # passed to deploy/local/kafka/pom.xml as -Dlog4j.version
FERRETDB_VERSION=v1.24.2    # must equal the require in deploy/local/ferretdb/go.mod (checked)
JAEGER_VERSION=v1.76.0      # Jaeger v2's Go module tag; must equal deploy/local/jaeger/go.mod (checked)
ZIPKIN_VERSION=3.6.1        # io.zipkin:zipkin-server's executable jar, from Maven Central
REDIS_APT_PACKAGE=redis-server  # Debian's current build; apt versions are not pinnable for long
JAVA_MIN_MAJOR=17

# ---------------------------------------------------------------------------------------------
# Layout and settings
# ---------------------------------------------------------------------------------------------
SCRIPT_DIR="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"

LOCAL_DIR="$REPO_ROOT/.local"
BIN_DIR="$LOCAL_DIR/bin"
KAFKA_HOME="$LOCAL_DIR/kafka"
KAFKA_LIBS="$KAFKA_HOME/libs"
DATA_DIR="$LOCAL_DIR/data"
LOG_DIR="$LOCAL_DIR/logs"
RUN_DIR="$LOCAL_DIR/run"

HOST=127.0.0.1
KAFKA_PORT="${SWITCHBOARD_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${SWITCHBOARD_KAFKA_CONTROLLER_PORT:-9093}"
MONGO_PORT="${SWITCHBOARD_MONGO_PORT:-27017}"
REDIS_PORT="${SWITCHBOARD_REDIS_PORT:-6379}"
OTLP_PORT="${SWITCHBOARD_OTLP_PORT:-4317}"
OTLP_HTTP_PORT="${SWITCHBOARD_OTLP_HTTP_PORT:-4318}"
JAEGER_UI_PORT="${SWITCHBOARD_JAEGER_UI_PORT:-16686}"
JAEGER_QUERY_GRPC_PORT="${SWITCHBOARD_JAEGER_QUERY_GRPC_PORT:-16685}"
JAEGER_HEALTH_PORT="${SWITCHBOARD_JAEGER_HEALTH_PORT:-13133}"
ZIPKIN_PORT="${SWITCHBOARD_ZIPKIN_PORT:-9411}"
WAIT_TRACING="${SWITCHBOARD_STACK_WAIT_TRACING:-0}"

KAFKA_START_TIMEOUT="${SWITCHBOARD_KAFKA_START_TIMEOUT_S:-90}"
FERRETDB_START_TIMEOUT="${SWITCHBOARD_FERRETDB_START_TIMEOUT_S:-30}"
REDIS_START_TIMEOUT="${SWITCHBOARD_REDIS_START_TIMEOUT_S:-15}"
JAEGER_START_TIMEOUT="${SWITCHBOARD_JAEGER_START_TIMEOUT_S:-30}"
ZIPKIN_START_TIMEOUT="${SWITCHBOARD_ZIPKIN_START_TIMEOUT_S:-90}"
STOP_TIMEOUT="${SWITCHBOARD_STOP_TIMEOUT_S:-30}"
LOCK_TIMEOUT="${SWITCHBOARD_LOCK_TIMEOUT_S:-900}"
FERRETDB_LOG_LEVEL="${SWITCHBOARD_FERRETDB_LOG_LEVEL:-warn}"
FERRETDB_PPROF_ADDR="${SWITCHBOARD_FERRETDB_PPROF_ADDR:-}"

JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
KAFKA_LOG4J="$SCRIPT_DIR/kafka/log4j2.properties"
KAFKA_CONFIG="$KAFKA_HOME/server.properties"
KAFKA_ADMIN_CONFIG="$KAFKA_HOME/admin.properties"
KAFKA_DATA="$DATA_DIR/kafka"
FERRETDB_SRC="$SCRIPT_DIR/ferretdb"
FERRETDB_BIN="$BIN_DIR/ferretdb"
FERRETDB_DATA="$DATA_DIR/ferretdb"
REDIS_DATA="$DATA_DIR/redis"
JAEGER_SRC="$SCRIPT_DIR/jaeger"
JAEGER_BIN="$BIN_DIR/jaeger"
JAEGER_BUILD_PID="$RUN_DIR/jaeger-build.pid"
ZIPKIN_HOME="$LOCAL_DIR/zipkin"
ZIPKIN_JAR="$ZIPKIN_HOME/zipkin-server-$ZIPKIN_VERSION-exec.jar"

COMPONENTS=(kafka ferretdb redis jaeger zipkin)
# What the chat needs: `up` waits for these, and `status` fails when one is stopped.
REQUIRED=(kafka ferretdb redis)

# ---------------------------------------------------------------------------------------------
# The parts: shared helpers, then one file per server, next to its configuration.
# ---------------------------------------------------------------------------------------------
for part in lib/helpers kafka/server ferretdb/server redis/server jaeger/server zipkin/server; do
  # shellcheck source=/dev/null
  source "$SCRIPT_DIR/$part.sh"
done

# ---------------------------------------------------------------------------------------------
# Per-component tables
# ---------------------------------------------------------------------------------------------
address() {
  case $1 in
    kafka) echo "$HOST:$KAFKA_PORT (controller $HOST:$KAFKA_CONTROLLER_PORT)" ;;
    ferretdb) echo "mongodb://$HOST:$MONGO_PORT/" ;;
    redis) echo "redis://$HOST:$REDIS_PORT" ;;
    jaeger) echo "http://$HOST:$JAEGER_UI_PORT (OTLP $HOST:$OTLP_PORT)" ;;
    zipkin) echo "http://$HOST:$ZIPKIN_PORT (trace UI)" ;;
  esac
}

ports_env() {
  case $1 in
    kafka) echo "KAFKA_PORT KAFKA_CONTROLLER_PORT" ;;
    ferretdb) echo "MONGO_PORT" ;;
    redis) echo "REDIS_PORT" ;;
    jaeger) echo "OTLP_PORT OTLP_HTTP_PORT JAEGER_UI_PORT JAEGER_QUERY_GRPC_PORT JAEGER_HEALTH_PORT" ;;
    zipkin) echo "ZIPKIN_PORT" ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------------------------
cmd_up() {
  local t_all c pid t0 pending=() background_jaeger=0
  local -A installing=()
  t_all=$(now_us)
  make_dirs
  take_lock

  # 1. Preflight: what is stopped, are its ports free, are its tools there. Nothing starts yet.
  for c in "${COMPONENTS[@]}"; do
    if pid=$(running_pid "$c"); then
      [[ $(started_address "$c") == "$(address "$c")" ]] ||
        die "$c (pid $pid) runs at $(started_address "$c"), not at $(address "$c") as now configured; run 'stack.sh down' first"
      continue
    fi
    # shellcheck disable=SC2046
    check_ports_free "$c" $(ports_env "$c")
    pending+=("$c")
  done
  check_java   # needed even when Kafka runs: the topic tool runs on it
  for c in "${pending[@]}"; do
    case $c in
      kafka) kafka_installed || need_cmd mvn "to download the Kafka jars from Maven Central" ;;
      ferretdb) ferretdb_installed || need_cmd go "to build FerretDB (Go 1.24+, https://go.dev/dl)" ;;
      redis) redis_installed || need_cmd apt-get "to install $REDIS_APT_PACKAGE" ;;
      jaeger) jaeger_installed || need_cmd go "to build Jaeger (Go 1.24+)"; need_cmd curl "to check Jaeger" ;;
      zipkin) zipkin_installed || need_cmd mvn "to download Zipkin from Maven Central"; need_cmd curl "to check Zipkin" ;;
    esac
  done

  # 2. Install what is missing (only for components about to start: never swap files under a
  #    running server), all at once: downloads and builds overlap. Jaeger's build is left to
  #    the background unless SWITCHBOARD_STACK_WAIT_TRACING=1. A running component with an
  #    outdated install keeps running; say so.
  if [[ " ${pending[*]} " == *" jaeger "* ]] && ! jaeger_installed; then
    if ((WAIT_TRACING)) && pid=$(jaeger_build_pid); then
      log "jaeger: waiting for the background build (pid $pid) to finish"
      while pid_alive "$pid"; do sleep 1; done
    fi
    jaeger_installed || ((WAIT_TRACING)) || background_jaeger=1
  fi
  for c in "${COMPONENTS[@]}"; do
    if [[ " ${pending[*]} " == *" $c "* ]]; then
      [[ $c == jaeger ]] && ((background_jaeger)) && continue
      "${c}_install" &
      installing[$c]=$!
    elif ! "${c}_installed"; then
      warn "$c runs an older install than pinned; run 'stack.sh down' then 'up' to upgrade"
    fi
  done
  for c in "${!installing[@]}"; do
    wait "${installing[$c]}" || die "$c: installing failed (see above)"
  done

  # 3. Start everything that is stopped, then wait for what the chat needs (the servers boot
  #    in parallel).
  for c in "${pending[@]}"; do
    if [[ $c == jaeger ]] && ((background_jaeger)); then
      jaeger_build_in_background
      continue
    fi
    "${c}_start"
    log "$c: started (pid $(<"$(pid_file "$c")"))"
  done

  t0=$(now_us)
  wait_ready redis "$REDIS_START_TIMEOUT" redis_probe
  log "redis: ready at $(address redis) ($(since "$t0"))"

  wait_ready ferretdb "$FERRETDB_START_TIMEOUT" ferretdb_probe
  log "ferretdb: ready at $(address ferretdb) ($(since "$t0"), checked by $FERRETDB_PROBE)"

  wait_ready kafka "$KAFKA_START_TIMEOUT" kafka_probe
  kafka_ensure_topics

  if ((WAIT_TRACING)); then
    wait_ready jaeger "$JAEGER_START_TIMEOUT" jaeger_probe
    log "jaeger: ready at $(address jaeger) ($(since "$t0"))"
    wait_ready zipkin "$ZIPKIN_START_TIMEOUT" zipkin_probe
    log "zipkin: ready at $(address zipkin) ($(since "$t0"))"
  else
    for c in jaeger zipkin; do
      if running_pid "$c" >/dev/null && ! "${c}_probe"; then
        log "$c: still starting (not waited for); $(address "$c")"
      fi
    done
  fi

  log "up: ready in $(since "$t_all")${pending[*]:+ (started: ${pending[*]})}"
}

cmd_down() {
  local purge=0 c
  case ${1:-} in
    "") ;;
    --purge) purge=1 ;;
    *) die "down: unknown option '$1' (only --purge)" ;;
  esac
  [[ -d $RUN_DIR ]] || mkdir -p "$RUN_DIR"
  take_lock
  for c in zipkin jaeger kafka ferretdb redis; do stop_component "$c"; done
  if pid=$(jaeger_build_pid); then
    log "jaeger: the background build (pid $pid) goes on; it will not start Jaeger while the stack is down"
  fi
  if ((purge)); then
    rm -rf "$DATA_DIR"
    log "purged ${DATA_DIR#"$REPO_ROOT"/}"
  fi
}

cmd_status() {
  local c pid rc=0
  for c in "${COMPONENTS[@]}"; do
    if pid=$(running_pid "$c"); then
      printf '%-9s %-22s %s\n' "$c" "running (pid $pid)" "$(started_address "$c")"
    elif [[ $c == jaeger ]] && pid=$(jaeger_build_pid); then
      printf '%-9s %-22s %s\n' "$c" "building (pid $pid)" "${LOG_DIR#"$REPO_ROOT"/}/jaeger-build.log"
    else
      printf '%-9s %-22s %s\n' "$c" "stopped" "$(address "$c")"
      if [[ " ${REQUIRED[*]} " == *" $c "* ]]; then rc=3; fi
    fi
  done
  return "$rc"
}

usage() {
  # The header comment of this file, without the shebang and the '# ' prefixes.
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'
}

main() {
  validate_settings
  local cmd=${1:-}
  shift || true
  case $cmd in
    up) (($# == 0)) || die "up takes no arguments"; cmd_up ;;
    down) cmd_down "$@" ;;
    status) (($# == 0)) || die "status takes no arguments"; cmd_status ;;
    _jaeger-background) make_dirs; cmd_jaeger_background ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
