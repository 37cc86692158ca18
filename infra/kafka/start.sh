#!/usr/bin/env bash
# Starts a real, single-node Apache Kafka broker (KRaft, broker and controller in one JVM) on
# 127.0.0.1 with fresh data, and writes $CONSENTRY_RUN_DIR/kafka/env (CONSENTRY_KAFKA_BOOTSTRAP=…).
# The jars come from Maven Central through fetch.sh (pinned in pom.xml). Stop it with stop.sh.
# `start.sh --restart` stops the broker of this run dir and starts it again on the same ports and
# data, nothing wiped or formatted: a broker restart, as the crash tests need it.
#
# Environment: CONSENTRY_RUN_DIR (default <repo>/var/run), PYTHON (default <repo>/.venv/bin/python,
# needs aiokafka), JAVA (default java, 17+), KAFKA_START_TIMEOUT (seconds, default 60),
# KAFKA_HEAP (default 512m), KAFKA_LOG_LEVEL (default info).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
started=$(date +%s%3N)

bash "$here/fetch.sh"
libs=$here/.cache/libs

run=${CONSENTRY_RUN_DIR:-$root/var/run}/kafka
python=${PYTHON:-$root/.venv/bin/python}
java=${JAVA:-java}
timeout=${KAFKA_START_TIMEOUT:-60}

command -v "$java" >/dev/null || { echo "start.sh: java (17+) is required" >&2; exit 1; }
[[ -x "$python" ]] || command -v "$python" >/dev/null ||
  { echo "start.sh: no Python at $python (set PYTHON, or make install)" >&2; exit 1; }

common=(-Djava.awt.headless=true
  -Dorg.slf4j.simpleLogger.defaultLogLevel="${KAFKA_LOG_LEVEL:-info}"
  -Dorg.slf4j.simpleLogger.showDateTime=true
  -Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd\'T\'HH:mm:ss.SSS
  -cp "$libs/*")
# The storage tool runs for a second: a JVM tuned to start fast, not to run long.
tool=(-Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC "${common[@]}" kafka.tools.StorageTool)

# A fresh broker: free ports, server.properties and formatted storage in a wiped run dir.
fresh() {
  # A broker left running from this run dir is stopped first: its data is about to be wiped.
  bash "$here/stop.sh"
  rm -rf -- "$run"
  mkdir -p "$run/data"

  # Two free ports on 127.0.0.1, held together so that they differ.
  read -r port cport < <("$(command -v python3 || echo "$python")" - <<'PY'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
  )

  cat >"$run/server.properties" <<PROPS
# Written by infra/kafka/start.sh: one local node, broker and controller in one process (KRaft).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$run/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
PROPS

  cluster_id=$("$java" "${tool[@]}" random-uuid 2>>"$run/format.log" | tail -n1)
  [[ "$cluster_id" =~ ^[A-Za-z0-9_-]{22}$ ]] ||
    { echo "start.sh: StorageTool random-uuid gave '$cluster_id'" >&2; cat "$run/format.log" >&2; exit 1; }
  if ! "$java" "${tool[@]}" format -t "$cluster_id" -c "$run/server.properties" >>"$run/format.log" 2>&1; then
    echo "start.sh: formatting Kafka storage failed:" >&2; cat "$run/format.log" >&2; exit 1
  fi
}

if [[ "${1:-}" == "--restart" ]]; then
  [[ -f "$run/server.properties" && -d "$run/data" ]] ||
    { echo "start.sh --restart: no broker was started from $run" >&2; exit 1; }
  bash "$here/stop.sh"
  port=$(sed -n 's|^advertised.listeners=PLAINTEXT://127.0.0.1:\([0-9]*\)$|\1|p' "$run/server.properties")
  [[ "$port" =~ ^[0-9]+$ ]] || { echo "start.sh --restart: no port in $run/server.properties" >&2; exit 1; }
else
  fresh
fi

# Until the broker is ready, any way out of this script stops it.
abort() {
  trap - EXIT INT TERM
  if [[ -n "${waiter:-}" ]]; then kill "$waiter" 2>/dev/null || true; fi
  if [[ -s "$run/kafka.log" ]]; then
    echo "start.sh: Kafka did not come up; last lines of $run/kafka.log:" >&2
    tail -n 40 "$run/kafka.log" >&2 || true
  fi
  bash "$here/stop.sh" || true
  # stop.sh spares a pid whose command line is not yet the broker's (killed right after the fork);
  # this one is our own child, not yet reaped, so the number cannot belong to anyone else.
  if [[ -n "${pid:-}" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  exit 1
}
pid= waiter=
trap abort EXIT INT TERM

"$java" -Xmx"${KAFKA_HEAP:-512m}" -Xms"${KAFKA_HEAP:-512m}" "${common[@]}" \
  kafka.Kafka "$run/server.properties" >>"$run/kafka.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$run/kafka.pid"

# In the background so that a signal to this script is handled at once, not after the wait.
"$python" "$here/wait_ready.py" "127.0.0.1:$port" "$pid" "$timeout" &
waiter=$!
rc=0
wait "$waiter" || rc=$?
waiter=
case $rc in
  0) ;;
  2) echo "start.sh: the Kafka process ($pid) exited during start" >&2; abort ;;
  3) echo "start.sh: $python cannot import aiokafka (set PYTHON, or make install)" >&2; abort ;;
  *) echo "start.sh: Kafka did not answer a metadata request within ${timeout}s" >&2; abort ;;
esac
trap - EXIT INT TERM

printf 'CONSENTRY_KAFKA_BOOTSTRAP=127.0.0.1:%s\nCONSENTRY_KAFKA_DATA_DIR=%s\n' "$port" "$run/data" >"$run/env.tmp"
mv "$run/env.tmp" "$run/env"

ms=$(($(date +%s%3N) - started))
printf 'Kafka %s ready at 127.0.0.1:%s (pid %s, data and log in %s) in %d.%ds\n' \
  "$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")" \
  "$port" "$pid" "$run" $((ms / 1000)) $((ms % 1000 / 100))
