# Zipkin, the trace UI: download from Maven Central, start, probe.
# Sourced by deploy/local/stack.sh, which sets the versions, the layout and the ports.
# shellcheck shell=bash

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
