# Kafka (KRaft, single node): install from Maven Central, configure, start, probe, topics.
# Sourced by deploy/local/stack.sh, which sets the versions, the layout and the ports.
# shellcheck shell=bash

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
