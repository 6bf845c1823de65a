//! The local services the integration tests need: MariaDB on 127.0.0.1:3306, Redis on
//! 127.0.0.1:6379 and the `sipp` program. When one is missing the test fails with one message
//! that says what is missing and how to fix it (`make services`), not with an unwrap deep in a
//! helper. It is still a failure: no test is skipped because a service is missing.

use std::fmt::Display;
use std::process::{Child, Command, Output};

/// The shared MariaDB every test database is created in.
pub const MYSQL_HOST: &str = "127.0.0.1";
pub const MYSQL_PORT: u16 = 3306;
/// The shared Redis.
pub const REDIS_HOST: &str = "127.0.0.1";
pub const REDIS_PORT: u16 = 6379;

const FIX: &str = "the tests need it; run `make services` (installs and starts MariaDB, Redis and sipp)";

/// What a test says when MariaDB at `addr` does not let it in as `user`.
pub fn mysql_message(addr: &str, user: &str, error: &dyn Display) -> String {
    format!("MariaDB is not reachable at {addr} as user {user} ({error}): {FIX}")
}

/// What a test says when no Redis answers at `addr`.
pub fn redis_message(addr: &str, error: &dyn Display) -> String {
    format!("Redis is not reachable at {addr} ({error}): {FIX}")
}

/// What a test says when the `sipp` program cannot be started.
pub fn sipp_message(error: &dyn Display) -> String {
    format!("sipp could not be started ({error}): the tests need it (Debian package sip-tester); run `make services`")
}

/// Fails the test: sipp could not be started.
#[track_caller]
fn sipp_missing(error: &dyn Display) -> ! {
    panic!("{}", sipp_message(error))
}

/// A connection to the Redis at `host:port` that has answered PING, or the message saying it
/// is missing.
pub fn redis_at(host: &str, port: u16) -> Result<redis::Connection, String> {
    let connect = || -> redis::RedisResult<redis::Connection> {
        let mut c = redis::Client::open(format!("redis://{host}:{port}/"))?.get_connection()?;
        redis::cmd("PING").query::<String>(&mut c)?;
        Ok(c)
    };
    connect().map_err(|e| redis_message(&format!("{host}:{port}"), &e))
}

/// A connection to the shared Redis; fails the test with a clear message when there is none.
#[track_caller]
pub fn redis() -> redis::Connection {
    redis_at(REDIS_HOST, REDIS_PORT).unwrap_or_else(|message| panic!("{message}"))
}

/// Fails the test with a clear message unless the shared Redis answers PING; for tests that
/// reach it only through the daemon's own pool (which would turn its absence into a 503).
#[track_caller]
pub fn require_redis() {
    drop(redis());
}

/// Starts `cmd` (a sipp command line), or fails the test saying sipp is missing.
#[track_caller]
pub fn spawn_sipp(cmd: &mut Command) -> Child {
    cmd.spawn().unwrap_or_else(|e| sipp_missing(&e))
}

/// Runs `cmd` (a sipp command line) to its end, or fails the test saying sipp is missing.
#[track_caller]
pub fn run_sipp(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| sipp_missing(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    #[test]
    fn a_redis_that_is_not_there_is_named_with_the_fix() {
        let port = closed_port();
        let Err(message) = redis_at("127.0.0.1", port) else { panic!("nothing listens on {port}") };
        assert!(message.starts_with(&format!("Redis is not reachable at 127.0.0.1:{port} (")), "{message}");
        assert!(message.ends_with("run `make services` (installs and starts MariaDB, Redis and sipp)"), "{message}");
    }

    #[test]
    fn a_mariadb_that_is_not_there_is_named_with_the_fix() {
        let port = closed_port();
        let error = crate::db::connect_admin_at(MYSQL_HOST, port).expect_err("nothing listens");
        assert!(error.starts_with(&format!("MariaDB is not reachable at 127.0.0.1:{port} as user ")), "{error}");
        assert!(error.contains("run `make services`"), "{error}");
    }

    #[test]
    fn a_missing_sipp_is_named_with_the_fix() {
        let message = std::panic::catch_unwind(|| {
            let _ = spawn_sipp(&mut Command::new("sipp-that-is-not-installed")).wait();
        })
        .err()
        .and_then(|p| p.downcast::<String>().ok())
        .expect("a panic with a message");
        assert!(message.starts_with("sipp could not be started ("), "{message}");
        assert!(message.ends_with("run `make services`"), "{message}");
    }
}
