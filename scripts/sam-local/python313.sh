#!/usr/bin/env bash
# Prints the path of a Python 3.13 that runs on this machine (its last line of output), for
# bytecode: `python3.13` on PATH when it is one, else Debian trixie's python3.13 for this
# machine's architecture, unpacked once into .local/sam-local/python3.13 and run through its own
# loader and libraries (this machine's glibc may be older than trixie's).
#
# Bytecode is the same on every architecture, so this compiles the arm64 base image and layers at
# native speed; the layer Makefiles take it as BYTECODE_PYTHON. Without bytecode, every fresh
# `sam local invoke` container compiles the layers again, and under emulation that costs more
# than half of a cold start.
set -euo pipefail

if python3.13 -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1; then
  python3.13 -c 'import sys; print(sys.executable)'
  exit 0
fi

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
STATE_DIR=${SAM_LOCAL_STATE_DIR:-$ROOT/.local/sam-local}
DEST=$STATE_DIR/python3.13
PYTHON=$DEST/bin/python3.13
. "$HERE/debian.sh"

if [ -x "$PYTHON" ] && "$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1; then
  echo "$PYTHON"
  exit 0
fi

ARCH=$(dpkg --print-architecture 2>/dev/null) || { echo "python313: no dpkg here to fetch Debian's python3.13" >&2; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/killstream-python313.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "python3.13: fetching Debian $SUITE's python3.13 ($ARCH) into ${DEST#$ROOT/}" >&2
fetch_debs "$ARCH" "$WORK/root" "$WORK/apt" python3.13-minimal libpython3.13-stdlib >&2
loader=$(cd "$WORK/root" && ls usr/lib/*-linux-gnu/ld-linux*.so.* | head -1)
[ -n "$loader" ] || { echo "python313: no dynamic loader in the unpacked libc6" >&2; exit 1; }
mkdir -p "$WORK/root/bin"
cat > "$WORK/root/bin/python3.13" <<EOF
#!/bin/sh
# Debian $SUITE's python3.13, started by its own loader with its own libraries.
here=\$(cd "\$(dirname "\$0")/.." && pwd)
export PYTHONHOME="\$here/usr" KILLSTREAM_PYTHON313="\$here/bin/python3.13"
exec "\$here/$loader" --library-path "\$here/$(dirname "$loader")" "\$here/usr/bin/python3.13" "\$@"
EOF
chmod 755 "$WORK/root/bin/python3.13"
# Child interpreters (compileall -j0, multiprocessing) start sys.executable: make it the wrapper.
rm -f "$WORK/root/usr/lib/python3.13/sitecustomize.py"
cat > "$WORK/root/usr/lib/python3.13/sitecustomize.py" <<'EOF'
import os
import sys

if os.environ.get("KILLSTREAM_PYTHON313"):
    sys.executable = sys._base_executable = os.environ["KILLSTREAM_PYTHON313"]
EOF
rm -rf "$DEST"
mkdir -p "$STATE_DIR"
mv "$WORK/root" "$DEST"
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 13)' || { echo "python313: $PYTHON does not start" >&2; exit 1; }
echo "$PYTHON"
