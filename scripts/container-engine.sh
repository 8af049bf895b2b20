# Sourced by test.sh: a container engine and the default sandbox image for the container tests.
#   container_engine_start  install docker.io + mmdebstrap (root, Debian) if missing, start
#                           dockerd if no engine answers, build the image if it is missing
#                           and, for the Enterprise Gateway tests, the gateway kernel image
#                           and EG's own virtualenv .venv-eg (EG 3.x pins an older
#                           jupyter_client/jupyter_server than the kernel needs)
#   container_engine_stop   remove our containers, EG's kernel containers/services/networks and
#                           a swarm the gateway tests started; stop the dockerd this script started
# Times each step on stderr (CI time is budgeted). Nothing is cached between CI runs.
_ce_started_pid=""
_ce_eg_pid=""

_ce_now() { date +%s.%N; }
_ce_took() { awk -v a="$1" -v b="$(_ce_now)" 'BEGIN { printf "%.1f", b - a }'; }

# EG's own virtualenv, made in the background while the engine starts and the images build.
_ce_gateway_venv() {
    if [ ! -x .venv-eg/bin/jupyter-enterprisegateway ]; then
        python3 -m venv .venv-eg
        .venv-eg/bin/python -m pip install --quiet --disable-pip-version-check \
            "jupyter_enterprise_gateway>=3.2,<4"
    fi
}

container_engine_start() {
    local t
    t=$(_ce_now)
    _ce_gateway_venv >/tmp/agenticraft-eg-venv.log 2>&1 &
    _ce_eg_pid=$!
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
    local version image gateway
    version=$(.venv/bin/python -c 'import agenticraft; print(agenticraft.__version__)')
    image=agenticraft-sandbox:$version
    gateway=agenticraft-eg-kernel:$version
    # The images hold a copy of the package: rebuild them unless they copy this checkout. One
    # root filesystem, imported twice: the sandbox image and the gateway kernel image.
    local have have_gw want
    have=$(docker image inspect -f '{{ index .Config.Labels "org.agenticraft.source" }}' \
        "$image" 2>/dev/null || true)
    have_gw=$(docker image inspect -f '{{ index .Config.Labels "org.agenticraft.source" }}' \
        "$gateway" 2>/dev/null || true)
    want=$(bash scripts/build-container-image.sh --source-hash)
    if [ "$have" != "$want" ] || [ "$have_gw" != "$want" ]; then
        bash scripts/build-container-image.sh "$image" --gateway "$gateway" >/dev/null
        echo "container engine: images $image, $gateway built in $(_ce_took "$t") s" >&2
    fi
    t=$(_ce_now)
    if ! wait "$_ce_eg_pid"; then
        echo "Enterprise Gateway's virtualenv failed; see /tmp/agenticraft-eg-venv.log" >&2
        tail -20 /tmp/agenticraft-eg-venv.log >&2
        return 1
    fi
    _ce_eg_pid=""
    echo "container engine: .venv-eg ready $(_ce_took "$t") s after the images" >&2
}

container_engine_stop() {
    [ -z "$_ce_eg_pid" ] || kill "$_ce_eg_pid" 2>/dev/null || true
    # Our sandbox containers go whoever runs the engine (a run that crashed may leave some),
    # and so do the gateway tests' kernels, services, networks and their swarm.
    local ids
    ids=$(docker ps -aq --filter label=org.agenticraft.sandbox 2>/dev/null || true)
    [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
    ids=$(docker service ls -q --filter label=org.agenticraft.gateway 2>/dev/null || true)
    [ -z "$ids" ] || docker service rm $ids >/dev/null 2>&1 || true
    ids=$(docker ps -aq --filter label=org.agenticraft.gateway 2>/dev/null || true)
    [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
    ids=$(docker network ls -q --filter label=org.agenticraft.gateway 2>/dev/null || true)
    [ -z "$ids" ] || docker network rm $ids >/dev/null 2>&1 || true
    if [ "$(docker node inspect self -f '{{ index .Spec.Labels "org.agenticraft.gateway" }}' \
            2>/dev/null || true)" = "1" ]; then
        docker swarm leave --force >/dev/null 2>&1 || true
        local endpoint
        for endpoint in $(docker network inspect docker_gwbridge \
                -f '{{ range .Containers }}{{ .Name }} {{ end }}' 2>/dev/null || true); do
            docker network disconnect -f docker_gwbridge "$endpoint" >/dev/null 2>&1 || true
        done
        docker network rm docker_gwbridge >/dev/null 2>&1 || true
    fi
    if [ -n "$_ce_started_pid" ]; then
        kill "$_ce_started_pid" 2>/dev/null || true
        wait "$_ce_started_pid" 2>/dev/null || true
        _ce_started_pid=""
    fi
}
