#!/bin/sh
# Lays out the container image's whole filesystem in OUT: the bbsync binary, the shared
# libraries it links (the dynamic loader, libc, libm, libgcc_s), the CA bundle, passwd and
# group entries for the unprivileged user, and the directories bbsync reads and writes.
#
# The Dockerfile's builder stage runs it on the binary it built; the container test runs it on
# a binary built on the host and feeds the result to the same Dockerfile (its target
# runtime-from-context), because no base image can be pulled there. One script, so both
# images hold the same files.
#
# OUT/files is the image's whole tree but its one writable directory; OUT/state is that
# directory, empty, copied to /var/lib/bbsync with the runtime user as owner (COPY --chown gives
# a directory it creates that owner; one that came with OUT/files would stay root's).
#
# usage: scripts/rootfs.sh BINARY OUT [CA_BUNDLE]
set -eu

bin=$1
out=$2
ca=${3:-/etc/ssl/certs/ca-certificates.crt}
uid=65532

if [ ! -x "$bin" ]; then
  echo "rootfs.sh: $bin is not an executable" >&2
  exit 2
fi
if [ ! -s "$ca" ]; then
  echo "rootfs.sh: no CA bundle at $ca (Debian: apt-get install ca-certificates)" >&2
  exit 2
fi

rm -rf "$out"
mkdir -p "$out/state"
state=$out/state
out=$out/files
mkdir -p "$out/usr/local/bin" "$out/etc/ssl/certs" "$out/etc/bbsync" \
  "$out/run/secrets/bbsync" "$out/var/lib" "$out/tmp"
cp "$bin" "$out/usr/local/bin/bbsync"
chmod 0755 "$out/usr/local/bin/bbsync"

# Every shared object the binary needs, at the path the loader looks for it (ldd prints
# "name => /path (addr)" for libraries and "/path (addr)" for the loader itself).
ldd "$bin" | awk '/=>/ { if ($3 ~ /^\//) print $3; next } $1 ~ /^\// { print $1 }' |
  while read -r lib; do
    mkdir -p "$out$(dirname "$lib")"
    cp -L "$lib" "$out$lib"
  done
# Debian's loader path /lib64 is a symlink target in merged-/usr layouts: keep the usr copy
# reachable under both names.
if [ -d "$out/usr/lib64" ] && [ ! -e "$out/lib64" ]; then
  ln -s usr/lib64 "$out/lib64"
fi

cp -L "$ca" "$out/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$out/etc/ssl/certs/ca-certificates.crt"

cat >"$out/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
bbsync:x:$uid:$uid:bbsync:/var/lib/bbsync:/sbin/nologin
EOF
cat >"$out/etc/group" <<EOF
root:x:0:
bbsync:x:$uid:
EOF
# glibc's resolver: /etc/hosts first, then DNS (both built into libc since glibc 2.34).
echo "hosts: files dns" >"$out/etc/nsswitch.conf"

chmod 0755 "$out/etc/bbsync" "$out/run/secrets/bbsync" "$out/var/lib" "$state"
chmod 1777 "$out/tmp"
