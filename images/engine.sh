#!/usr/bin/env bash
# A Docker engine for the Docker test tier (make test-docker), and a client that builds with BuildKit.
#   engine.sh start   when no engine answers: installs Debian's docker.io if dockerd is missing (root, apt),
#                     starts dockerd in the background and waits for it; writes its PID to PIDFILE (only an
#                     engine this script started is stopped by `engine.sh stop`). Then writes to CLIENT the
#                     docker client to build with: `docker` when it has buildx, else the engine package's
#                     own client (/usr/bin/docker, whose built-in BuildKit needs no plugin).
#   engine.sh stop    stops the dockerd that `start` started, by PID. Images and build cache stay on disk.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${STATE:-build/docker}
mkdir -p "$STATE"
PIDFILE=$STATE/dockerd.pid
CLIENT=$STATE/client
say() { echo "engine: $*"; }

start() {
  if docker info >/dev/null 2>&1; then
    say "a Docker engine answers ($(docker info -f '{{.ServerVersion}}, {{.Driver}}'))"
  else
    if ! command -v dockerd >/dev/null; then
      [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || {
        say "no Docker engine answers and dockerd is not installed; start one (https://docs.docker.com/engine/install/) or run the pipeline with --runner subprocess"
        exit 2
      }
      say "installing Debian's docker.io (apt-get)"
      apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io >/dev/null
    fi
    [ "$(id -u)" = 0 ] || { say "no Docker engine answers and starting dockerd needs root; start it (sudo dockerd) or run the pipeline with --runner subprocess"; exit 2; }
    setsid dockerd >"$STATE/dockerd.log" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { say "dockerd did not answer within 60 s (log: $STATE/dockerd.log)"; exit 1; }
    say "started dockerd (pid $(cat "$PIDFILE"), $(docker info -f '{{.ServerVersion}}, {{.Driver}}'), log $STATE/dockerd.log)"
  fi
  if docker buildx version >/dev/null 2>&1; then echo docker >"$CLIENT"
  elif [ -x /usr/bin/docker ] && DOCKER_BUILDKIT=1 /usr/bin/docker build --help >/dev/null 2>&1 \
       && /usr/bin/docker version -f '{{.Client.Version}}' 2>/dev/null | grep -q '^20\.'; then echo /usr/bin/docker >"$CLIENT"
  else echo docker >"$CLIENT"; say "docker buildx is missing: builds may fail (install the buildx plugin)"
  fi
  say "building with $(cat "$CLIENT")"
}

stop() {
  [ -f "$PIDFILE" ] || { say "no dockerd started by this script"; return 0; }
  pid=$(cat "$PIDFILE")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    say "stopped dockerd (pid $pid)"
  fi
  rm -f "$PIDFILE"
}

"${1:?usage: engine.sh start|stop}"
