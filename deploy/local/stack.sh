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
# Small helpers
# ---------------------------------------------------------------------------------------------
log() { printf '[stack] %s\n' "$*"; }
warn() { printf '[stack] warning: %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

# Microseconds since the epoch; strips the locale's decimal separator from EPOCHREALTIME.
now_us() { local t="${EPOCHREALTIME//[!0-9]/}"; echo "$t"; }
# Seconds (one decimal) elapsed since a now_us value.
since() { local ms=$((($(now_us) - $1) / 1000)); printf '%d.%ds' $((ms / 1000)) $((ms % 1000 / 100)); }

# Runs "$2..." (a command or function), saying every PROGRESS_EVERY seconds that step $1 is still
# running, so that a long download or build does not look like a hang. Returns its exit code.
PROGRESS_EVERY=10
with_progress() {
  local label=$1 pid t0=$SECONDS next
  shift
  "$@" &
  pid=$!
  next=$((SECONDS + PROGRESS_EVERY))
  while kill -0 "$pid" 2>/dev/null; do
    sleep 0.5
    if ((SECONDS >= next)); then
      log "$label: still running ($((SECONDS - t0))s)"
      next=$((SECONDS + PROGRESS_EVERY))
    fi
  done
  wait "$pid"
}

validate_settings() {
  local v
  for v in KAFKA_PORT KAFKA_CONTROLLER_PORT MONGO_PORT REDIS_PORT OTLP_PORT OTLP_HTTP_PORT JAEGER_UI_PORT \
    JAEGER_QUERY_GRPC_PORT JAEGER_HEALTH_PORT ZIPKIN_PORT; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]] || ((10#${!v} < 1 || 10#${!v} > 65535)); then die "SWITCHBOARD_$v='${!v}' is not a port number"; fi
  done
  for v in KAFKA_START_TIMEOUT FERRETDB_START_TIMEOUT REDIS_START_TIMEOUT JAEGER_START_TIMEOUT \
    ZIPKIN_START_TIMEOUT STOP_TIMEOUT LOCK_TIMEOUT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "SWITCHBOARD_${v}_S='${!v}' must be a whole number of seconds"
  done
  [[ $WAIT_TRACING == [01] ]] || die "SWITCHBOARD_STACK_WAIT_TRACING='$WAIT_TRACING' must be 0 or 1"
  # Normalize ("090" would be octal in shell arithmetic).
  for v in KAFKA_PORT KAFKA_CONTROLLER_PORT MONGO_PORT REDIS_PORT \
    KAFKA_START_TIMEOUT FERRETDB_START_TIMEOUT REDIS_START_TIMEOUT STOP_TIMEOUT LOCK_TIMEOUT; do
    printf -v "$v" '%d' "$((10#${!v}))"
  done
  ((KAFKA_PORT != KAFKA_CONTROLLER_PORT)) || die "Kafka's broker and controller ports must differ"
}

make_dirs() {
  mkdir -p "$BIN_DIR" "$KAFKA_HOME" "$KAFKA_DATA" "$FERRETDB_DATA" "$REDIS_DATA" "$LOG_DIR" "$RUN_DIR" "$ZIPKIN_HOME"
}

# Serialize up/down: two concurrent `up`s (e.g. parallel make targets) would start everything twice.
take_lock() {
  command -v flock >/dev/null || return 0
  exec 9>"$RUN_DIR/stack.lock"
  flock -n 9 && return 0
  log "another stack.sh is running; waiting for it (up to ${LOCK_TIMEOUT}s)"
  flock -w "$LOCK_TIMEOUT" 9 || die "timed out waiting for $RUN_DIR/stack.lock"
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# True when any process listens on port $1 (any address: 0.0.0.0:$1 blocks our bind too).
port_in_use() {
  if command -v ss >/dev/null; then
    [[ -n $(ss -Htln "sport = :$1" 2>/dev/null) ]] && return 0
  fi
  port_open "$1"
}

# "pid 123 (cmd args)" of whoever listens on port $1, when ss can tell (it needs root for other users).
port_owner() {
  local pids pid out=""
  command -v ss >/dev/null || { echo "an unknown process"; return; }
  pids=$(ss -Htlnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u || true)
  for pid in $pids; do
    out+="${out:+, }pid $pid ($(ps -ww -o args= -p "$pid" 2>/dev/null | cut -c1-100))"
  done
  echo "${out:-an unknown process}"
}

# A zombie still answers kill -0, so look at the process state instead.
pid_alive() {
  local stat
  stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ -n $stat && $stat != Z* ]]
}

pid_file() { echo "$RUN_DIR/$1.pid"; }

# What the command line of our process for component $1 contains; guards against pid reuse.
process_marker() {
  case $1 in
    kafka) echo "kafka.Kafka" ;;
    ferretdb) echo "$FERRETDB_BIN" ;;
    redis) echo "redis-server" ;;
    jaeger) echo "$JAEGER_BIN" ;;
    zipkin) echo "$ZIPKIN_JAR" ;;
  esac
}

# Prints the pid of component $1 when it runs; otherwise removes a stale pid file and fails.
running_pid() {
  local file pid
  file=$(pid_file "$1")
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  if [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" &&
    [[ $(ps -ww -o args= -p "$pid" 2>/dev/null) == *"$(process_marker "$1")"* ]]; then
    echo "$pid"
    return 0
  fi
  rm -f "$file" "$RUN_DIR/$1.addr"
  return 1
}

# Starts "$@" detached (own session, immune to the caller's SIGHUP), appending to .local/logs/$1.log.
# setsid does not fork here (our children are not process-group leaders), so $! is the server's pid.
start_bg() {
  local name=$1
  shift
  local logf="$LOG_DIR/$name.log"
  printf '\n===== %s: starting %s =====\n' "$(date '+%F %T')" "$name" >>"$logf"
  # 9>&- : the server must not inherit the lock fd, or the lock would stay held while it runs.
  nohup setsid "$@" >>"$logf" 2>&1 </dev/null 9>&- &
  local pid=$! marker deadline=$((SECONDS + 5))
  marker=$(process_marker "$name")
  # Until the child has exec'd, ps shows this script's command line, which running_pid would
  # take for a reused pid (and a busy machine once left four servers orphaned that way).
  while [[ $(ps -ww -o args= -p "$pid" 2>/dev/null) != *"$marker"* ]] && pid_alive "$pid" &&
    ((SECONDS < deadline)); do
    sleep 0.05
  done
  echo "$pid" >"$(pid_file "$name")"
  # Remember where it listens: a later `up` with other SWITCHBOARD_*_PORT values must notice.
  address "$name" >"$RUN_DIR/$name.addr"
}

# The address component $1 was started with (falls back to the current settings).
started_address() {
  if [[ -f $RUN_DIR/$1.addr ]]; then cat "$RUN_DIR/$1.addr"; else address "$1"; fi
}

# SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL.
stop_component() {
  local name=$1 pid t0
  if ! pid=$(running_pid "$name"); then
    log "$name: not running"
    return 0
  fi
  t0=$(now_us)
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while pid_alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
  if pid_alive "$pid"; then
    warn "$name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while pid_alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
    pid_alive "$pid" && die "$name (pid $pid) survived SIGKILL"
  fi
  rm -f "$(pid_file "$name")" "$RUN_DIR/$name.addr"
  log "$name: stopped (pid $pid, $(since "$t0"))"
}

# Polls "$3..." until it succeeds; fails early when component $1's process dies, or after $2 seconds.
wait_ready() {
  local name=$1 timeout=$2
  shift 2
  local deadline=$((SECONDS + timeout)) pid
  while :; do
    pid=$(running_pid "$name") || startup_failed "$name" "its process exited"
    "$@" && return 0
    ((SECONDS < deadline)) ||
      startup_failed "$name" "not ready after ${timeout}s (pid $pid; SWITCHBOARD_${name^^}_START_TIMEOUT_S raises the limit)"
    sleep 0.3
  done
}

startup_failed() {
  local logf="$LOG_DIR/$1.log"
  printf '[stack] error: %s: %s. Last lines of %s:\n' "$1" "$2" "$logf" >&2
  tail -n 25 "$logf" 2>/dev/null | sed 's/^/    /' >&2
  exit 1
}

need_cmd() {
  command -v "$1" >/dev/null || die "'$1' was not found on PATH; it is needed $2"
}

# Every component's ports must be free before anything starts, so `up` fails before half-starting.
check_ports_free() {
  local name=$1 env port
  shift
  for env in "$@"; do
    port=${!env}
    if port_in_use "$port"; then
      die "$name: port $port is already taken by $(port_owner "$port"). Stop that process, or use another port with SWITCHBOARD_${env}=<port>."
    fi
  done
}

# ---------------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------------
check_java() {
  command -v "$JAVA" >/dev/null || die "Java $JAVA_MIN_MAJOR+ is required for Kafka but '$JAVA' was not found (apt-get install openjdk-17-jre-headless, or set JAVA_HOME)"
  local v
  v=$("$JAVA" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
  v=${v#1.}   # Java 8 and older report 1.x
  v=${v%%[.+_-]*}
  if ! [[ $v =~ ^[0-9]+$ ]] || ((v < JAVA_MIN_MAJOR)); then
    die "Java $JAVA_MIN_MAJOR+ is required for Kafka; '$JAVA' is version '${v:-unknown}' (set JAVA_HOME to a newer one)"
  fi
}

# The stamp covers the pom too, so editing the dependency list triggers a fresh download.
kafka_stamp() {
  echo "kafka=$KAFKA_VERSION log4j=$LOG4J_VERSION pom=$(sha256sum <"$SCRIPT_DIR/kafka/pom.xml" | cut -c1-12)"
}

kafka_installed() {
  [[ -f $KAFKA_LIBS/.stamp && $(<"$KAFKA_LIBS/.stamp") == "$(kafka_stamp)" ]]
}

kafka_install() {
  kafka_installed && return 0
  need_cmd mvn "to download the Kafka jars from Maven Central"
  local t0 tmp="$KAFKA_HOME/libs.tmp"
  t0=$(now_us)
  log "kafka: downloading Kafka $KAFKA_VERSION jars with Maven"
  rm -rf "$tmp"
  with_progress "kafka: downloading" mvn -q -B -Dstyle.color=never -f "$SCRIPT_DIR/kafka/pom.xml" \
    -Dkafka.version="$KAFKA_VERSION" -Dlog4j.version="$LOG4J_VERSION" \
    dependency:copy-dependencies -DoutputDirectory="$tmp" -DincludeScope=runtime
  # Swap in whole so a version change never leaves two Kafka versions on the classpath.
  rm -rf "$KAFKA_LIBS"
  mv "$tmp" "$KAFKA_LIBS"
  kafka_stamp >"$KAFKA_LIBS/.stamp"
  log "kafka: installed $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars in $(since "$t0")"
}

# Runs a Kafka class from our jars, bounded by KAFKA_TOOL_TIMEOUT seconds (callers may lower it
# with a local). The flags make these short-lived CLI JVMs start faster.
KAFKA_TOOL_TIMEOUT=120
kafka_tool() {
  timeout -k 5 "$KAFKA_TOOL_TIMEOUT" "$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dlog4j2.configurationFile="$KAFKA_LOG4J" -cp "$KAFKA_LIBS/*" "$@" </dev/null
}

kafka_render_config() {
  sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
    -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
    -e "s|@LOG_DIR@|$KAFKA_DATA|g" \
    "$SCRIPT_DIR/kafka/server.properties.template" >"$KAFKA_CONFIG"
  # Short admin timeouts: a readiness probe must fail fast, not retry for the default 60 s.
  cat >"$KAFKA_ADMIN_CONFIG" <<EOF
request.timeout.ms=5000
default.api.timeout.ms=8000
EOF
}

# Formats the KRaft log dir once; a formatted dir has meta.properties.
kafka_format() {
  [[ -f $KAFKA_DATA/meta.properties ]] && return 0
  local uuid
  uuid=$(kafka_tool kafka.tools.StorageTool random-uuid | tail -n 1)
  log "kafka: formatting storage in ${KAFKA_DATA#"$REPO_ROOT"/} (cluster id $uuid)"
  kafka_tool kafka.tools.StorageTool format -t "$uuid" -c "$KAFKA_CONFIG" >>"$LOG_DIR/kafka.log" 2>&1 ||
    startup_failed kafka "storage format failed"
}

kafka_start() {
  kafka_render_config
  kafka_format
  start_bg kafka "$JAVA" -Xms256m -Xmx1g -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_CONFIG"
}

kafka_topics_cmd() {
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$HOST:$KAFKA_PORT" \
    --command-config "$KAFKA_ADMIN_CONFIG" "$@"
}

# Ready means a real admin call works (the port opens before the broker serves requests); the
# topic tool below waits for that itself, so the probe only needs the open port (a Kafka CLI
# call per probe cost a JVM start each).
kafka_probe() { port_open "$KAFKA_PORT"; }

# Creates the missing topics of topics.txt in one JVM and one admin request (kafka/Topics.java,
# run from source on the broker's jars), after waiting up to KAFKA_START_TIMEOUT for the broker.
kafka_ensure_topics() {
  local t0 created
  t0=$(now_us)
  created=$(KAFKA_TOOL_TIMEOUT=$((KAFKA_START_TIMEOUT + 30)) kafka_tool "$SCRIPT_DIR/kafka/Topics.java" \
    "$HOST:$KAFKA_PORT" "$SCRIPT_DIR/kafka/topics.txt" "$KAFKA_START_TIMEOUT" | tail -n 1) ||
    startup_failed kafka "creating the topics of deploy/local/kafka/topics.txt failed"
  log "kafka: ready at $HOST:$KAFKA_PORT, ${created:-0} topic(s) created ($(since "$t0"))"
}

# ---------------------------------------------------------------------------------------------
# FerretDB
# ---------------------------------------------------------------------------------------------
# The stamp covers the wrapper's sources and our patches, so a change to any of them rebuilds it.
ferretdb_stamp() {
  echo "ferretdb=$FERRETDB_VERSION src=$(cat "$FERRETDB_SRC/main.go" "$FERRETDB_SRC/go.mod" "$FERRETDB_SRC/go.sum" "$FERRETDB_SRC"/patches/*.patch | sha256sum | cut -c1-12)"
}

ferretdb_installed() {
  [[ -x $FERRETDB_BIN && -f $BIN_DIR/.ferretdb.stamp && $(<"$BIN_DIR/.ferretdb.stamp") == "$(ferretdb_stamp)" ]]
}

ferretdb_install() {
  ferretdb_installed && return 0
  need_cmd go "to build FerretDB"
  grep -qE "^[[:space:]]*(require[[:space:]]+)?github.com/FerretDB/FerretDB[[:space:]]+$FERRETDB_VERSION\$" "$FERRETDB_SRC/go.mod" ||
    die "deploy/local/ferretdb/go.mod does not require FerretDB $FERRETDB_VERSION (pinned in stack.sh); update one of them"
  local t0
  t0=$(now_us)
  log "ferretdb: building FerretDB $FERRETDB_VERSION (first build takes about a minute)"
  # FerretDB 1.x is no longer released, so fixes we need are carried as patches
  # (ferretdb/patches/, see its README) on a copy of the module, which the wrapper's build
  # replaces the upstream module with.
  local build="$LOCAL_DIR/build/ferretdb" upstream patch
  upstream=$(cd "$FERRETDB_SRC" && go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -d $upstream ]] || die "ferretdb: could not download github.com/FerretDB/FerretDB@$FERRETDB_VERSION"
  rm -rf "$build" && mkdir -p "$build"
  cp -R "$upstream" "$build/FerretDB" && chmod -R u+w "$build/FerretDB"
  for patch in "$FERRETDB_SRC"/patches/*.patch; do
    # The ceiling keeps git from taking this repo (around .local/) for the patch's target.
    (cd "$build/FerretDB" && GIT_CEILING_DIRECTORIES="$build" git apply -p1 "$patch") ||
      die "ferretdb: $patch does not apply to FerretDB $FERRETDB_VERSION"
  done
  cp "$FERRETDB_SRC/main.go" "$FERRETDB_SRC/go.mod" "$FERRETDB_SRC/go.sum" "$build/"
  # -buildvcs=false: the build sits inside this git repo, whose state must not affect it.
  with_progress "ferretdb: building" ferretdb_go_install "$build"
  ferretdb_stamp >"$BIN_DIR/.ferretdb.stamp"
  log "ferretdb: built in $(since "$t0")"
}

ferretdb_go_install() {
  (cd "$1" && go mod edit -replace "github.com/FerretDB/FerretDB=./FerretDB" &&
    GOBIN="$BIN_DIR" GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false" go install .)
}

ferretdb_start() {
  start_bg ferretdb "$FERRETDB_BIN" -listen-addr "$HOST:$MONGO_PORT" -sqlite-dir "$FERRETDB_DATA" \
    -log-level "$FERRETDB_LOG_LEVEL" ${FERRETDB_PPROF_ADDR:+-pprof-addr "$FERRETDB_PPROF_ADDR"}
}

# A real MongoDB ping through pymongo when the project venv has it; else the open port must do,
# because the stack must work before (and without) the venv. FERRETDB_PROBE says which one ran.
FERRETDB_PING_PY="$REPO_ROOT/.venv/bin/python"
FERRETDB_PROBE=ping
ferretdb_probe() {
  port_open "$MONGO_PORT" || return 1
  [[ $FERRETDB_PROBE == ping && -x $FERRETDB_PING_PY ]] || { FERRETDB_PROBE=port; return 0; }
  local rc=0
  # Exit 3 = no pymongo in the venv. os._exit skips joining pymongo's monitor threads (~0.3 s).
  "$FERRETDB_PING_PY" - "$MONGO_PORT" 2>/dev/null <<'EOF' || rc=$?
import os, sys
try:
    import pymongo
except ImportError:
    os._exit(3)
try:
    client = pymongo.MongoClient(f"mongodb://127.0.0.1:{sys.argv[1]}/", serverSelectionTimeoutMS=1000,
                                 connectTimeoutMS=1000, socketTimeoutMS=2000)
    client.admin.command("ping")
except Exception:
    os._exit(1)
os._exit(0)
EOF
  if ((rc == 3)); then FERRETDB_PROBE=port; fi
  ((rc == 0 || rc == 3))
}

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

# ---------------------------------------------------------------------------------------------
# Jaeger v2 (an OpenTelemetry Collector distribution): OTLP in, traces in memory, query API out
# ---------------------------------------------------------------------------------------------
# Built from a small tool module (deploy/local/jaeger/go.mod, go.sum committed) because
# `go install pkg@version` needs the proxy's version list, which it refuses for this module.
# Its UI assets are not part of the Go module (they are built from a separate npm project that
# no registry publishes), so :16686 serves the query API and Jaeger's placeholder page.
jaeger_stamp() {
  echo "jaeger=$JAEGER_VERSION src=$(cat "$JAEGER_SRC/go.mod" "$JAEGER_SRC/go.sum" | sha256sum | cut -c1-12)"
}

jaeger_installed() {
  [[ -x $JAEGER_BIN && -f $BIN_DIR/.jaeger.stamp && $(<"$BIN_DIR/.jaeger.stamp") == "$(jaeger_stamp)" ]]
}

jaeger_install() {
  jaeger_installed && return 0
  need_cmd go "to build Jaeger"
  grep -qE "github.com/jaegertracing/jaeger[[:space:]]+$JAEGER_VERSION([[:space:]]|$)" "$JAEGER_SRC/go.mod" ||
    die "deploy/local/jaeger/go.mod does not require Jaeger $JAEGER_VERSION (pinned in stack.sh); update one of them"
  local t0
  t0=$(now_us)
  log "jaeger: building Jaeger $JAEGER_VERSION (the first build takes several minutes)"
  with_progress "jaeger: building" jaeger_go_install
  jaeger_stamp >"$BIN_DIR/.jaeger.stamp"
  log "jaeger: built in $(since "$t0")"
}

jaeger_go_install() {
  # The checksum database has no entries for some collector-contrib modules; the committed
  # go.sum pins their hashes instead.
  (cd "$JAEGER_SRC" && GOBIN="$BIN_DIR" GONOSUMDB='github.com/open-telemetry/*,go.opentelemetry.io/*' \
    GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false" go install github.com/jaegertracing/jaeger/cmd/jaeger)
}

# The pid of a background Jaeger build that still runs (see cmd_jaeger_background).
jaeger_build_pid() {
  local pid
  [[ -f $JAEGER_BUILD_PID ]] || return 1
  pid=$(<"$JAEGER_BUILD_PID")
  if [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid"; then echo "$pid"; return 0; fi
  rm -f "$JAEGER_BUILD_PID"
  return 1
}

# Builds Jaeger off the chat's path: a detached `stack.sh _jaeger-background`, logging to
# .local/logs/jaeger-build.log, which starts Jaeger once built if the stack is still up.
jaeger_build_in_background() {
  local pid
  if pid=$(jaeger_build_pid); then
    log "jaeger: still building in the background (pid $pid, ${LOG_DIR#"$REPO_ROOT"/}/jaeger-build.log)"
    return 0
  fi
  need_cmd go "to build Jaeger (Go 1.24+)"
  # nice: the build must not slow down the chat that starts meanwhile on the same cores.
  nohup setsid nice -n 10 "$SCRIPT_DIR/stack.sh" _jaeger-background >>"$LOG_DIR/jaeger-build.log" 2>&1 </dev/null 9>&- &
  echo "$!" >"$JAEGER_BUILD_PID"
  log "jaeger: building in the background (pid $!, ${LOG_DIR#"$REPO_ROOT"/}/jaeger-build.log); it starts when built"
}

cmd_jaeger_background() {
  jaeger_install
  # `up` in the foreground may hold the lock while it waits for this build: then it starts
  # Jaeger itself, and this one must not wait for the lock.
  command -v flock >/dev/null && { exec 9>"$RUN_DIR/stack.lock"; flock -n 9 || exit 0; }
  running_pid jaeger >/dev/null && exit 0
  if ! running_pid kafka >/dev/null; then
    log "jaeger: built; the stack is down, so not starting it"
    exit 0
  fi
  # shellcheck disable=SC2046
  check_ports_free jaeger $(ports_env jaeger)
  jaeger_start
  wait_ready jaeger "$JAEGER_START_TIMEOUT" jaeger_probe
  log "jaeger: ready at $(address jaeger)"
}

jaeger_start() {
  JAEGER_OTLP_GRPC_PORT=$OTLP_PORT JAEGER_OTLP_HTTP_PORT=$OTLP_HTTP_PORT JAEGER_QUERY_PORT=$JAEGER_UI_PORT \
    JAEGER_QUERY_GRPC_PORT=$JAEGER_QUERY_GRPC_PORT JAEGER_HEALTH_PORT=$JAEGER_HEALTH_PORT \
    start_bg jaeger "$JAEGER_BIN" --config "file:$JAEGER_SRC/config.yaml"
}

jaeger_probe() {
  curl -fsS -m 2 -o /dev/null "http://$HOST:$JAEGER_UI_PORT/api/services" && port_open "$OTLP_PORT"
}

# ---------------------------------------------------------------------------------------------
# Zipkin: the trace UI (docs/decisions/0005-trace-ui.md). Its executable jar comes from Maven
# Central and runs on the Java that Kafka uses; the services send it a copy of each span
# (SWITCHBOARD_TELEMETRY_ZIPKIN_ENDPOINT, set by services.sh). Traces are kept in memory.
# ---------------------------------------------------------------------------------------------
zipkin_installed() { [[ -f $ZIPKIN_JAR ]]; }

zipkin_install() {
  zipkin_installed && return 0
  need_cmd mvn "to download Zipkin from Maven Central"
  local t0
  t0=$(now_us)
  log "zipkin: downloading Zipkin $ZIPKIN_VERSION with Maven"
  with_progress "zipkin: downloading" mvn -q -B -Dstyle.color=never dependency:copy \
    -Dartifact="io.zipkin:zipkin-server:$ZIPKIN_VERSION:jar:exec" -DoutputDirectory="$ZIPKIN_HOME"
  [[ -f $ZIPKIN_JAR ]] || die "zipkin: $ZIPKIN_JAR was not downloaded"
  log "zipkin: installed in $(since "$t0")"
}

zipkin_start() {
  # In-memory storage, bounded; the UI and API on 127.0.0.1 only.
  MEM_MAX_SPANS=200000 start_bg zipkin "$JAVA" -Xms64m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -jar "$ZIPKIN_JAR" --armeria.ports[0].port="$ZIPKIN_PORT" --armeria.ports[0].ip="$HOST" \
    --armeria.ports[0].protocols=http
}

zipkin_probe() { curl -fsS -m 2 -o /dev/null "http://$HOST:$ZIPKIN_PORT/health"; }

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
