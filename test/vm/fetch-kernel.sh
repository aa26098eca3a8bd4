#!/usr/bin/env bash
# Downloads (once) and unpacks a Debian kernel that has the ublk driver, for
# the ublk VM tests. Prints the unpacked directory on stdout:
#   $DIR/vmlinuz, $DIR/modules/<ver>/... (the package's lib/modules tree)
#
# Usage: fetch-kernel.sh [6.12|6.1]
#   6.12  bookworm-backports linux-image-*+deb12-amd64 (ublk_drv is a module)
#   6.1   Debian 12's own kernel; its ublk_drv is built out of tree from
#         linux-source-6.1 (Debian's 6.1 config has no ublk at all).
#
# The apt sources here list only bookworm, so a private apt config (sources
# list, state and cache under $OBDFS_VM_CACHE) is used for `apt-get download`;
# nothing is installed on the host and the system apt state is untouched.
# The mirrors are the machine's own: the URIs its apt configuration
# (/etc/apt/sources.list.d/*.sources, /etc/apt/sources.list{,.d/*.list})
# uses for Debian's main archive and its security archive; OBDFS_VM_MIRROR
# and OBDFS_VM_SECURITY_MIRROR override them.
set -euo pipefail
flavour=${1:-6.12}
cache=${OBDFS_VM_CACHE:-/var/cache/obdfs-vm}
log() { echo "fetch-kernel: $*" >&2; }

aptdir=$cache/apt-$flavour
mkdir -p "$aptdir"/{state/lists/partial,cache/archives/partial,etc/preferences.d} "$cache/debs"
case $flavour in
6.12) suites="bookworm-backports" ;;
6.1) suites="bookworm bookworm-updates" ;;
*) log "unknown flavour $flavour (want 6.12 or 6.1)"; exit 2 ;;
esac

# apt_uris prints "URI SUITE" for every enabled deb source of the machine,
# from deb822 files (Types:/URIs:/Suites:/Enabled:) and one-line lists.
apt_uris() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '
      function flush() { if (uris != "" && enabled != "no" && types ~ / deb( |$)/) { n = split(uris, u, " "); m = split(suites, s, " ");
        for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) print u[i], s[j] } uris = ""; suites = ""; enabled = ""; types = "" }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]*#/ { next }
      tolower($1) == "types:" { $1 = ""; types = $0 }
      tolower($1) == "uris:" { $1 = ""; uris = $0 }
      tolower($1) == "suites:" { $1 = ""; suites = $0 }
      tolower($1) == "enabled:" { enabled = tolower($2) }
      END { flush() }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [options] URI SUITE COMPONENT...
    sed -E 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" { print $2, $3 }'
  done
}
# The main archive: the source of a plain bookworm suite; the security
# archive: the source of bookworm-security.
mirror=${OBDFS_VM_MIRROR:-$(apt_uris | awk '$2 ~ /^bookworm(-updates)?$/ { print $1; exit }')}
security=${OBDFS_VM_SECURITY_MIRROR:-$(apt_uris | awk '$2 ~ /^bookworm-security$/ { print $1; exit }')}
[ -n "$mirror" ] || { log "no Debian bookworm source in this machine's apt configuration (set OBDFS_VM_MIRROR)"; exit 1; }
{
  echo "Types: deb"
  echo "URIs: $mirror"
  echo "Suites: $suites"
  echo "Components: main"
  echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
  if [ "$flavour" = 6.1 ] && [ -n "$security" ]; then
    echo
    echo "Types: deb"
    echo "URIs: $security"
    echo "Suites: bookworm-security"
    echo "Components: main"
    echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
  fi
} >"$aptdir/etc/private.sources"
apt_opts=(
  -o "Dir::Etc::SourceList=/dev/null"
  -o "Dir::Etc::SourceParts=$aptdir/etc/srcparts"
  -o "Dir::Etc::Preferences=/dev/null"
  -o "Dir::Etc::PreferencesParts=$aptdir/etc/preferences.d"
  -o "Dir::State=$aptdir/state"
  -o "Dir::Cache=$aptdir/cache"
  -o "APT::Default-Release="
  -o "Debug::NoLocking=1"
)
mkdir -p "$aptdir/etc/srcparts"
cp "$aptdir/etc/private.sources" "$aptdir/etc/srcparts/private.sources"

# Refresh the lists at most once a day.
stamp=$aptdir/state/updated
if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440 2>/dev/null)" ]; then
  log "apt-get update ($suites)"
  apt-get "${apt_opts[@]}" -qq update >&2
  touch "$stamp"
fi

# download PKG...: fetches each .deb into $cache/debs unless present; prints paths.
download() {
  local p
  for p in "$@"; do
    local f
    f=$(ls "$cache/debs/${p}_"*.deb 2>/dev/null | head -1 || true)
    if [ -z "$f" ]; then
      log "apt-get download $p"
      (cd "$cache/debs" && apt-get "${apt_opts[@]}" -qq download "$p" >&2)
      f=$(ls "$cache/debs/${p}_"*.deb | head -1)
    fi
    echo "$f"
  done
}

# The kernel ABI name: the image package the meta package depends on.
if [ "$flavour" = 6.12 ]; then
  kpkg=$(apt-cache "${apt_opts[@]}" depends linux-image-amd64 -t bookworm-backports 2>/dev/null |
    awk '/Depends: linux-image-6\.12/{print $2; exit}')
  [ -n "$kpkg" ] || kpkg=$(apt-cache "${apt_opts[@]}" pkgnames linux-image-6.12 | grep -E '^linux-image-6\.12\.[0-9.]+\+deb12-amd64$' | sort -V | tail -1)
else
  kpkg=$(apt-cache "${apt_opts[@]}" depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-6\.1\./{print $2; exit}')
fi
[ -n "$kpkg" ] || { log "cannot find a linux-image package for $flavour"; exit 1; }
ver=${kpkg#linux-image-}
out=$cache/kernel-$ver
if [ -f "$out/ok" ]; then echo "$out"; exit 0; fi
log "kernel $ver"
rm -rf "$out" "$out.tmp"
mkdir -p "$out.tmp/x"
deb=$(download "$kpkg")
dpkg-deb -x "$deb" "$out.tmp/x"
cp "$out.tmp/x/boot/vmlinuz-$ver" "$out.tmp/vmlinuz"
mkdir -p "$out.tmp/modules"
mv "$out.tmp/x/lib/modules/$ver" "$out.tmp/modules/$ver"

if [ "$flavour" = 6.1 ]; then
  # Build ublk_drv.ko out of tree against the matching headers.
  command -v gcc >/dev/null && command -v make >/dev/null || { log "6.1 needs gcc and make"; exit 1; }
  src=$(download linux-source-6.1)
  hdr=$(download "linux-headers-$ver" "linux-headers-${ver%-amd64}-common" "linux-kbuild-6.1")
  root=$out.tmp/hroot
  mkdir -p "$root"
  for d in $hdr; do dpkg-deb -x "$d" "$root"; done
  # The headers' Makefile includes the common tree by absolute path.
  for f in "$root/usr/src/linux-headers-$ver/Makefile"; do
    sed -i "s#/usr/src/#$root/usr/src/#g" "$f"
  done
  # linux-kbuild's scripts are symlinked by absolute path too.
  (cd "$root/usr/src/linux-headers-$ver" && for l in $(find . -maxdepth 2 -type l); do
    t=$(readlink "$l"); case $t in /usr/*) ln -sfn "$root$t" "$l" ;; esac
  done)
  mkdir -p "$out.tmp/ublkbuild"
  dpkg-deb --fsys-tarfile "$src" | tar -xO ./usr/src/linux-source-6.1.tar.xz |
    tar -xJ -C "$out.tmp/ublkbuild" --strip-components=3 linux-source-6.1/drivers/block/ublk_drv.c
  echo 'obj-m := ublk_drv.o' >"$out.tmp/ublkbuild/Kbuild"
  make -s -C "$root/usr/src/linux-headers-$ver" M="$out.tmp/ublkbuild" modules >&2
  cp "$out.tmp/ublkbuild/ublk_drv.ko" "$out.tmp/ublk_drv.ko"
  rm -rf "$root" "$out.tmp/ublkbuild"
else
  xz -dc "$out.tmp/modules/$ver/kernel/drivers/block/ublk_drv.ko.xz" >"$out.tmp/ublk_drv.ko"
fi
rm -rf "$out.tmp/x"
touch "$out.tmp/ok"
mv "$out.tmp" "$out"
echo "$out"
