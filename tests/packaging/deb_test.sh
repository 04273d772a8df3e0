#!/usr/bin/env bash
# Builds tally_VERSION_amd64.deb with CPack from an already built tree (the
# same as `cmake --build build --target package`, minus rebuilding every
# target) into a temporary directory, and checks what is in it: the binaries,
# the systemd unit, /etc/tally/tallyd.conf as a conffile, the rules directory,
# the control fields; then lintian, whose only accepted findings are the ones
# docs/OPERATIONS.md ("Install") explains.
#   deb_test.sh CPACK BUILD_DIR VERSION
set -euo pipefail
cpack=$1 build=$2 version=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

(cd "$build" && "$cpack" -G DEB -B "$tmp" >"$tmp/cpack.log" 2>&1) || { cat "$tmp/cpack.log"; fail cpack; }
deb="$tmp/tally_${version}_amd64.deb"
[[ -f $deb ]] || fail "no $deb: $(ls "$tmp")"

contents=$(dpkg-deb -c "$deb")
echo "$contents"
for path in ./usr/bin/tallyd ./usr/bin/tally ./usr/lib/systemd/system/tallyd.service \
            ./etc/tally/tallyd.conf ./etc/tally/rules/ ./usr/share/doc/tally/copyright \
            ./usr/share/doc/tally/changelog.gz ./usr/share/man/man8/tallyd.8.gz \
            ./usr/share/man/man1/tally.1.gz; do
  grep -qE " ${path//./\\.}\$" <<<"$contents" || fail "missing $path"
done
grep -qE '^-rwxr-xr-x root/root .* \./usr/bin/tallyd$' <<<"$contents" || fail "tallyd mode/owner"

info=$(dpkg-deb -I "$deb")
echo "$info"
grep -q '^ Package: tally$' <<<"$info" || fail "Package"
grep -q "^ Version: ${version}\$" <<<"$info" || fail "Version"
grep -q '^ Architecture: amd64$' <<<"$info" || fail "Architecture"
grep -qE '^ Depends: .*libc6' <<<"$info" || fail "Depends (shlibdeps)"
grep -qE '^ Depends: .*libsystemd0' <<<"$info" || fail "Depends on libsystemd0"
[[ $(dpkg-deb -I "$deb" conffiles) == /etc/tally/tallyd.conf ]] || fail "conffiles"

# The unit and config in the package are the ones in the tree.
mkdir "$tmp/x" && dpkg-deb -x "$deb" "$tmp/x"
src=$(dirname "$0")/../..
cmp "$tmp/x/usr/lib/systemd/system/tallyd.service" "$src/packaging/tallyd.service" || fail unit
cmp "$tmp/x/etc/tally/tallyd.conf" "$src/packaging/tallyd.conf.example" || fail conf
"$tmp/x/usr/bin/tallyd" --version | grep -q "^tallyd ${version}\$" || fail "packaged tallyd --version"
"$tmp/x/usr/bin/tallyd" --config "$tmp/x/etc/tally/tallyd.conf" --check-config || fail "shipped config"

if command -v lintian >/dev/null; then
  findings=$(lintian --allow-root "$deb" 2>&1 | grep -E '^[EW]: ' || true)
  echo "lintian: ${findings:-clean}"
  unexplained=$findings
  [[ -z $unexplained ]] || fail "lintian findings not explained in docs/OPERATIONS.md: $unexplained"
else
  echo "lintian not installed: skipped (scripts/install-deps.sh installs it)"
fi
echo PASS
