#!/usr/bin/env bash
# Builds the Debian package target/debian/sbc-sidecar_<version>_<arch>.deb with plain dpkg-deb
# (no debhelper): sbc-sidecar and sbcctl (stripped), their man pages, the systemd unit, the
# /etc/default conffile, copyright, changelog, crate notices and lintian overrides.
#
# The version is the top entry of packaging/debian/changelog (e.g. 0.1.0-1); its upstream
# part must equal the version in Cargo.toml. Needs cargo, gzip, dpkg-dev and python3 (the last two
# installed when missing, with sudo when not root). Prints the path of the .deb on stdout; progress
# goes to stderr.
#
# Environment: CARGO (default cargo); SBC_DEB_NO_CARGO_BUILD=1 packages the binaries already
# in target/release without running cargo build.
#
# The cargo build is the one `cargo build --release` does (the daemon's package only, nothing
# added to its environment), so that neither rebuilds what the other built: SOURCE_DATE_EPOCH,
# which ring's build script watches, is exported only after it, for the packaging steps.
set -euo pipefail
umask 022
export LC_ALL=C

cd "$(dirname "$0")/.."
top=$PWD
pkg=sbc-sidecar
src=$top/packaging
out=$top/target/debian
root=$out/root

say() { echo "build-deb: $*" >&2; }
die() {
	echo "build-deb: error: $*" >&2
	exit 1
}
as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# --- tools --------------------------------------------------------------------------------
missing=()
command -v dpkg-shlibdeps >/dev/null 2>&1 && command -v strip >/dev/null 2>&1 || missing+=(dpkg-dev)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
	say "installing ${missing[*]}"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
		{ as_root apt-get update >&2 && as_root env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends "${missing[@]}" >&2; } ||
		die "cannot install ${missing[*]}"
fi
for tool in dpkg-deb dpkg-shlibdeps strip gzip python3 rustc; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done

# --- version ------------------------------------------------------------------------------
upstream=$(awk '/^\[/ { section = $0 } section == "[package]" && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' Cargo.toml)
[ -n "$upstream" ] || die "no version in Cargo.toml"
changelog_head=$(head -n 1 "$src/debian/changelog")
version=$(sed -n '1s/^[a-z0-9.+-]* (\([^)]*\)).*/\1/p' "$src/debian/changelog")
[ -n "$version" ] || die "cannot read the version from packaging/debian/changelog: $changelog_head"
if [ "${version%-*}" != "$upstream" ] || [ "${version%-*}" = "$version" ]; then
	die "packaging/debian/changelog is at $version, Cargo.toml at $upstream: add a changelog entry $upstream-1"
fi
for page in man/sbc-sidecar.8 man/sbcctl.8; do
	grep -q "^\.TH .* \"sbc-sidecar $upstream\" " "$page" ||
		die "$page: the .TH line does not name version $upstream (update its version and date)"
done
trailer=$(grep -m 1 '^ -- ' "$src/debian/changelog")
maintainer=$(printf '%s\n' "$trailer" | sed 's/^ -- \(.*>\)  .*/\1/')
changelog_date=$(printf '%s\n' "$trailer" | sed 's/^ -- .*>  //')
source_date_epoch=$(date -d "$changelog_date" +%s) || die "bad date in the changelog trailer: $changelog_date"
arch=$(dpkg --print-architecture)

# --- binaries -----------------------------------------------------------------------------
if [ "${SBC_DEB_NO_CARGO_BUILD:-0}" != 1 ]; then
	say "cargo build --release -p $pkg --bins"
	"${CARGO:-cargo}" build --release -p "$pkg" --bins >&2 || die "cargo build failed"
fi
for bin in sbc-sidecar sbcctl; do
	[ -x "target/release/$bin" ] || die "target/release/$bin is missing (run: cargo build --release -p $pkg --bins)"
done

# Same timestamps (and dpkg-deb member dates) on every build of one changelog entry.
export SOURCE_DATE_EPOCH=$source_date_epoch

# --- file tree ----------------------------------------------------------------------------
say "staging $pkg $version ($arch) in $root"
rm -rf "$root"
install -d -m 0755 "$root/DEBIAN" "$root/usr/sbin" "$root/usr/bin" "$root/usr/share/man/man8" \
	"$root/lib/systemd/system" "$root/etc/default" "$root/usr/share/doc/$pkg" \
	"$root/usr/share/lintian/overrides"

# Stripped as dh_strip does; the test tools (package sbc-test-tools) are never packaged.
strip --remove-section=.comment --remove-section=.note -o "$root/usr/sbin/sbc-sidecar" target/release/sbc-sidecar
strip --remove-section=.comment --remove-section=.note -o "$root/usr/bin/sbcctl" target/release/sbcctl
chmod 0755 "$root/usr/sbin/sbc-sidecar" "$root/usr/bin/sbcctl"

for page in sbc-sidecar.8 sbcctl.8; do
	gzip -9n <"man/$page" >"$root/usr/share/man/man8/$page.gz"
done
install -m 0644 "$src/sbc-sidecar.service" "$root/lib/systemd/system/sbc-sidecar.service"
# It holds passwords and secrets: readable by root only (systemd reads it before dropping
# privileges).
install -m 0600 "$src/default/sbc-sidecar" "$root/etc/default/sbc-sidecar"
install -m 0644 "$src/debian/copyright" "$root/usr/share/doc/$pkg/copyright"
gzip -9n <"$src/debian/changelog" >"$root/usr/share/doc/$pkg/changelog.Debian.gz"
install -m 0644 "$src/lintian-overrides" "$root/usr/share/lintian/overrides/$pkg"

# Names, versions, licenses and license/notice files of the crates linked into the binaries.
say "collecting the licenses of the linked crates"
host=$(rustc -vV | sed -n 's/^host: //p')
"${CARGO:-cargo}" metadata --format-version 1 --offline --filter-platform "$host" --manifest-path Cargo.toml \
	>"$out/metadata.json" || die "cargo metadata failed"
python3 - "$pkg" "$version" "$out/metadata.json" >"$out/rust-crates.txt" <<'PYTHON' || die "cannot list the crates"
import hashlib, json, os, re, sys

pkg, version, metadata = sys.argv[1:4]
with open(metadata, encoding="utf-8") as fh:
    meta = json.load(fh)
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
root = next(p["id"] for p in meta["packages"] if p["name"] == pkg and p["source"] is None)

# Normal (not dev, not build) dependencies reachable from the package: what is linked in.
seen, todo = set(), [root]
while todo:
    node = todo.pop()
    if node in seen:
        continue
    seen.add(node)
    for dep in nodes[node]["deps"]:
        if any(kind["kind"] is None for kind in dep["dep_kinds"]):
            todo.append(dep["pkg"])
seen.discard(root)
crates = sorted((packages[i] for i in seen), key=lambda p: (p["name"], p["version"]))

name_re = re.compile(r"^(licen[cs]e|copying|copyright|notice|unlicense)([-._].*)?$", re.I)
texts = {}  # sha256 -> (text, [crate file, ...])
for crate in crates:
    folder = os.path.dirname(crate["manifest_path"])
    files = sorted(f for f in os.listdir(folder) if name_re.match(f) and os.path.isfile(os.path.join(folder, f)))
    if crate.get("license_file"):
        files = sorted(set(files) | {crate["license_file"]})
    crate["files"] = files
    for f in files:
        with open(os.path.join(folder, f), encoding="utf-8", errors="replace") as fh:
            text = fh.read().strip("\n")
        digest = hashlib.sha256(text.encode()).hexdigest()
        texts.setdefault(digest, (text, []))[1].append(f"{crate['name']} {crate['version']}: {f}")

print(f"Rust crates linked into sbc-sidecar and sbcctl {version}")
print("(generated from Cargo.lock by packaging/build-deb.sh)")
print()
width = max(len(c["name"]) for c in crates)
for c in crates:
    note = "" if c["files"] else "   (the crate ships no license file)"
    print(f"{c['name']:<{width}}  {c['version']:<10}  {c.get('license') or 'unknown'}{note}")
print()
print("License and notice files shipped by these crates (each distinct text once):")
for text, owners in texts.values():
    print()
    print("=" * 78)
    for owner in owners:
        print(owner)
    print("-" * 78)
    print(text)
PYTHON
gzip -9n <"$out/rust-crates.txt" >"$root/usr/share/doc/$pkg/rust-crates.txt.gz"

# --- control data -------------------------------------------------------------------------
install -m 0755 "$src/debian/postinst" "$src/debian/prerm" "$src/debian/postrm" "$root/DEBIAN/"
echo /etc/default/sbc-sidecar >"$root/DEBIAN/conffiles"
chmod 0644 "$root/DEBIAN/conffiles"

# Depends as ${shlibs:Depends}: dpkg-shlibdeps in a scratch source tree, else objdump.
shlibs_dir=$out/shlibs
rm -rf "$shlibs_dir"
mkdir -p "$shlibs_dir/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$pkg" "$pkg" >"$shlibs_dir/debian/control"
if depends=$(cd "$shlibs_dir" && dpkg-shlibdeps -O "$root/usr/sbin/sbc-sidecar" "$root/usr/bin/sbcctl" 2>"$out/dpkg-shlibdeps.log") &&
	depends=$(printf '%s\n' "$depends" | sed -n 's/^shlibs:Depends=//p') && [ -n "$depends" ]; then
	say "Depends (dpkg-shlibdeps): $depends"
else
	sed 's/^/build-deb: dpkg-shlibdeps: /' "$out/dpkg-shlibdeps.log" >&2 || true
	glibc=$(objdump -T "$root/usr/sbin/sbc-sidecar" "$root/usr/bin/sbcctl" | grep -o 'GLIBC_[0-9.]*' |
		sed 's/GLIBC_//' | sort -u -V | tail -n 1)
	[ -n "$glibc" ] || die "cannot tell which glibc the binaries need"
	depends="libc6 (>= $glibc)"
	if objdump -p "$root/usr/sbin/sbc-sidecar" "$root/usr/bin/sbcctl" | grep -q 'NEEDED *libgcc_s\.so\.1'; then
		depends="$depends, libgcc-s1"
	fi
	say "Depends (objdump): $depends"
fi

# Installed-Size as dpkg-gencontrol computes it: KiB rounded up per file, 1 per other entry.
installed_size=$(cd "$root" && find . -path ./DEBIAN -prune -o -mindepth 1 -printf '%y %s\n' |
	awk '$1 == "f" { kib += int(($2 + 1023) / 1024); next } { kib += 1 } END { print kib }')

sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
	-e "s|@INSTALLED_SIZE@|$installed_size|" -e "s|@DEPENDS@|$depends|" \
	"$src/debian/control" >"$root/DEBIAN/control"
if grep -q '@[A-Z_]*@' "$root/DEBIAN/control"; then
	die "unreplaced placeholder in DEBIAN/control"
fi

(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | grep -vxF -f <(sed 's|^/||' DEBIAN/conffiles) |
	sort | xargs md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

# Same timestamps on every build of one changelog entry.
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

# --- package ------------------------------------------------------------------------------
deb=$out/${pkg}_${version}_${arch}.deb
rm -f "$deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
rm -rf "$shlibs_dir" "$out/metadata.json" "$out/dpkg-shlibdeps.log" "$out/rust-crates.txt"
say "built $deb"
echo "$deb"
