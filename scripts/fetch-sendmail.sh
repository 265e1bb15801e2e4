#!/usr/bin/env bash
# Unpack Debian's sendmail into a cache directory for the test suites,
# without installing it: sendmail-bin conflicts with the postfix package
# the other suites need. The tests run it from there, in their own
# namespaces (tests/src/sendmail.rs). Idempotent; run as root.
#
#   scripts/fetch-sendmail.sh [CACHE_DIR]     (default /var/cache/mx6gate-test/sendmail)
#
# Leaves CACHE_DIR/root (the unpacked packages) and CACHE_DIR/VERSION.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

cache=${1:-/var/cache/mx6gate-test/sendmail}
pkgs=(sendmail-bin sendmail-base sendmail-cf m4)
mkdir -p "$cache"
# Suites run in parallel: one fetch at a time.
exec 9>"$cache/.lock"
flock 9

# The version apt would install now: a security update refreshes the cache.
want=$(apt-cache policy sendmail-bin | awk '/Candidate:/ {print $2}')
if [[ -z $want || $want == "(none)" ]]; then
  apt-get update -qq
  want=$(apt-cache policy sendmail-bin | awk '/Candidate:/ {print $2}')
fi
if [[ -f $cache/VERSION && $(cat "$cache/VERSION") == "$want" && -x $cache/root/usr/libexec/sendmail/sendmail ]]; then
  exit 0
fi

# The one shared library sendmail needs that the machine may lack.
dpkg-query -W -f='${Status}' libwrap0 2>/dev/null | grep -q "install ok installed" ||
  apt-get install -y -qq --no-install-recommends libwrap0

tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# apt-get download writes into the current directory; _apt cannot write
# into a root-only mktemp dir, so it fetches unsandboxed (a warning).
(cd "$tmp" && apt-get download -qq "${pkgs[@]}" 2>&1 | grep -v "unsandboxed" || true)
for p in "${pkgs[@]}"; do
  ls "$tmp"/"${p}"_*.deb >/dev/null
done
mkdir "$tmp/root"
for deb in "$tmp"/*.deb; do
  dpkg-deb -x "$deb" "$tmp/root"
done
rm -rf "$cache/root"
mv "$tmp/root" "$cache/root"
echo "$want" >"$cache/VERSION"
echo "sendmail $want unpacked into $cache/root"
