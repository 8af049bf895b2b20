# Sourced by test.sh: a container engine and the default sandbox image for the container tests.
#   container_engine_start  install docker.io + mmdebstrap (root, Debian) if missing, start
#                           dockerd if no engine answers, build the image if it is missing
#   container_engine_stop   stop the dockerd this script started (and remove its containers)
# Times each step on stderr (CI time is budgeted). Nothing is cached between CI runs.
_ce_started_pid=""

_ce_now() { date +%s.%N; }
_ce_took() { awk -v a="$1" -v b="$(_ce_now)" 'BEGIN { printf "%.1f", b - a }'; }

container_engine_start() {
    local t
    t=$(_ce_now)
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v mmdebstrap >/dev/null 2>&1; then
        if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io mmdebstrap >/dev/null
        else
            echo "note: docker.io/mmdebstrap are not installed; container tests will fail" >&2
            return 0
        fi
    fi
    echo "container engine: packages in $(_ce_took "$t") s" >&2
    t=$(_ce_now)
    if ! docker info >/dev/null 2>&1; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "note: no container engine answers and only root starts dockerd here" >&2
            return 0
        fi
        # No iptables and no bridge: the sandbox's containers run with --network none.
        dockerd --iptables=false --bridge=none >/tmp/agenticraft-dockerd.log 2>&1 &
        _ce_started_pid=$!
        local waited=0
        until docker info >/dev/null 2>&1; do
            if ! kill -0 "$_ce_started_pid" 2>/dev/null || [ "$waited" -ge 300 ]; then
                echo "dockerd did not start; see /tmp/agenticraft-dockerd.log" >&2
                tail -20 /tmp/agenticraft-dockerd.log >&2
                return 1
            fi
            sleep 0.1  # dockerd offers no readiness notification without systemd
            waited=$((waited + 1))
        done
        echo "container engine: dockerd started in $(_ce_took "$t") s" >&2
    fi
    t=$(_ce_now)
    local image
    image=agenticraft-sandbox:$(.venv/bin/python -c 'import agenticraft; print(agenticraft.__version__)')
    # The image holds a copy of the package: rebuild it unless it is a copy of this checkout.
    local have want
    have=$(docker image inspect -f '{{ index .Config.Labels "org.agenticraft.source" }}' \
        "$image" 2>/dev/null || true)
    want=$(bash scripts/build-container-image.sh --source-hash)
    if [ "$have" != "$want" ]; then
        bash scripts/build-container-image.sh "$image" >/dev/null
        echo "container engine: image $image built in $(_ce_took "$t") s" >&2
    fi
}

container_engine_stop() {
    # Our sandbox containers go whoever runs the engine (a run that crashed may leave some).
    local ids
    ids=$(docker ps -aq --filter label=org.agenticraft.sandbox 2>/dev/null || true)
    [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
    if [ -n "$_ce_started_pid" ]; then
        kill "$_ce_started_pid" 2>/dev/null || true
        wait "$_ce_started_pid" 2>/dev/null || true
        _ce_started_pid=""
    fi
}
