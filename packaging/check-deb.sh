#!/usr/bin/env bash
# CI check of the Debian package (run after `make test`; needs root or sudo):
#   man pages format without warnings; the package builds (packaging/build-deb.sh) with the
#   expected contents; lintian reports no error and no warning; systemd-analyze verify accepts
#   the unit; dpkg -i installs it; the installed programs, man pages, conffile and unit work;
#   the packaged placeholder secret is refused (exit 78); with a real secret the packaged
#   defaults are a valid configuration, sbcctl finds the packaged socket, SIGTERM
#   stops the daemon cleanly; dpkg --purge removes every file.
# Works in a container without a running systemd. Exits non-zero at the first failed check,
# after a line "check-deb: FAILED: <check>".
#
# Environment: SBC_DEB_NO_CARGO_BUILD=1 packages the binaries already in target/release.
set -uo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.." || exit 1
pkg=sbc-sidecar
work=$(mktemp -d /tmp/check-deb.XXXXXX)
daemon_pid=
trap 'cleanup' EXIT

passed=0
say() { echo "check-deb: $*"; }
ok() {
	passed=$((passed + 1))
	echo "check-deb: ok: $*"
}
fail() {
	echo "check-deb: FAILED: $*" >&2
	exit 1
}
as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}
cleanup() {
	if [ -n "$daemon_pid" ]; then
		as_root kill -KILL "$daemon_pid" 2>/dev/null || true
	fi
	if [ -n "${made_rundir:-}" ]; then
		as_root rm -rf /run/sbc-sidecar || true
	fi
	rm -rf "$work"
}
# A process that runs (not a zombie). Not kill -0: without root, the root daemon (via sudo)
# cannot be signalled to probe it.
alive() {
	[ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"
}
apt_install() {
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" ||
		{ as_root apt-get update && as_root env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends "$@"; }
}

# Files and directories the package installs (absolute paths, no trailing slash).
expected_files=(
	/usr/sbin/sbc-sidecar
	/usr/bin/sbcctl
	/usr/share/man/man8/sbc-sidecar.8.gz
	/usr/share/man/man8/sbcctl.8.gz
	/lib/systemd/system/sbc-sidecar.service
	/etc/default/sbc-sidecar
	/usr/share/doc/sbc-sidecar/copyright
	/usr/share/doc/sbc-sidecar/changelog.Debian.gz
	/usr/share/doc/sbc-sidecar/rust-crates.txt.gz
	/usr/share/lintian/overrides/sbc-sidecar
)

# --- man pages ----------------------------------------------------------------------------
command -v man >/dev/null 2>&1 || apt_install man-db >/dev/null || fail "install man-db"
for page in man/sbc-sidecar.8 man/sbcctl.8; do
	warnings=$(MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$page" 2>&1 >/dev/null)
	[ -z "$warnings" ] || fail "man --warnings $page: $warnings"
done
ok "man pages format without warnings"

# --- build --------------------------------------------------------------------------------
deb=$(bash packaging/build-deb.sh | tail -n 1) || fail "packaging/build-deb.sh"
[ -f "$deb" ] || fail "packaging/build-deb.sh did not produce a .deb ($deb)"
version=$(dpkg-deb -f "$deb" Version)
upstream=${version%-*}
ok "built $deb"

# --- contents -----------------------------------------------------------------------------
dpkg-deb -c "$deb" | awk '{ print $6 }' | sed 's|^\./|/|; s|/$||' | sort >"$work/contents" ||
	fail "dpkg-deb -c $deb"
for f in "${expected_files[@]}"; do
	grep -qxF "$f" "$work/contents" || fail "contents: $f is missing from the package"
done
if grep -q 'drachtio-double' "$work/contents"; then fail "contents: the test binary drachtio-double is packaged"; fi
unexpected=$(grep -v '^$' "$work/contents" |
	while read -r f; do
		case " ${expected_files[*]} " in *" $f "*) continue ;; esac
		# Directories leading to the expected files are fine.
		printf '%s\n' "${expected_files[@]}" | grep -q "^$f/" || echo "$f"
	done)
[ -z "$unexpected" ] || fail "contents: unexpected files in the package: $unexpected"
dpkg-deb -c "$deb" | awk '$6 == "./etc/default/sbc-sidecar" && $1 != "-rw-------" { bad = 1 } END { exit bad }' ||
	fail "contents: /etc/default/sbc-sidecar is not mode 0600"
dpkg-deb -c "$deb" | awk '$2 != "root/root" { bad = 1 } END { exit bad }' || fail "contents: a file not owned by root/root"
dpkg-deb -x "$deb" "$work/x" || fail "dpkg-deb -x $deb"
for bin in usr/sbin/sbc-sidecar usr/bin/sbcctl; do
	if readelf -S "$work/x/$bin" | grep -qE '\.(symtab|debug_[a-z]+|comment)\b'; then
		fail "contents: /$bin is not stripped"
	fi
done
dpkg-deb --ctrl-tarfile "$deb" | tar -t | sed 's|^\./||' | sort >"$work/control-members"
for member in control conffiles md5sums postinst prerm postrm; do
	grep -qxF "$member" "$work/control-members" || fail "control: DEBIAN/$member is missing"
done
[ "$(dpkg-deb -I "$deb" conffiles)" = /etc/default/sbc-sidecar ] || fail "control: conffiles is not /etc/default/sbc-sidecar"
for field in Package Version Architecture Maintainer Installed-Size Depends Section Priority Description; do
	[ -n "$(dpkg-deb -f "$deb" "$field")" ] || fail "control: field $field is missing"
done
[ "$(dpkg-deb -f "$deb" Section)" = net ] || fail "control: Section is not net"
[ "$(dpkg-deb -f "$deb" Priority)" = optional ] || fail "control: Priority is not optional"
dpkg-deb -f "$deb" Depends | grep -qE '(^|, )libc6 \(>= [0-9.]+\)' || fail "control: Depends has no versioned libc6"
[ "$upstream" = "$(awk '/^\[/ { s = $0 } s == "[package]" && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' Cargo.toml)" ] ||
	fail "control: Version $version does not match Cargo.toml"
ok "contents, control data and stripped binaries ($(dpkg-deb -f "$deb" Depends))"

# --- lintian ------------------------------------------------------------------------------
command -v lintian >/dev/null 2>&1 || apt_install lintian >/dev/null || fail "install lintian"
lintian --version
lintian --display-info --tag-display-limit 0 --fail-on error,warning "$deb" >"$work/lintian" 2>&1
lintian_status=$?
sed 's/^/  lintian: /' "$work/lintian"
[ "$lintian_status" = 0 ] || fail "lintian reports errors or warnings (exit $lintian_status)"
ok "lintian: no errors, no warnings ($(grep -c '^I: ' "$work/lintian") info tags)"

# --- systemd-analyze verify, before installation ------------------------------------------
# On a copy whose ExecStart names the packaged binary (it is not installed yet); man pages
# are checked after installation.
sed "s|^ExecStart=/usr/sbin/sbc-sidecar |ExecStart=$work/x/usr/sbin/sbc-sidecar |" \
	packaging/sbc-sidecar.service >"$work/sbc-sidecar.service"
verify() { # unit file, extra options...
	local unit=$1 out status
	shift
	out=$(systemd-analyze verify "$@" "$unit" 2>&1)
	status=$?
	[ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/  systemd-analyze: /'
	[ "$status" = 0 ] || return 1
	# Complaints about other units of this machine are not ours; about this one, they are.
	! printf '%s\n' "$out" | grep -q 'sbc-sidecar'
}
verify "$work/sbc-sidecar.service" --man=no || fail "systemd-analyze verify packaging/sbc-sidecar.service"
ok "systemd-analyze verify packaging/sbc-sidecar.service"
systemd-analyze security --offline=yes "$work/sbc-sidecar.service" 2>/dev/null | tail -n 1 | sed 's/^/  /'

# --- install ------------------------------------------------------------------------------
if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'installed'; then
	say "note: $pkg was already installed; it is replaced by this build and purged at the end"
fi
# --path-include undoes the man/doc exclusions of minimal container images.
as_root dpkg --path-include='/usr/share/man/man8/sbc*' --path-include="/usr/share/doc/$pkg/*" \
	-i "$deb" || fail "dpkg -i $deb"
ok "dpkg -i"

for f in "${expected_files[@]}"; do
	[ -e "$f" ] || fail "installed: $f is missing"
done
[ "$(dpkg-query -W -f='${Status}' "$pkg")" = "install ok installed" ] || fail "installed: dpkg status"
dpkg-query -W -f='${Conffiles}\n' "$pkg" | grep -q '^ /etc/default/sbc-sidecar ' || fail "installed: conffile not registered"
[ "$(stat -c '%a %U %G' /etc/default/sbc-sidecar)" = "600 root root" ] || fail "installed: /etc/default/sbc-sidecar is not 0600 root:root"
got=$(/usr/sbin/sbc-sidecar --version) || fail "/usr/sbin/sbc-sidecar --version exits non-zero"
[ "$got" = "sbc-sidecar $upstream" ] || fail "/usr/sbin/sbc-sidecar --version prints '$got', not 'sbc-sidecar $upstream'"
/usr/sbin/sbc-sidecar --help | grep -q -- '--foreground' || fail "/usr/sbin/sbc-sidecar --help"
/usr/bin/sbcctl --help | grep -q 'fs drain' || fail "/usr/bin/sbcctl --help"
/usr/sbin/sbc-sidecar --no-such-option >/dev/null 2>&1
[ $? = 64 ] || fail "/usr/sbin/sbc-sidecar --no-such-option does not exit 64"
for page in sbc-sidecar sbcctl; do
	[ "$(man -w "$page" 2>/dev/null)" = "/usr/share/man/man8/$page.8.gz" ] || fail "man -w $page"
	man "$page" 2>/dev/null | grep -q 'EXIT STATUS' || fail "man $page does not render"
done
ok "installed: programs run, man -w finds both pages, conffile registered"

verify /lib/systemd/system/sbc-sidecar.service || fail "systemd-analyze verify /lib/systemd/system/sbc-sidecar.service (installed)"
ok "systemd-analyze verify of the installed unit (with its man pages)"
[ -L /etc/systemd/system/multi-user.target.wants/sbc-sidecar.service ] || fail "installed: the unit is not enabled"
ok "unit enabled for multi-user.target"

# The packaged defaults, with a real secret set, must be a configuration the daemon accepts.
# Start it with exactly that
# environment, as the unit does (socket in /run/sbc-sidecar, the unit's RuntimeDirectory,
# created here as systemd would); sbcctl must find that socket without --socket or
# SBC_SOCKET_PATH; SIGTERM must stop the daemon with exit 0 and remove the socket.
# Nothing needs to listen on the configured hosts; sbcctl only reads (status).
rundir=/run/sbc-sidecar
socket=$rundir/sbc-sidecar.sock
made_rundir=
if [ -e "$rundir" ]; then
	say "note: $rundir exists (a running service?); the daemon uses a private socket instead"
	socket_opt=(--socket "$work/ctl.sock")
	socket=$work/ctl.sock
else
	as_root install -d -m 0750 "$rundir" || fail "create $rundir"
	made_rundir=1
	socket_opt=()
fi
grep -qx "SBC_SOCKET_PATH=$rundir/sbc-sidecar.sock" /etc/default/sbc-sidecar ||
	fail "installed: /etc/default/sbc-sidecar does not set SBC_SOCKET_PATH=$rundir/sbc-sidecar.sock"
sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo)
# A fresh install must not start with the placeholder secret of the defaults file (anyone
# could forge nonces with it): exit 78, naming the variable and the file.
# shellcheck disable=SC2016 # expanded by the inner shell
"${sudo[@]}" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin sh -c '
	set -a
	. /etc/default/sbc-sidecar
	set +a
	exec /usr/sbin/sbc-sidecar --foreground --log stderr "$@"
' sh "${socket_opt[@]}" >"$work/placeholder.log" 2>&1
status=$?
if [ "$status" != 78 ] ||
	! grep -q 'ENCRYPTION_SECRET is still the placeholder "change-me" of /etc/default/sbc-sidecar' "$work/placeholder.log"; then
	sed 's/^/  sbc-sidecar: /' "$work/placeholder.log"
	fail "the packaged placeholder ENCRYPTION_SECRET is not refused with exit 78 (exited $status)"
fi
[ -e "$socket" ] && fail "sbc-sidecar refused to start but left its socket $socket"
ok "the packaged placeholder ENCRYPTION_SECRET is refused: exit 78 naming the variable and the file"
# Configured as the postinst tells the operator to: a real secret.
secret=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
as_root sed -i "s/^ENCRYPTION_SECRET=.*/ENCRYPTION_SECRET=$secret/" /etc/default/sbc-sidecar ||
	fail "set ENCRYPTION_SECRET in /etc/default/sbc-sidecar"
# Started directly (not through the as_root function, which would put a subshell between),
# so that $! is the daemon itself: env and sh exec it.
# shellcheck disable=SC2016 # expanded by the inner shell
"${sudo[@]}" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin sh -c '
	set -a
	. /etc/default/sbc-sidecar
	set +a
	exec /usr/sbin/sbc-sidecar --foreground --log stderr "$@"
' sh "${socket_opt[@]}" >"$work/daemon.log" 2>&1 &
daemon_pid=$!
daemon_failed() {
	sed 's/^/  sbc-sidecar: /' "$work/daemon.log"
	fail "$@"
}
for _ in $(seq 1 50); do
	[ -S "$socket" ] && break
	alive "$daemon_pid" || break
	sleep 0.1
done
if ! alive "$daemon_pid"; then
	wait "$daemon_pid"
	status=$?
	daemon_pid=
	daemon_failed "the packaged /etc/default/sbc-sidecar with a real secret is rejected: sbc-sidecar exited $status at once"
fi
[ -S "$socket" ] || daemon_failed "sbc-sidecar did not create its CLI socket $socket within 5 s"
ok "the packaged defaults with a real ENCRYPTION_SECRET start the daemon; CLI socket $socket"

if [ -n "$made_rundir" ]; then
	reply=$(as_root env -u SBC_SOCKET_PATH /usr/bin/sbcctl --json status) ||
		daemon_failed "sbcctl --json status (no --socket, no SBC_SOCKET_PATH) exits non-zero: $reply"
	case "$reply" in '{"success":true'*) ;; *) daemon_failed "sbcctl --json status answered: $reply" ;; esac
	as_root env -u SBC_SOCKET_PATH /usr/bin/sbcctl status >/dev/null ||
		daemon_failed "sbcctl status exits non-zero"
	ok "sbcctl finds the packaged socket by itself; status answers"
fi
/usr/bin/sbcctl --socket "$socket" no-such-command >/dev/null 2>&1
[ $? = 2 ] || daemon_failed "sbcctl no-such-command does not exit 2"
/usr/bin/sbcctl --socket "$socket" fs drain not-an-address >/dev/null 2>&1
[ $? = 1 ] || daemon_failed "sbcctl fs drain not-an-address does not exit 1"

as_root kill -TERM "$daemon_pid"
for _ in $(seq 1 100); do
	alive "$daemon_pid" || break
	sleep 0.1
done
alive "$daemon_pid" && daemon_failed "sbc-sidecar did not stop within 10 s of SIGTERM"
wait "$daemon_pid"
status=$?
daemon_pid=
[ "$status" = 0 ] || daemon_failed "sbc-sidecar exited $status after SIGTERM, not 0"
[ -e "$socket" ] && daemon_failed "sbc-sidecar left its socket $socket behind"
if [ -n "$made_rundir" ]; then
	as_root rmdir "$rundir" || fail "remove $rundir"
fi
ok "SIGTERM stops the daemon with exit 0 and removes the socket"

# --- purge --------------------------------------------------------------------------------
as_root dpkg --purge "$pkg" || fail "dpkg --purge $pkg"
dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'installed' && fail "purge: $pkg is still installed"
for f in "${expected_files[@]}" /usr/share/doc/$pkg \
	/etc/systemd/system/multi-user.target.wants/sbc-sidecar.service \
	/etc/systemd/system/sbc-sidecar.service \
	/var/lib/systemd/deb-systemd-helper-enabled/sbc-sidecar.service.dsh-also \
	/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/sbc-sidecar.service \
	/var/lib/systemd/deb-systemd-helper-masked/sbc-sidecar.service; do
	if [ -e "$f" ] || [ -L "$f" ]; then fail "purge: $f is still there"; fi
done
ok "dpkg --purge removes every file, the enable links and the helper state"

say "all $passed checks passed for $(basename "$deb")"
