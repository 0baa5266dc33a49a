#!/usr/bin/env bash
# Install the reference gateways the benchmark compares chatgate with, each in its own
# environment under bench/.peers/ (git-ignored). Idempotent; safe to rerun.
#   bench/.peers/litellm   a Python venv with litellm[proxy] from PyPI
#   bench/.peers/portkey   an npm project with @portkey-ai/gateway (and the
#                          @hono/node-server 1.13.8 override its server needs)
# A peer that fails to install is reported and skipped; the other still installs.
#   bench/.peers/loadgen   a Python venv with aiohttp, orjson and uvloop for the load
#                          generator and the mock upstream (they share one core, so
#                          they must be cheap); without it they run on the project venv
# Usage: bench/setup_peers.sh [loadgen|litellm|portkey ...]   (default: all three)
set -u
here="$(cd "$(dirname "$0")" && pwd)"
peers="$here/.peers"
mkdir -p "$peers"
python="${PYTHON:-python3}"
status=0

pip_quiet() {  # pip install, without the index-mirror noise; fails when pip fails
  local py="$1"; shift
  "$py" -m pip install --quiet "$@" 2>&1 | grep -v "is ignored: it is neither" ; return "${PIPESTATUS[0]}"
}

setup_litellm() {
  local dir="$peers/litellm"
  echo "== litellm: $dir"
  if [ ! -x "$dir/venv/bin/python" ]; then
    "$python" -m venv "$dir/venv" || return 1
  fi
  pip_quiet "$dir/venv/bin/python" --upgrade pip || return 1
  pip_quiet "$dir/venv/bin/python" "litellm[proxy]" || return 1
  "$dir/venv/bin/python" -m pip show litellm | grep -i '^version' || true
}

setup_loadgen() {  # the load generator's and the upstream's own venv, with uvloop
  local dir="$peers/loadgen"
  echo "== loadgen: $dir"
  if [ ! -x "$dir/venv/bin/python" ]; then
    "$python" -m venv "$dir/venv" || return 1
  fi
  pip_quiet "$dir/venv/bin/python" aiohttp orjson uvloop || return 1
  "$dir/venv/bin/python" -c "import aiohttp, uvloop; print('aiohttp', aiohttp.__version__, 'uvloop', uvloop.__version__)"
}

setup_portkey() {
  local dir="$peers/portkey"
  echo "== portkey: $dir"
  command -v npm >/dev/null || { echo "npm not found (apt-get install nodejs npm)"; return 1; }
  mkdir -p "$dir"
  cat > "$dir/package.json" <<'JSON'
{
  "name": "chatgate-bench-portkey",
  "private": true,
  "version": "0.0.0",
  "dependencies": {
    "@portkey-ai/gateway": "^1.15.2"
  },
  "overrides": {
    "@hono/node-server": "1.13.8"
  }
}
JSON
  (cd "$dir" && npm install --no-audit --no-fund --loglevel=error) || return 1
  node -e "console.log('version', require('$dir/node_modules/@portkey-ai/gateway/package.json').version)"
}

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(loadgen litellm portkey)
for t in "${targets[@]}"; do
  if ! "setup_$t"; then
    echo "!! $t: setup failed (the benchmark will report it as unavailable)"
    status=1
  fi
done
exit $status
