#!/usr/bin/env bash
# Starts, stops and lists the Switchboard processes of the local stack: the provider
# simulator, the demo order service, memory, the llm-workers, the orchestrator and the
# gateway (after seeding the tenants of tenants.yaml into MongoDB). Each runs in the
# background from the repository's .venv, in its own session so that it outlives the caller.
#
#   deploy/local/services.sh up       start what is not running, then wait until all are ready
#   deploy/local/services.sh down     stop all (SIGTERM, then SIGKILL after a timeout)
#   deploy/local/services.sh status   show which are running (exit 3 when one is stopped)
#
# State: logs in .local/logs/<name>.log, pid files in .local/run/<name>.pid (and <name>.spec:
# what the process was started with; `up` restarts a process whose settings changed and stops
# workers that are no longer configured, since worker health ports follow their position).
# The caller's environment reaches the services (SWITCHBOARD_*, OPENAI_API_KEY, ...). Read here:
#   SWITCHBOARD_TIERS             worker tiers, separated by spaces or commas ("cheap frontier")
#   SWITCHBOARD_WORKERS_PER_TIER  worker processes per tier (1)
#   SWITCHBOARD_READY_TIMEOUT_S   how long `up` waits for readiness, in seconds (60)
#   SWITCHBOARD_STOP_TIMEOUT_S    how long `down` waits after SIGTERM, in seconds (15)
#   (`up` also loads deploy/local/knowledge/demo into the demo tenant's knowledge base)
#   SWITCHBOARD_TENANTS_FILE      tenants seeded into MongoDB before the start (deploy/local/tenants.yaml;
#                                 the demo tenant's key is SWITCHBOARD_DEV_API_KEY, default sb-dev-key)
set -euo pipefail
set +m # no job control: a background process keeps our process group, so setsid need not fork

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="$ROOT/.venv/bin/python"
LOG_DIR="$ROOT/.local/logs"
RUN_DIR="$ROOT/.local/run"
LOG_TAIL_LINES=40

die() {
	echo "services.sh: $*" >&2
	exit 1
}

uint_setting() { # <name> <default> [min]: the value of an integer environment variable
	local value="${!1:-$2}"
	if ! [[ $value =~ ^[0-9]+$ ]] || ((10#$value < ${3:-0})); then
		die "$1 must be an integer >= ${3:-0}, got '$value'"
	fi
	echo "$((10#$value))"
}

READY_TIMEOUT_S="$(uint_setting SWITCHBOARD_READY_TIMEOUT_S 60 1)"
STOP_TIMEOUT_S="$(uint_setting SWITCHBOARD_STOP_TIMEOUT_S 15)"
WORKERS_PER_TIER="$(uint_setting SWITCHBOARD_WORKERS_PER_TIER 1)"
TIERS_SETTING="${SWITCHBOARD_TIERS:-cheap frontier}"
read -ra TIERS <<<"${TIERS_SETTING//,/ }"
for tier in ${TIERS[@]+"${TIERS[@]}"}; do
	[[ $tier =~ ^[A-Za-z0-9_.-]+$ ]] || die "SWITCHBOARD_TIERS: bad tier name '$tier'"
done

# Each span also goes to the stack's Zipkin, the local trace UI (dropped while it is not up).
export SWITCHBOARD_TELEMETRY_ZIPKIN_ENDPOINT="${SWITCHBOARD_TELEMETRY_ZIPKIN_ENDPOINT-http://127.0.0.1:${SWITCHBOARD_ZIPKIN_PORT:-9411}/api/v2/spans}"

# The processes in start order: name, module, readiness URL, extra environment (K=V ...).
NAMES=()
MODULES=()
URLS=()
ENVS=()
add() {
	NAMES+=("$1")
	MODULES+=("$2")
	URLS+=("$3")
	ENVS+=("$4")
}
add simulator switchboard.simulator http://127.0.0.1:8400/_health ""
# The demo tenant's order_status tool calls it (deploy/local/tenants.yaml).
add demo-orders switchboard.demo_orders http://127.0.0.1:8086/_health ""
add memory switchboard.memory http://127.0.0.1:8083/readyz SWITCHBOARD_HEALTH_PORT=8083
add knowledge switchboard.knowledge http://127.0.0.1:8084/readyz SWITCHBOARD_HEALTH_PORT=8084
k=0
for tier in ${TIERS[@]+"${TIERS[@]}"}; do
	for ((i = 0; i < WORKERS_PER_TIER; i++)); do
		port=$((8090 + k))
		add "llm-worker-$tier-$i" switchboard.llm_worker "http://127.0.0.1:$port/readyz" \
			"SWITCHBOARD_LLM_WORKER_TIERS=$tier SWITCHBOARD_LLM_WORKER_INSTANCE_ID=$tier-$i SWITCHBOARD_HEALTH_PORT=$port"
		k=$((k + 1))
	done
done
add orchestrator switchboard.orchestrator http://127.0.0.1:8082/readyz SWITCHBOARD_HEALTH_PORT=8082
add gateway switchboard.gateway http://127.0.0.1:8081/readyz SWITCHBOARD_HEALTH_PORT=8081

pid_file() { echo "$RUN_DIR/$1.pid"; }

# What a process was started with (module and extra environment), to restart it on a change.
spec_file() { echo "$RUN_DIR/$1.spec"; }
spec_of() { echo "${MODULES[$1]} ${ENVS[$1]}"; }

module_of() {
	case "$1" in
	llm-worker-*) echo switchboard.llm_worker ;;
	*) echo "switchboard.${1//-/_}" ;;
	esac
}

# Prints the pid of <name> when its pid file names a live process running its module;
# fails otherwise (no pid file, dead pid, or a pid reused by another program).
running_pid() {
	local file pid args
	file="$(pid_file "$1")"
	[[ -f $file ]] || return 1
	pid="$(<"$file")"
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
	args="$(ps -o args= -p "$pid" 2>/dev/null)" || return 1
	[[ $args == *" -m $(module_of "$1")"* ]] || return 1
	echo "$pid"
}

# Worker names with a pid file that are not in the current configuration.
extra_workers() {
	local file name known
	for file in "$RUN_DIR"/llm-worker-*.pid; do
		[[ -e $file ]] || continue
		name="$(basename "$file" .pid)"
		for known in "${NAMES[@]}"; do
			[[ $name == "$known" ]] && continue 2
		done
		echo "$name"
	done
}

show_log_tail() { # the end of the log of the latest start of <name>
	local log="$LOG_DIR/$1.log" from
	if [[ -s $log ]]; then
		from="$(awk '/^=== .* services.sh: starting /{n = NR} END{print n + 0}' "$log")"
		echo "--- last $LOG_TAIL_LINES lines of $log ---" >&2
		tail -n "+$((from > 0 ? from : 1))" "$log" | tail -n "$LOG_TAIL_LINES" >&2
		echo "---" >&2
	else
		echo "(no output in $log)" >&2
	fi
}

start() { # <index>
	local name="${NAMES[$1]}" log pid
	local -a envs=()
	log="$LOG_DIR/$name.log"
	[[ -n ${ENVS[$1]} ]] && read -ra envs <<<"${ENVS[$1]}"
	printf '\n=== %s services.sh: starting %s ===\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$name" >>"$log"
	(
		cd "$ROOT"
		exec setsid nohup env ${envs[@]+"${envs[@]}"} PYTHONUNBUFFERED="${PYTHONUNBUFFERED:-1}" \
			"$PYTHON" -m "${MODULES[$1]}"
	) >>"$log" 2>&1 </dev/null &
	pid=$!
	echo "$pid" >"$(pid_file "$name")"
	spec_of "$1" >"$(spec_file "$name")"
	echo "$name: started (pid $pid, log ${log#"$ROOT"/})"
}

up() {
	[[ -x $PYTHON ]] || die "$ROOT/.venv is missing: run make venv"
	command -v curl >/dev/null || die "curl is required"
	command -v setsid >/dev/null || die "setsid is required (util-linux)"
	mkdir -p "$LOG_DIR" "$RUN_DIR"
	local idx name pid
	local -a extras changed=() to_start=()
	# Converge on the configuration: worker ports follow their position, so workers that are
	# no longer configured, or whose settings changed, stop before anything starts.
	mapfile -t extras < <(extra_workers)
	if ((${#extras[@]} > 0)); then
		echo "stopping workers that are not configured any more: ${extras[*]}"
		stop_together "${extras[@]}"
	fi
	for idx in "${!NAMES[@]}"; do
		name="${NAMES[$idx]}"
		if running_pid "$name" >/dev/null && [[ "$(cat "$(spec_file "$name")" 2>/dev/null)" != "$(spec_of "$idx")" ]]; then
			changed+=("$name")
		fi
	done
	if ((${#changed[@]} > 0)); then
		echo "restarting with new settings: ${changed[*]}"
		stop_together "${changed[@]}"
	fi
	for idx in "${!NAMES[@]}"; do
		name="${NAMES[$idx]}"
		if pid="$(running_pid "$name")"; then
			echo "$name: already running (pid $pid)"
			continue
		fi
		rm -f "$(pid_file "$name")" "$(spec_file "$name")"
		# Any HTTP answer means the port is taken, e.g. by a copy started some other way.
		if curl -s -o /dev/null --max-time 2 "${URLS[$idx]}"; then
			die "$name: ${URLS[$idx]} already answers but no process of ours runs; stop whatever listens there"
		fi
		to_start+=("$idx")
	done
	seed_tenants
	for idx in ${to_start[@]+"${to_start[@]}"}; do
		start "$idx"
	done
	wait_ready
	load_demo_knowledge
}

# The demo tenant's knowledge base (order, returns and shipping policies), through the
# gateway; idempotent (unchanged documents are not re-embedded). A failure is reported but
# does not stop `up`: the platform works without it.
load_demo_knowledge() {
	local dir="$ROOT/deploy/local/knowledge/demo"
	[[ -d $dir ]] || return 0
	echo "loading the demo knowledge base from ${dir#"$ROOT"/}"
	"$PYTHON" -m switchboard.knowledge ingest "$dir" --quiet \
		--tenant-key "${SWITCHBOARD_DEV_API_KEY:-sb-dev-key}" \
		--base-url "https://demo.example.com/help" ||
		echo "services.sh: the demo knowledge base did not load completely" >&2
}

# Creates or replaces the tenants of the seed file (API keys are stored hashed); idempotent.
seed_tenants() {
	local file="${SWITCHBOARD_TENANTS_FILE:-$ROOT/deploy/local/tenants.yaml}"
	[[ -f $file ]] || die "tenant seed file $file not found"
	"$PYTHON" -m switchboard.common.tenants seed "$file" || die "seeding tenants from $file failed (is MongoDB up?)"
}

wait_ready() {
	local deadline=$((SECONDS + READY_TIMEOUT_S)) idx name failed
	local -a pending=("${!NAMES[@]}") waiting
	echo "waiting up to ${READY_TIMEOUT_S}s for readiness..."
	while :; do
		waiting=()
		failed=0
		for idx in "${pending[@]}"; do
			name="${NAMES[$idx]}"
			if ! running_pid "$name" >/dev/null; then
				echo "services.sh: $name exited before it was ready" >&2
				show_log_tail "$name"
				failed=1
			elif curl -fs -o /dev/null --max-time 2 "${URLS[$idx]}"; then
				echo "$name: ready"
			else
				waiting+=("$idx")
			fi
		done
		if ((failed == 0 && ${#waiting[@]} > 0 && SECONDS >= deadline)); then
			for idx in "${waiting[@]}"; do
				name="${NAMES[$idx]}"
				echo "services.sh: $name not ready after ${READY_TIMEOUT_S}s (${URLS[$idx]})" >&2
				show_log_tail "$name"
			done
			failed=1
		fi
		if ((failed)); then
			echo "services.sh: up failed; the others keep running ('$0 down' stops them)" >&2
			exit 1
		fi
		((${#waiting[@]} > 0)) || break
		pending=("${waiting[@]}")
		sleep 0.5
	done
	echo "all ${#NAMES[@]} processes ready"
}

alive() { # <pid>: the process exists and is not a zombie waiting to be reaped
	local state
	state="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
	[[ -n $state && $state != Z* ]]
}

signal() { # <signal> <pid>: the whole process group when the pid leads one (setsid)
	local pgid
	pgid="$(ps -o pgid= -p "$2" 2>/dev/null | tr -d ' ')" || true
	if [[ $pgid == "$2" ]]; then
		kill "-$1" -- "-$2" 2>/dev/null || true
	else
		kill "-$1" "$2" 2>/dev/null || true
	fi
}

STOPPED=0

stop_together() { # <name>...: SIGTERM, wait, then SIGKILL what is left
	local name pid deadline idx
	local -a names=() pids=() left
	for name in "$@"; do
		if pid="$(running_pid "$name")"; then
			signal TERM "$pid"
			names+=("$name")
			pids+=("$pid")
		else
			rm -f "$(pid_file "$name")" "$(spec_file "$name")"
		fi
	done
	((${#names[@]} > 0)) || return 0
	deadline=$((SECONDS + STOP_TIMEOUT_S))
	while :; do
		left=()
		for idx in "${!pids[@]}"; do
			alive "${pids[$idx]}" && left+=("$idx")
		done
		((${#left[@]} > 0 && SECONDS < deadline)) || break
		sleep 0.2
	done
	for idx in "${!names[@]}"; do
		if alive "${pids[$idx]}"; then
			echo "${names[$idx]}: still running after ${STOP_TIMEOUT_S}s, sending SIGKILL" >&2
			signal KILL "${pids[$idx]}"
			for _ in 1 2 3 4 5 6 7 8 9 10; do
				alive "${pids[$idx]}" || break
				sleep 0.2
			done
		fi
		rm -f "$(pid_file "${names[$idx]}")" "$(spec_file "${names[$idx]}")"
		echo "${names[$idx]}: stopped"
		STOPPED=$((STOPPED + 1))
	done
}

down() {
	local -a workers=()
	local name
	for name in "${NAMES[@]}"; do
		[[ $name == llm-worker-* ]] && workers+=("$name")
	done
	while read -r name; do
		[[ -n $name ]] && workers+=("$name")
	done < <(extra_workers)
	stop_together gateway
	stop_together orchestrator
	stop_together ${workers[@]+"${workers[@]}"}
	stop_together knowledge
	stop_together memory
	stop_together demo-orders
	stop_together simulator
	((STOPPED > 0)) || echo "nothing was running"
}

# Exits 3 when a configured process is stopped, like stack.sh, so callers can tell.
status() {
	local name pid rc=0
	for name in "${NAMES[@]}"; do
		if pid="$(running_pid "$name")"; then
			printf '%-28s running (pid %s)\n' "$name" "$pid"
		else
			printf '%-28s stopped\n' "$name"
			rc=3
		fi
	done
	for name in $(extra_workers); do
		printf '%-28s running (pid %s, not configured)\n' "$name" "$(running_pid "$name" || echo '?')"
	done
	return "$rc"
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*)
	echo "usage: $0 up|down|status" >&2
	exit 2
	;;
esac
