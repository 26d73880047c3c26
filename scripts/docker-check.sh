#!/usr/bin/env bash
# Prove the Docker deliverables for real (not part of CI: needs a Docker engine, ~2-4 min).
#
#   scripts/docker-check.sh            # from the repo root, as root
#
# 1. builds the image and prints its size (and the base image's) and checks its contents;
# 2. starts the compose stack's service (MNIST_REPLICAS replicas x MNIST_WORKERS workers)
#    and Prometheus (Grafana cannot be pulled here; tests/deploy/test_grafana.py checks it);
# 3. waits until Prometheus' targets API shows every replica `up`, sends known traffic,
#    and prints what PromQL answers: sum(mnist_predictions_total) and p50/p99 latency;
# 4. stops one replica with `docker stop` during traffic and shows the drain: /readyz
#    turns 503 first, the container exits 0, its logs show draining -> drained -> stopped.
# Everything runs on 127.0.0.1 on non-default ports, under its own compose project,
# and is removed at the end (KEEP=1 leaves it running).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-mnist-serve}
PROJECT=${PROJECT:-mnistcheck}
export MNIST_REPLICAS=${MNIST_REPLICAS:-2}
export MNIST_WORKERS=${MNIST_WORKERS:-2}
export MNIST_PORT=${MNIST_PORT:-18000}
export MNIST_PORT_LAST=$((MNIST_PORT + 9))
export PROMETHEUS_PORT=${PROMETHEUS_PORT:-19090}
export MNIST_DRAIN_DELAY_S=${MNIST_DRAIN_DELAY_S:-2}
REQUESTS=${REQUESTS:-200}
SANDBOX=../shared/tools/docker-sandbox.sh
compose() { docker-compose -p "$PROJECT" "$@"; }
say() { printf '\n== %s\n' "$*"; }

if ! docker info >/dev/null 2>&1; then
  if [ -x "$SANDBOX" ]; then "$SANDBOX" up; else echo "no Docker engine" >&2; exit 1; fi
fi
# The sandbox aliases the prom/prometheus tags the compose file names; rerun is cheap.
[ -x "$SANDBOX" ] && "$SANDBOX" up >/dev/null

cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then compose down -v --remove-orphans >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

say "build"
start=$(date +%s)
docker build --network host -q -t "$IMAGE" . >/dev/null
base=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
size=$(docker image inspect "$IMAGE" --format '{{.Size}}')
base_size=$(docker image inspect "$base" --format '{{.Size}}')
printf 'built in %ss\nimage %s: %d MB (base %s: %d MB; added by our layers: %d MB)\n' \
  $(( $(date +%s) - start )) "$IMAGE" $((size / 1000000)) "$base" $((base_size / 1000000)) \
  $(((size - base_size) / 1000000))
docker run --rm --entrypoint sh "$IMAGE" -c '
  echo "user: $(id -u):$(id -g)"
  python3 -c "import torch" 2>/dev/null && { echo "torch is in the image"; exit 1; }
  echo "torch: absent"; echo "venv: $(du -sm /opt/venv | cut -f1) MB, models: $(du -sm /app/models | cut -f1) MB"
  test ! -w /app/models && echo "models: read-only for the service user"'
docker image inspect "$IMAGE" --format 'healthcheck: {{.Config.Healthcheck.Test}}
cmd: {{.Config.Cmd}} (exec form)  entrypoint: {{.Config.Entrypoint}}'

say "compose: $MNIST_REPLICAS replicas x $MNIST_WORKERS workers + prometheus"
docker-compose config -q  # the whole file (grafana included) is valid
compose up -d --no-build mnist prometheus
mapfile -t containers < <(compose ps -q mnist)
ports=()
for c in "${containers[@]}"; do ports+=("$(docker port "$c" 8000 | head -1 | sed 's/.*://')"); done
echo "containers: ${#containers[@]}, host ports: ${ports[*]}"

python3 - "$PROMETHEUS_PORT" "$MNIST_REPLICAS" "$REQUESTS" "${containers[*]}" "${ports[*]}" <<'PY'
"""Wait for health and targets, send traffic, query PromQL; bounded polling only."""
import gzip, json, subprocess, sys, time, urllib.parse, urllib.request

prom_port, replicas, requests = map(int, sys.argv[1:4])
containers, ports = sys.argv[4].split(), [int(port) for port in sys.argv[5].split()]
prom = f"http://127.0.0.1:{prom_port}"

def get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)

def until(what, check, timeout_s=90.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        time.sleep(0.5)  # polling external processes, bounded by the deadline
    sys.exit(f"timed out waiting for {what}")

def query(promql):
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    return get(url)["data"]["result"]

def health(container):
    return subprocess.run(["docker", "inspect", "--format", "{{.State.Health.Status}}", container],
                          capture_output=True, text=True).stdout.strip()

started = time.monotonic()
until("healthy containers", lambda: all(health(c) == "healthy" for c in containers))
print(f"docker health: all {len(containers)} containers healthy after {time.monotonic() - started:.1f}s")

def targets_up():
    active = get(f"{prom}/api/v1/targets")["data"]["activeTargets"]
    ours = [t for t in active if t["labels"]["job"] == "mnist-serve"]
    return ours if len(ours) == replicas and all(t["health"] == "up" for t in ours) else None

for target in until("every replica up in Prometheus", targets_up):
    print(f"prometheus target {target['labels']['instance']}: {target['health']}"
          f" (last scrape {target['lastScrapeDuration'] * 1000:.1f} ms)")

raw = gzip.decompress(open("tests/data/t10k-sample1000-images-idx3-ubyte.gz", "rb").read())
images = [list(raw[16 + i * 784 : 16 + (i + 1) * 784]) for i in range(50)]

def send(count):
    for i in range(count):
        pixels = [images[i % len(images)][r * 28:(r + 1) * 28] for r in range(28)]
        body = json.dumps({"pixels": pixels}).encode()
        url = f"http://127.0.0.1:{ports[i % len(ports)]}/v1/predict"
        request = urllib.request.Request(url, body, {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

def predictions():
    result = query("sum(mnist_predictions_total)")
    return float(result[0]["value"][1]) if result else 0.0

# Two rounds, each waited for in Prometheus, so rate() has two samples that differ.
half = requests // 2
for sent in (half, requests):
    send(sent - (0 if sent == half else half))
    until(f"Prometheus to see {sent} predictions", lambda: predictions() == sent)
print(f"sent {requests} predictions over {replicas} replicas;"
      f" PromQL sum(mnist_predictions_total) = {predictions():g}")
for promql in (
    'sum by (instance) (mnist_http_requests_total{route="/v1/predict",status="200"})',
    "histogram_quantile(0.50, sum by (le) (rate(mnist_http_request_duration_seconds_bucket[1m])))",
    "histogram_quantile(0.99, sum by (le) (rate(mnist_http_request_duration_seconds_bucket[1m])))",
    "histogram_quantile(0.99, sum by (le) (rate(mnist_inference_duration_seconds_bucket[1m])))",
    "sum(rate(mnist_batch_size_rows_sum[1m])) / sum(rate(mnist_batch_size_rows_count[1m]))",
    "count(mnist_model_info)",
):
    result = query(promql)
    assert result, f"no data for {promql}"
    values = ", ".join(f"{r['metric'].get('instance', '')}={float(r['value'][1]):.6g}".lstrip("=")
                       for r in result)
    print(f"PromQL {promql}\n  -> {values}")
p99 = float(query("histogram_quantile(0.99, sum by (le) (rate("
                  "mnist_http_request_duration_seconds_bucket[1m])))")[0]["value"][1])
assert p99 == p99 and p99 > 0, "p99 must be a number"
PY

say "gRPC: unmodified tritonclient.grpc against a replica's published 8001"
grpc_port=$(docker port "${containers[0]}" 8001 | head -1 | sed 's/.*://')
python3 - "$grpc_port" <<'PY'
"""Ready, metadata and one inference over gRPC, the answer checked against the label."""
import sys

import numpy as np
import tritonclient.grpc as triton

from evaluation.samples import load_sample

client = triton.InferenceServerClient(f"127.0.0.1:{sys.argv[1]}")
assert client.is_server_ready() and client.is_model_ready("mnist-mlp")
digits, labels = load_sample()
tensor = triton.InferInput("image_u8", [8, 28, 28], "UINT8")
tensor.set_data_from_numpy(np.ascontiguousarray(digits[:8], dtype=np.uint8))
answer = client.infer("mnist-mlp", [tensor], client_timeout=10).as_numpy("digit")
assert [int(d) for d in answer.reshape(-1)] == [int(x) for x in labels[:8]], answer
print(f"gRPC on port {sys.argv[1]}: ready, 8 digits answered right")
PY

say "docker stop drains (MNIST_DRAIN_DELAY_S=$MNIST_DRAIN_DELAY_S)"
victim=${containers[0]}
port=${ports[0]}
started=$(date +%s.%N)
docker stop -t 30 "$victim" >/dev/null &
stopper=$!
# Keep sending predictions (and readiness probes) to the stopping replica until it stops
# answering; bounded. While it answers, every answer must be 200 or a clean 503: no 5xx,
# no reset. (Once it has exited, docker-proxy refuses or resets connections: expected.)
status=$(python3 - "$port" <<'PY'
import collections, gzip, json, sys, time, urllib.error, urllib.request
port = int(sys.argv[1])
raw = gzip.decompress(open("tests/data/t10k-sample1000-images-idx3-ubyte.gz", "rb").read())
body = json.dumps({"pixels": [list(raw[16 + r * 28:16 + (r + 1) * 28]) for r in range(28)]}).encode()
events = []  # (path, outcome) in order
failures_in_a_row = 0
deadline = time.monotonic() + 40
while failures_in_a_row < 20 and time.monotonic() < deadline:
    for path in ("/v1/predict", "/readyz"):
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                         body if path == "/v1/predict" else None,
                                         {"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                outcome = response.status
        except urllib.error.HTTPError as error:
            outcome = error.code
        except (urllib.error.URLError, OSError) as error:
            outcome = "no answer"
        events.append((path, outcome))
        failures_in_a_row = failures_in_a_row + 1 if outcome == "no answer" else 0
    if failures_in_a_row:
        time.sleep(0.05)  # the container is going away; bounded by the deadline
answered = [i for i, (_, outcome) in enumerate(events) if outcome != "no answer"]
while_up = events[: answered[-1] + 1] if answered else []
counts = collections.Counter(f"{path} {outcome}" for path, outcome in while_up)
print(f"while the replica still answered: {dict(counts)}; then {len(events) - len(while_up)}"
      " attempts found it gone", file=sys.stderr)
clean = all(outcome in (200, 503) for _, outcome in while_up)
print("503" if clean and counts["/readyz 503"] else "bad")
PY
)
echo "readyz went 503 during the drain and every answer was 200/503: $([ "$status" = 503 ] && echo yes || echo NO)"
wait "$stopper"
elapsed=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")
code=$(docker inspect "$victim" --format '{{.State.ExitCode}}')
echo "docker stop took ${elapsed}s; exit code $code (OOMKilled=$(docker inspect "$victim" --format '{{.State.OOMKilled}}'))"
docker logs "$victim" 2>&1 | grep -E '"(draining|drained|stopped)"|Received SIGTERM|Terminated child|Stopping parent|Shutting down|Finished server process' | cut -c1-160 || true
[ "$status" = 503 ] && [ "$code" = 0 ] || { echo "drain check FAILED" >&2; exit 1; }

say "OK"
