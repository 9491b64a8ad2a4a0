# FerretDB 1.x on SQLite: build with `go install`, start, probe.
# Sourced by deploy/local/stack.sh, which sets the versions, the layout and the ports.
# shellcheck shell=bash

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
