#!/usr/bin/env bash
# Makes a Docker-compatible container engine answer for `sam local invoke` on a machine without
# Docker: Debian's podman, serving the Docker API on a socket of its own (`podman system service`),
# which SAM CLI reaches through DOCKER_HOST. Also sets up arm64 emulation (qemu-user-static
# through binfmt_misc) where the kernel allows it.
#
#   scripts/sam-local/engine.sh        # the last line printed is DOCKER_HOST=unix://…
#
# Idempotent: installs only what is missing, starts the service only when its socket does not
# answer. The service stops by itself after SERVICE_IDLE_SECONDS (default 600) without a request.
# What this engine needs here, and why (each found by trying):
#   - runc, not crun: crun refuses cgroup v1/v2 hybrid hierarchies ("cgroups in hybrid mode not
#     supported"), which some machines have; runc works on v1, v2 and hybrid alike.
#   - nofile/nproc limits of 1024, Lambda's own: podman's defaults are higher than the hard limits a
#     sandbox or a container grants, and raising a limit then fails ("setrlimit RLIMIT_NOFILE:
#     Operation not permitted").
#   - cgroupfs and a file events log: no systemd is needed.
# The settings live in a containers.conf of this project (STATE_DIR), read by this service only;
# the machine's own podman configuration is left alone.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
STATE_DIR=${SAM_LOCAL_STATE_DIR:-$ROOT/.local/sam-local}
SERVICE_IDLE_SECONDS=${SERVICE_IDLE_SECONDS:-600}
mkdir -p "$STATE_DIR"
SOCKET=$STATE_DIR/podman.sock
# A unix socket path must fit in 108 bytes.
if [ ${#SOCKET} -gt 100 ]; then
  SOCKET=${XDG_RUNTIME_DIR:-/tmp}/killstream-sam-local-$(id -u)/podman.sock
  mkdir -p "$(dirname "$SOCKET")"; chmod 700 "$(dirname "$SOCKET")"
fi
say() { echo "engine: $*"; }
fail() { echo "engine: $*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

# ------------------------------------------------------------------ packages
missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || [ -x /usr/sbin/runc ] || missing+=(runc)
[ "$(uname -m)" = aarch64 ] || [ -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ] || [ -x /usr/bin/qemu-aarch64-static ] || missing+=(qemu-user-static)
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && is_root; then
    say "installing Debian's ${missing[*]}…"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || fail "apt-get install ${missing[*]} failed"
  elif ! command -v podman >/dev/null; then
    fail "podman is not installed and cannot be installed here (needs apt-get as root): install podman (and runc), or run Docker and set DOCKER_HOST"
  else
    say "note: ${missing[*]} missing and not installable here (needs apt-get as root)"
  fi
fi
RUNC=$(command -v runc || echo /usr/sbin/runc)

# ------------------------------------------------------------------ arm64 emulation
# The kernel runs aarch64 programs through qemu when binfmt_misc knows the interpreter. The F flag
# (fix binary) of Debian's registration makes it work inside containers and chroots too.
emulation="native"
if [ "$(uname -m)" != aarch64 ]; then
  binfmt=/proc/sys/fs/binfmt_misc
  if [ ! -e "$binfmt/register" ] && is_root; then
    mount -t binfmt_misc binfmt_misc "$binfmt" 2>"$STATE_DIR/binfmt.err" || true
  fi
  if [ ! -e "$binfmt/qemu-aarch64" ] && [ -e "$binfmt/register" ] && [ -f /usr/lib/binfmt.d/qemu-aarch64.conf ] && is_root; then
    grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf > "$binfmt/register" 2>>"$STATE_DIR/binfmt.err" || true
  fi
  if [ -e "$binfmt/qemu-aarch64" ] && grep -q '^enabled' "$binfmt/qemu-aarch64"; then
    emulation="qemu-user-static via binfmt_misc (flags: $(sed -n 's/^flags: //p' "$binfmt/qemu-aarch64"))"
  elif [ ! -e "$binfmt/register" ]; then
    emulation="unavailable: binfmt_misc is not mounted and cannot be ($(cat "$STATE_DIR/binfmt.err" 2>/dev/null || echo 'not root'))"
  else
    emulation="unavailable: no qemu-aarch64 handler registered in binfmt_misc"
  fi
fi
echo "$emulation" > "$STATE_DIR/arm64-emulation"
say "arm64: $emulation"

# ------------------------------------------------------------------ the service
CONF=$STATE_DIR/containers.conf
cat > "$CONF.new" <<EOF
# Written by scripts/sam-local/engine.sh for the podman service that \`make sam-local\` uses.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[engine.runtimes]
runc = ["$RUNC"]
EOF
mv "$CONF.new" "$CONF"

ping() { curl -sf --max-time 3 --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1; }
if ! command -v curl >/dev/null; then
  ping() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.settimeout(3); s.connect(sys.argv[1]); s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n"); sys.exit(0 if b" 200 " in s.recv(64) else 1)' "$SOCKET" 2>/dev/null; }
fi
if ping; then
  say "podman $(podman version --format '{{.Client.Version}}' 2>/dev/null) already serving $SOCKET"
else
  rm -f "$SOCKET"
  say "starting podman $(podman version --format '{{.Client.Version}}' 2>/dev/null) system service on $SOCKET (stops after ${SERVICE_IDLE_SECONDS}s idle)"
  CONTAINERS_CONF=$CONF nohup podman system service --time="$SERVICE_IDLE_SECONDS" "unix://$SOCKET" \
    >"$STATE_DIR/podman-service.log" 2>&1 </dev/null &
  echo $! > "$STATE_DIR/podman-service.pid"
  for _ in $(seq 50); do ping && break; sleep 0.2; done
  ping || { tail -20 "$STATE_DIR/podman-service.log" >&2; fail "podman system service did not answer on $SOCKET"; }
fi
echo "DOCKER_HOST=unix://$SOCKET"
