//! The Redis pool against the real Redis at 127.0.0.1:6379.

use std::time::Duration;

use sbc_sidecar::store::redis::{pool, run, RedisPool, RedisSettings};

fn local_pool() -> RedisPool {
    sbc_test_tools::services::require_redis();
    pool(&RedisSettings::direct("127.0.0.1", 6379, Duration::from_millis(500), 1)).expect("pool")
}

#[test]
fn a_pooled_connection_killed_by_the_server_is_replaced_without_an_error() {
    let pool = local_pool();
    let id: i64 = run(&pool, |c| Ok(redis::cmd("CLIENT").arg("ID").query(&mut **c)?)).expect("Redis on 6379");
    let mut admin = sbc_test_tools::services::redis();
    let killed: i64 = redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).query(&mut admin).unwrap();
    assert_eq!(killed, 1);
    // The pool still holds the dead connection; `run` finds out and uses a new one.
    let pong: String = run(&pool, |c| Ok(redis::cmd("PING").query(&mut **c)?)).expect("retried on a new connection");
    assert_eq!(pong, "PONG");
    let new_id: i64 = run(&pool, |c| Ok(redis::cmd("CLIENT").arg("ID").query(&mut **c)?)).unwrap();
    assert_ne!(new_id, id);
}
