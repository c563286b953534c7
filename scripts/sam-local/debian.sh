# Sourced by base-image.sh and python313.sh. Debian packages of another release or architecture,
# unpacked into a folder without installing them on this machine.
#
# fetch_debs DEB_ARCH DEST WORKDIR PACKAGE...: the packages and all their dependencies, unpacked
# into DEST with dpkg-deb (no maintainer script runs, so a foreign architecture costs nothing
# extra). A private apt in WORKDIR: its own lists, an empty dpkg status (so every dependency is
# fetched), that architecture only, nothing from this machine's apt configuration. Prints the
# versions fetched, one `name_version` a line, into WORKDIR/versions.
# Uses DEBIAN_MIRROR (default http://deb.debian.org/debian) and SUITE (default trixie).

DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=${SUITE:-trixie}

fetch_debs() {
  local arch=$1 dest=$2 apt=$3; shift 3
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
    || { echo "apt-get and dpkg-deb are needed to unpack Debian packages (Debian/Ubuntu only)" >&2; return 1; }
  mkdir -p "$apt/etc/apt/preferences.d" "$apt/etc/apt/apt.conf.d" "$apt/var/lib/apt/lists/partial" \
    "$apt/var/cache/apt/archives/partial" "$apt/var/lib/dpkg" "$dest"
  touch "$apt/var/lib/dpkg/status"
  echo "deb [arch=$arch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $DEBIAN_MIRROR $SUITE main" \
    > "$apt/etc/apt/sources.list"
  local opts=(-o "Dir=$apt" -o "Dir::State::status=$apt/var/lib/dpkg/status" -o "Dir::Etc::trusted=/dev/null"
    -o "Dir::Etc::TrustedParts=/etc/apt/trusted.gpg.d" -o "APT::Architecture=$arch" -o "APT::Architectures=$arch"
    -o "APT::Install-Recommends=0" -o "Debug::NoLocking=1" -q)
  if ! apt-get "${opts[@]}" update >"$apt/apt.log" 2>&1; then
    cat "$apt/apt.log" >&2; echo "apt-get update of $DEBIAN_MIRROR $SUITE ($arch) failed" >&2; return 1
  fi
  if ! apt-get "${opts[@]}" install -y --download-only "$@" >>"$apt/apt.log" 2>&1; then
    cat "$apt/apt.log" >&2; echo "could not download $* for $arch from $DEBIAN_MIRROR $SUITE" >&2; return 1
  fi
  local deb
  for deb in "$apt"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$dest" || return 1; done
  (cd "$apt/var/cache/apt/archives" && ls *.deb | sed 's/_[^_]*$//') > "$apt/versions"
}
