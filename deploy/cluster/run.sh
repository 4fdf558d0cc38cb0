#!/bin/sh
# Runs Parley's three-node cluster on this machine: three nats-server
# processes forming a JetStream cluster (nats-1.conf .. nats-3.conf, data in
# ./data/cluster) and three parleyd nodes on ports 8081-8083, each talking
# to its own NATS server first. Ctrl-C stops everything.
#
# Usage (from the repository root): deploy/cluster/run.sh BIN_DIR
set -eu
bin=${1:-bin}
dir=$(dirname "$0")
mkdir -p data/cluster
pids=""
stop() {
	trap - INT TERM EXIT
	echo "stopping the cluster"
	# parleyd first, so that it drains its streams while NATS is still up.
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap stop INT TERM EXIT

for i in 1 2 3; do
	"$bin/nats-server" -c "$dir/nats-$i.conf" >"data/cluster/nats-$i.log" 2>&1 &
	natspids="${natspids:-} $!"
done
for i in 1 2 3; do
	port=$((8221 + i))
	n=0
	until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do
		n=$((n + 1))
		if [ "$n" -gt 300 ]; then
			echo "nats-server $i is not ready; see data/cluster/nats-$i.log" >&2
			for p in $natspids; do kill "$p" 2>/dev/null || true; done
			exit 1
		fi
		sleep 0.1
	done
done
echo "NATS JetStream cluster ready: nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"

all=nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224
for i in 1 2 3; do
	"$bin/parleyd" --addr "127.0.0.1:$((8080 + i))" --nats "nats://127.0.0.1:$((4221 + i)),$all" \
		>"data/cluster/parleyd-$i.log" 2>&1 &
	pids="$pids $!"
done
pids="$pids $natspids"
echo "parleyd nodes: http://127.0.0.1:8081 http://127.0.0.1:8082 http://127.0.0.1:8083 (logs in data/cluster/)"
echo "Ctrl-C stops the cluster."
wait
