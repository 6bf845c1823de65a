//! Who may use the CLI socket: the daemon asks the kernel who is calling (SO_PEERCRED) and lets
//! in root, its own user and members of SBC_CTL_GROUP; `sbcctl` never falls back to the /tmp
//! socket when the package's socket cannot be examined. The callers are the real `sbcctl` run
//! as the unprivileged user `nobody` (uid 65534, group `nogroup`).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sbc_test_tools::daemon::{base_env, program, Daemon};
use sbc_test_tools::db::TestDb;
use sbc_test_tools::double::{Double, DoubleConfig};

const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;
const WAIT: Duration = Duration::from_secs(10);

/// `sbcctl <args>` as nobody:nogroup, without SBC_SOCKET_PATH: (exit code, stdout, stderr).
fn sbcctl_as_nobody(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(program("sbcctl"))
        .env_remove("SBC_SOCKET_PATH")
        .args(args)
        .uid(NOBODY)
        .gid(NOGROUP)
        .output()
        .expect("sbcctl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn start(extra: &[(&str, &str)]) -> (TestDb, Double, Daemon) {
    let db = TestDb::create();
    let double = Double::start(DoubleConfig::default()).expect("double");
    let mut env = base_env(double.admin_addr().port(), &db.name);
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    let daemon = Daemon::start(env, &[]);
    assert!(double.wait_for_route("register", WAIT), "log:\n{}", daemon.log());
    (db, double, daemon)
}

#[test]
fn a_caller_that_is_not_root_the_daemon_or_the_group_gets_a_clear_refusal_and_one_log_line() {
    let (_db, _double, daemon) = start(&[]);
    let socket = daemon.socket_path.to_str().unwrap().to_string();
    // an operator loosened the mode: the kernel still says who is calling
    std::fs::set_permissions(&daemon.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&daemon.socket_path, std::fs::Permissions::from_mode(0o666)).unwrap();
    for _ in 0..3 {
        let (code, out, err) = sbcctl_as_nobody(&["--socket", &socket, "status"]);
        assert_eq!(code, 1, "refused: {out}{err}");
        assert!(!out.contains("drachtio"), "no status for nobody: {out}");
        assert!(
            err.contains("Permission denied: uid 65534 may not use the sbc-sidecar control socket"),
            "stderr: {err}"
        );
    }
    assert!(daemon.wait_for_log("CLI socket: refused a client uid=65534", WAIT), "{}", daemon.log());
    assert_eq!(daemon.log().matches("CLI socket: refused a client").count(), 1, "one line per interval");
    // root still gets its answer
    let (code, out, err) = daemon.sbcctl(&["status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("drachtio"), "{out}");
}

#[test]
fn members_of_sbc_ctl_group_may_use_the_socket() {
    let (_db, _double, daemon) = start(&[("SBC_CTL_GROUP", "nogroup")]);
    std::fs::set_permissions(&daemon.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let meta = std::fs::metadata(&daemon.socket_path).unwrap();
    assert_eq!((meta.gid(), meta.mode() & 0o777), (NOGROUP, 0o660), "group-accessible socket");
    let socket = daemon.socket_path.to_str().unwrap().to_string();
    let (code, out, err) = sbcctl_as_nobody(&["--socket", &socket, "status"]);
    assert_eq!(code, 0, "{out}{err}\n{}", daemon.log());
    assert!(out.contains("drachtio"), "{out}");
}

#[test]
fn an_unknown_sbc_ctl_group_stops_the_start_with_its_name() {
    let db = TestDb::create();
    let double = Double::start(DoubleConfig::default()).expect("double");
    let mut env = base_env(double.admin_addr().port(), &db.name);
    env.insert("SBC_CTL_GROUP".into(), "no-such-group-sbc".into());
    let mut daemon = Daemon::start(env, &[]);
    let status = daemon.wait_exit(WAIT).expect("exits");
    assert!(!status.success());
    assert!(daemon.log().contains("SBC_CTL_GROUP=\"no-such-group-sbc\": no such group"), "{}", daemon.log());
}

/// Creates the package's run directory (mode 0700, as root) for the test when it is not
/// there, and removes it again.
struct RunDir {
    created: bool,
}

impl RunDir {
    fn ensure() -> RunDir {
        let dir = Path::new("/run/sbc-sidecar");
        let created = !dir.exists();
        if created {
            std::fs::create_dir(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        RunDir { created }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.created {
            let _ = std::fs::remove_dir("/run/sbc-sidecar");
        }
    }
}

#[test]
fn sbcctl_says_permission_denied_instead_of_falling_back_to_the_tmp_socket() {
    let _run = RunDir::ensure();
    assert_eq!(std::fs::metadata("/run/sbc-sidecar").unwrap().mode() & 0o007, 0, "not open to others");
    let (code, out, err) = sbcctl_as_nobody(&["status"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("/run/sbc-sidecar/sbc-sidecar.sock") && err.contains("Permission denied"), "stderr: {err}");
    assert!(!err.contains("/tmp/"), "no fallback to /tmp: {err}");
}
