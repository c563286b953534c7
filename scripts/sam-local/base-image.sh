#!/usr/bin/env bash
# Builds a stand-in for AWS's Python 3.13 Lambda base image and imports it into podman under the
# name `sam local invoke` looks for (public.ecr.aws/lambda/python:3.13-<arch>), for machines
# that cannot pull it. Run with --skip-pull-image so SAM uses it as it is.
#
#   scripts/sam-local/base-image.sh arm64|x86_64
#
# What is inside, and why:
#   - Debian trixie's python3.13 (the Lambda runtime's minor version), libstdc++ (for awslambdaric's
#     C++ runtime client), dash and coreutils, unpacked from the .deb files with dpkg-deb
#     (debian.sh). Nothing is configured or executed while unpacking, so an arm64 image builds at
#     native speed on an x86_64 machine. SAM's own image build on top of this one (ADD the runtime
#     interface emulator, RUN mv/chmod/cp for the layers) needs /bin/sh and coreutils; the
#     functions need Python, its standard library, OpenSSL and a CA bundle.
#   - /var/runtime: AWS's runtime interface client (awslambdaric, from PyPI) and boto3/botocore at
#     the versions requirements-dev.txt pins. Lambda's python3.13 provides boto3; the layers don't
#     ship it.
#   - /var/runtime/bootstrap: what the runtime interface emulator (SAM adds it as
#     /var/rapid/aws-lambda-rie, the container's entrypoint) starts. It runs `python3.13 -m
#     awslambdaric $_HANDLER` with Lambda's sys.path order: /var/task, the layers under
#     /opt/python, /var/runtime.
#   - bytecode for all of the above, compiled at native speed (python313.sh), because every
#     `sam local invoke` starts a fresh container.
#
# Idempotent: an image whose recipe label matches this script's recipe is kept as it is.
# Needs: podman, apt-get and dpkg-deb (Debian/Ubuntu), a Python with pip (PYTHON, default the
# project's .venv), and for a foreign architecture binfmt emulation (qemu-user-static, which
# engine.sh sets up). Variables: DEBIAN_MIRROR, SUITE (default trixie), AWSLAMBDARIC_VERSION,
# FORCE=1 to rebuild.
set -euo pipefail

ARCH=${1:?usage: $0 arm64|x86_64}
case "$ARCH" in
  arm64) DEB_ARCH=arm64; GNU_ARCH=aarch64; PLATFORMS="manylinux_2_28_aarch64 manylinux_2_17_aarch64 manylinux2014_aarch64" ;;
  x86_64) DEB_ARCH=amd64; GNU_ARCH=x86_64; PLATFORMS="manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64" ;;
  *) echo "base-image: architecture must be arm64 or x86_64, not '$ARCH'" >&2; exit 2 ;;
esac

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
. "$HERE/debian.sh"
AWSLAMBDARIC_VERSION=${AWSLAMBDARIC_VERSION:-4.2.2}
PACKAGES="python3.13 libstdc++6 dash coreutils ca-certificates"
IMAGE=public.ecr.aws/lambda/python:3.13-$ARCH

pin() { sed -n "s/^$1==\([^ ;#]*\).*/\1/p" "$ROOT/requirements-dev.txt"; }
BOTO3=$(pin boto3); BOTOCORE=$(pin botocore)
[ -n "$BOTO3" ] && [ -n "$BOTOCORE" ] || { echo "base-image: boto3/botocore pins not found in requirements-dev.txt" >&2; exit 1; }

fail() { echo "base-image: $*" >&2; exit 1; }
command -v podman >/dev/null || fail "podman is not installed (scripts/sam-local/engine.sh installs it)"
[ -x "$PYTHON" ] || fail "no Python at $PYTHON (run make venv, or set PYTHON)"

RECIPE=$( { cat "$0" "$HERE/debian.sh"; echo "$ARCH $SUITE $PACKAGES $AWSLAMBDARIC_VERSION $BOTO3 $BOTOCORE"; } | sha256sum | cut -c1-16)
if [ "${FORCE:-0}" != 1 ] && [ "$(podman image inspect --format '{{ index .Labels "killstream.recipe" }}' "$IMAGE" 2>/dev/null)" = "$RECIPE" ]; then
  echo "base image: $IMAGE is ready (recipe $RECIPE)"
  exit 0
fi

# A foreign architecture runs through binfmt_misc (qemu-user-static): the import check below and
# SAM's own RUN steps need it.
if [ "$(uname -m)" != "$GNU_ARCH" ] && [ ! -e "/proc/sys/fs/binfmt_misc/qemu-$GNU_ARCH" ]; then
  fail "this $(uname -m) machine cannot run $ARCH programs: no /proc/sys/fs/binfmt_misc/qemu-$GNU_ARCH (scripts/sam-local/engine.sh sets it up where the kernel allows)"
fi

started=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/killstream-base-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOTFS=$WORK/rootfs

echo "base image: fetching Debian $SUITE ($DEB_ARCH): $PACKAGES"
fetch_debs "$DEB_ARCH" "$ROOTFS" "$WORK/apt" $PACKAGES || fail "could not fetch Debian's $PACKAGES ($DEB_ARCH)"
versions=$(grep '^python3.13_' "$WORK/apt/versions")

# What dpkg's maintainer scripts would have done, as far as this image needs it: merged /usr,
# the CA bundle, accounts, the directories Lambda has.
cd "$ROOTFS"
for dir in bin sbin lib; do [ -e "$dir" ] || ln -s "usr/$dir" "$dir"; done
[ "$ARCH" = x86_64 ] && { [ -e lib64 ] || ln -s usr/lib64 lib64; }
mkdir -p etc/ssl/certs tmp root var/task var/runtime var/lang/bin opt var/rapid
chmod 1777 tmp
find usr/share/ca-certificates -name '*.crt' -print0 | sort -z | xargs -0 cat > etc/ssl/certs/ca-certificates.crt
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' > etc/passwd
printf 'root:x:0:\nnogroup:x:65534:\n' > etc/group
ln -sf /usr/bin/python3.13 var/lang/bin/python3.13
ln -sf python3.13 var/lang/bin/python3
ln -sf python3.13 var/lang/bin/python

echo "base image: awslambdaric $AWSLAMBDARIC_VERSION, boto3 $BOTO3, botocore $BOTOCORE (PyPI, $ARCH wheels) -> /var/runtime"
platform_args=(); for p in $PLATFORMS; do platform_args+=(--platform "$p"); done
"$PYTHON" -m pip install -q --disable-pip-version-check --no-compile --target "$ROOTFS/var/runtime" \
  --implementation cp --python-version 3.13 --abi cp313 --abi abi3 --abi none "${platform_args[@]}" --only-binary=:all: \
  "awslambdaric==$AWSLAMBDARIC_VERSION" "boto3==$BOTO3" "botocore==$BOTOCORE" \
  2> >(grep -v "^WARNING: Location '" >&2) || fail "pip could not get awslambdaric/boto3 wheels for $ARCH"
rm -rf "$ROOTFS/var/runtime/bin"

cat > var/runtime/bootstrap <<'EOF'
#!/bin/sh
# Started by the runtime interface emulator; the handler comes in $_HANDLER (set from the function's Handler).
export PYTHONPATH=/var/task:/opt/python/lib/python3.13/site-packages:/opt/python:/var/runtime
export AWS_EXECUTION_ENV=AWS_Lambda_python3.13
exec /usr/bin/python3.13 -m awslambdaric "$_HANDLER"
EOF
chmod 755 var/runtime/bootstrap
# The image's entrypoint outside SAM (`podman run IMAGE app.handler` with the emulator mounted),
# as AWS's images have it; SAM sets its own entrypoint.
cat > lambda-entrypoint.sh <<'EOF'
#!/bin/sh
export _HANDLER="${_HANDLER:-$1}"
if [ -z "${AWS_LAMBDA_RUNTIME_API:-}" ] && [ -x /var/rapid/aws-lambda-rie ]; then exec /var/rapid/aws-lambda-rie /var/runtime/bootstrap; fi
exec /var/runtime/bootstrap
EOF
chmod 755 lambda-entrypoint.sh

# Bytecode is the same on every architecture: a foreign image's is compiled by a python3.13 for
# this machine (python313.sh), at native speed. Without it every fresh container would compile the
# standard library and boto3 again, emulated.
COMPILER=$("$HERE/python313.sh" | tail -1) || fail "no Python 3.13 for this machine to compile the image's bytecode"
echo "base image: compiling bytecode ($COMPILER)"
"$COMPILER" -m compileall -q -j0 --invalidation-mode unchecked-hash -s "$ROOTFS" -p / \
  "$ROOTFS/usr/lib/python3.13" "$ROOTFS/var/runtime" >/dev/null || fail "compiling the image's bytecode failed"
# The image's own interpreter, once (emulated for a foreign architecture): it starts and imports
# the runtime's pieces.
chroot "$ROOTFS" /usr/bin/env PYTHONPATH=/var/runtime /usr/bin/python3.13 -c 'import awslambdaric, runtime_client, boto3, ssl, sqlite3' \
  || fail "the image's python3.13 cannot import awslambdaric/boto3/ssl: chroot $ROOTFS /usr/bin/python3.13 failed"

cd "$WORK"
tar --numeric-owner -C "$ROOTFS" -cf rootfs.tar .
podman import -q --arch "$DEB_ARCH" --os linux \
  --change 'WORKDIR /var/task' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV TZ=:/etc/localtime' \
  --change 'ENV PATH=/var/lang/bin:/usr/local/bin:/usr/bin:/bin:/opt/bin' \
  --change 'ENV LD_LIBRARY_PATH=/var/lang/lib:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib' \
  --change 'ENV LAMBDA_TASK_ROOT=/var/task' \
  --change 'ENV LAMBDA_RUNTIME_DIR=/var/runtime' \
  --change 'ENTRYPOINT ["/lambda-entrypoint.sh"]' \
  --change "LABEL killstream.recipe=$RECIPE" \
  --change "LABEL killstream.contents=\"$versions, awslambdaric $AWSLAMBDARIC_VERSION, boto3 $BOTO3\"" \
  rootfs.tar "$IMAGE" >/dev/null
echo "base image: $IMAGE imported ($(du -sh "$ROOTFS" | cut -f1) unpacked; $versions) in $(( $(date +%s) - started )) s"
