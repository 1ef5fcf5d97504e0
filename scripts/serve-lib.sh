# Shared by the scripts that test a live `lore serve` (source it):
#   need CMD PACKAGE          install PACKAGE with apt-get when CMD is missing
#   python_env VENV IMPORTS PIP_ARGS...
#                             a venv where `import IMPORTS` works
#   free_port                 an unused local TCP port
#   wait_up PORT              wait (up to a minute) until /healthz answers

need() { command -v "$1" > /dev/null || { apt-get update -qq && apt-get install -y -qq "$2" > /dev/null; }; }

python_env() {
    local venv=$1 imports=$2
    shift 2
    "$venv/bin/python" -c "import $imports" 2>/dev/null && return
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv" 2>/dev/null || {
        apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv "$venv"
    }
    "$venv/bin/pip" install -q "$@"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_up() {
    for _ in $(seq 1 120); do
        curl -sf "http://127.0.0.1:$1/healthz" > /dev/null && return
        sleep 0.5
    done
    echo "lore serve did not come up on port $1" >&2
    return 1
}
