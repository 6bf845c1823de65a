//! MariaDB or Redis unreachable or failing: 503 with Retry-After, never a false 200. The rig is
//! tests/support/registrar_rig.rs.

use std::time::{Duration, Instant};

use rand::Rng;

use sbc_sidecar::store::mysql::MysqlPool;
use sbc_sidecar::store::redis::pool as redis_pool;

#[path = "support/registrar_rig.rs"]
mod registrar_rig;
use registrar_rig::*;

// ---------------------------------------------------------------------------------------------
// Stores unreachable or failing.

#[test]
fn redis_unreachable_is_503_with_retry_after() {
    let fx = Fx::build(
        |_| {},
        |db| MysqlPool::new(&mysql_settings(db, 3306)).unwrap(),
        || redis_pool(&redis_settings(1, Duration::from_millis(200))).unwrap(),
    );
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    let started = Instant::now();
    let r = fx.send(&fx.reg("yan"));
    assert_eq!(r.status, 503);
    assert_eq!(r.header("Retry-After"), Some("5"));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[test]
fn mysql_unreachable_is_503_with_retry_after() {
    let fx = Fx::build(
        |_| {},
        |db| MysqlPool::new(&mysql_settings(db, closed_port())).unwrap(),
        || redis_pool(&redis_settings(6379, Duration::from_secs(2))).unwrap(),
    );
    let started = Instant::now();
    let r = fx.send(&fx.reg("zed"));
    assert_eq!(r.status, 503);
    assert_eq!(r.header("Retry-After"), Some("5"));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[test]
fn binding_that_cannot_be_stored_is_500_not_a_false_200() {
    // A Redis user that may do everything except ZADD: the MULTI is refused as a whole.
    let acl_user = format!("sbc_test_{:08x}", rand::thread_rng().gen::<u32>());
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&acl_user)
        .arg("on")
        .arg(">pw")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-zadd")
        .query(&mut redis_conn())
        .unwrap();
    let fx = Fx::build(
        |_| {},
        |db| MysqlPool::new(&mysql_settings(db, 3306)).unwrap(),
        || {
            let mut s = redis_settings(6379, Duration::from_secs(2));
            s.username = Some(acl_user.clone());
            s.password = Some("pw".into());
            redis_pool(&s).unwrap()
        },
    );
    fx.add_account(&fx.realm, true, Some(("POST", "/auth")));
    fx.hook.set_password("abe", PASSWORD);
    let r = fx.register_with_password(&fx.reg("abe"), PASSWORD);
    let _: redis::RedisResult<()> = redis::cmd("ACL").arg("DELUSER").arg(&acl_user).query(&mut redis_conn());
    assert_eq!(r.status, 500, "{}", r.raw);
    // all or nothing: the SETEX of the refused transaction did not happen either
    assert_eq!(fx.binding("abe"), None);
}
