//! The README's quick start keeps working: the demo account that `make run` loads
//! (`.ci/local-demo.sh` with `.ci/local-demo.sql`, here into a scratch database), the sipp command
//! line exactly as the README shows it (only the SIP address is this test's double), 401 then
//! 200, the binding in Redis and `sbcctl status` counting it. The credentials are taken from the
//! loader's output and must be the ones the README shows, so neither can drift from the other.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use mysql::prelude::Queryable;
use redis::Commands;

use sbc_test_tools::daemon::{base_env, Daemon};
use sbc_test_tools::db::TestDb;
use sbc_test_tools::double::{Double, DoubleConfig};
use sbc_test_tools::{services, sipp};

const WAIT: Duration = Duration::from_secs(10);
/// The SIP address the README and `make run` use (the double's default).
const README_SIP: &str = "127.0.0.1:5060";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).expect("README.md")
}

/// The README's sipp command that registers the demo user: the line of a code block that starts
/// with `sipp ` and plays `register_user.xml`, without a trailing `# comment`.
fn readme_register_line(readme: &str) -> String {
    let lines: Vec<&str> = readme
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("sipp ") && l.contains("tests/scenarios/register_user.xml"))
        .collect();
    assert_eq!(lines.len(), 1, "the README shows one sipp line with register_user.xml: {lines:?}");
    lines[0].split(" #").next().unwrap().trim().to_string()
}

/// Runs the demo loader on the daemon's database with the daemon's variables; its output.
fn load_demo(env: &std::collections::HashMap<String, String>) -> String {
    let out = Command::new("bash")
        .arg(repo().join(".ci/local-demo.sh"))
        .arg(README_SIP)
        .current_dir(repo())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .stdin(Stdio::null())
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "local-demo.sh: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The value of a `  name: value` line of the loader's output.
fn field<'a>(output: &'a str, name: &str) -> &'a str {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("local-demo.sh prints no {name}: {output}"))
}

#[test]
fn the_readme_quick_start_registers_the_demo_user() {
    let db = TestDb::create();
    let double = Double::start(DoubleConfig::default()).expect("double starts");
    let env = base_env(double.admin_addr().port(), &db.name);

    // The loader, twice (as `make run` twice): one account, one client, decryptable with the
    // daemon's ENCRYPTION_SECRET (the test's, not run-local.sh's default).
    load_demo(&env);
    let output = load_demo(&env);
    let (realm, user, password) = (field(&output, "realm"), field(&output, "user"), field(&output, "password"));
    let mut c = db.conn();
    let accounts: Vec<(String, Option<String>)> =
        c.exec("SELECT account_sid, registration_hook_sid FROM accounts WHERE sip_realm = ?", (realm,)).unwrap();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(accounts[0].1, None, "no webhook: the clients table authenticates");
    let clients: Vec<(String, String)> = c.query("SELECT account_sid, username FROM clients").unwrap();
    assert_eq!(clients, vec![(accounts[0].0.clone(), user.to_string())], "loading twice keeps one client");

    // The README shows these credentials and the very command line the loader prints.
    let readme = readme();
    let line = readme_register_line(&readme);
    assert_eq!(line, field(&output, "register"), "README and `make run` show the same sipp line");
    for (what, value) in [("realm", realm), ("user", user), ("password", password)] {
        assert!(readme.contains(value), "the README mentions the demo {what} {value}");
    }
    assert!(
        readme.contains(&format!("<sip:{user}@{realm}>;auth_pass={password};")),
        "the README's baresip account line has the demo credentials"
    );
    assert!(readme.contains("sbcctl --socket /tmp/sbc-sip-sidecar.sock status"));
    assert!(readme.contains("registered users: 1"));

    let aor_key = format!("user:{user}@{realm}");
    let mut redis = sbc_test_tools::services::redis();
    // Shared Redis: a binding left by `make run` on this machine must not make this pass.
    let _: () = redis.del(&aor_key).unwrap();
    let _: () = redis.zrem("active-user", &aor_key).unwrap();

    let mut daemon = Daemon::start(env, &[]);
    assert!(double.wait_for_route("register", WAIT), "log:\n{}", daemon.log());

    // The README's line against this double, plus what a test run needs: a loopback local
    // address, a free media port (sipp binds one even without media), a bound, no keyboard, a
    // message log.
    let ip = "127.0.0.1";
    let dir = sipp::tempdir();
    let messages_file = dir.join("messages.log");
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("sipp"));
    let args: Vec<String> =
        words.map(|w| if w == README_SIP { double.sip_addr().to_string() } else { w.to_string() }).collect();
    assert!(args.contains(&double.sip_addr().to_string()), "the README's line targets {README_SIP}: {line}");
    let out = services::run_sipp(
        Command::new("sipp")
            .args(&args)
            .current_dir(repo())
            .args(["-i", ip, "-mp", &sipp::media_port(ip).to_string()])
            .args(["-timeout", "20s", "-timeout_error", "-nostdin", "-trace_msg", "-message_file"])
            .arg(&messages_file)
            .stdin(Stdio::null()),
    );
    let messages = std::fs::read_to_string(&messages_file).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "sipp: {}\n{}\nmessages:\n{messages}\nlog:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    assert!(messages.contains("SIP/2.0 401"), "challenged first:\n{messages}");
    assert!(messages.contains("SIP/2.0 200 OK"), "{messages}");

    let binding: Option<String> = redis.get(&aor_key).unwrap();
    let binding: serde_json::Value = serde_json::from_str(&binding.expect("the binding is in Redis")).unwrap();
    assert!(binding["contact"].as_str().is_some_and(|c| c.contains(&format!("sip:{user}@"))), "{binding}");
    let score: Option<f64> = redis.zscore("active-user", &aor_key).unwrap();
    assert!(score.is_some(), "{aor_key} in active-user");

    let (code, status, stderr) = daemon.sbcctl(&["status"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(status.contains("drachtio: connected"), "{status}");
    // The count is of the whole (shared) Redis, so other tests' users may be in it too.
    let users: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("registered users: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("sbcctl status: {status}"));
    assert!(users >= 1, "{status}");

    assert_eq!(daemon.stop(Duration::from_secs(5)).map(|s| s.code()), Some(Some(0)));
    let _: () = redis.del(&aor_key).unwrap();
    let _: () = redis.zrem("active-user", &aor_key).unwrap();
}
