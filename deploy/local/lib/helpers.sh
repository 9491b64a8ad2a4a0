# Small helpers of deploy/local/stack.sh: logging, locks, processes, ports.
# Sourced by deploy/local/stack.sh, which sets the versions, the layout and the ports.
# shellcheck shell=bash

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
