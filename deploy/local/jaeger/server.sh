# Jaeger v2: build in the background, start, probe.
# Sourced by deploy/local/stack.sh, which sets the versions, the layout and the ports.
# shellcheck shell=bash

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
