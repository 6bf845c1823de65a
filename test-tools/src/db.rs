//! A throw-away MariaDB database per test, created from the project's schema.

use mysql::prelude::Queryable;
use mysql::{Opts, OptsBuilder, Pool, PooledConn};
use rand::Rng;

use crate::services;

pub fn mysql_user() -> String {
    std::env::var("SBC_TEST_MYSQL_USER").unwrap_or_else(|_| "sbc_test".into())
}

pub fn mysql_password() -> String {
    std::env::var("SBC_TEST_MYSQL_PASSWORD").unwrap_or_else(|_| "sbc_test".into())
}

fn opts(db: Option<&str>) -> Opts {
    opts_at(services::MYSQL_HOST, services::MYSQL_PORT, db)
}

fn opts_at(host: &str, port: u16, db: Option<&str>) -> Opts {
    OptsBuilder::new()
        .ip_or_hostname(Some(host))
        .tcp_port(port)
        .user(Some(mysql_user()))
        .pass(Some(mysql_password()))
        .db_name(db)
        .prefer_socket(false)
        .into()
}

/// A connection to the MariaDB at `host:port` as the tests' user, without a database; or the
/// message saying MariaDB is missing and how to fix it (`make services`).
pub fn connect_admin_at(host: &str, port: u16) -> Result<PooledConn, String> {
    Pool::new(opts_at(host, port, None))
        .and_then(|admin| admin.get_conn())
        .map_err(|e| services::mysql_message(&format!("{host}:{port}"), &mysql_user(), &e))
}

pub struct TestDb {
    pub name: String,
    pool: Pool,
}

impl TestDb {
    pub fn create() -> TestDb {
        let name = format!("sbc_test_{:08x}", rand::thread_rng().gen::<u32>());
        let mut c = connect_admin_at(services::MYSQL_HOST, services::MYSQL_PORT).unwrap_or_else(|m| panic!("{m}"));
        c.query_drop(format!("CREATE DATABASE `{name}`")).expect("create test database");
        let pool = Pool::new(opts(Some(&name))).expect("test database pool");
        let schema = include_str!("../../src/store/schema.sql");
        let mut conn = pool.get_conn().expect("test database connection");
        for stmt in
            schema.split(';').map(str::trim).filter(|s| !s.is_empty() && !s.lines().all(|l| l.starts_with("--")))
        {
            conn.query_drop(stmt).expect("schema statement");
        }
        TestDb { name, pool }
    }

    /// A handle on the database's pool, for a watcher thread.
    #[allow(dead_code)]
    pub fn pool(&self) -> Pool {
        self.pool.clone()
    }

    pub fn conn(&self) -> PooledConn {
        self.pool.get_conn().expect("test database connection")
    }

    /// An active account named `name` for `realm` whose registration webhook is `url` (POST),
    /// signed with `webhook_secret`; returns its `account_sid`.
    pub fn add_webhook_account(&self, name: &str, realm: &str, url: &str, webhook_secret: &str) -> String {
        let hook_sid = uuid::Uuid::new_v4().to_string();
        let account_sid = uuid::Uuid::new_v4().to_string();
        let mut c = self.conn();
        c.exec_drop("INSERT INTO webhooks (webhook_sid, url, method) VALUES (?, ?, 'POST')", (&hook_sid, url))
            .expect("webhook row");
        c.exec_drop(
            "INSERT INTO accounts (account_sid, name, sip_realm, service_provider_sid, registration_hook_sid, \
             is_active, webhook_secret) VALUES (?, ?, ?, ?, ?, 1, ?)",
            (&account_sid, name, realm, uuid::Uuid::new_v4().to_string(), &hook_sid, webhook_secret),
        )
        .expect("account row");
        account_sid
    }
    /// A current subscription of `account_sid` with these product quantities
    /// (`("device", n)` is the hosting-mode device limit).
    pub fn add_capacity(&self, account_sid: &str, products: &[(&str, i64)]) {
        let uuid = || uuid::Uuid::new_v4().to_string();
        let mut c = self.conn();
        let subscription = uuid();
        c.exec_drop(
            "INSERT INTO account_subscriptions (account_subscription_sid, account_sid, pending) VALUES (?, ?, 0)",
            (&subscription, account_sid),
        )
        .expect("subscription row");
        for (category, quantity) in products {
            let product = uuid();
            c.exec_drop(
                "INSERT INTO products (product_sid, name, category) VALUES (?, ?, ?)",
                (&product, category, category),
            )
            .expect("product row");
            c.exec_drop(
                "INSERT INTO account_products (account_product_sid, account_subscription_sid, product_sid, quantity) \
                 VALUES (?, ?, ?, ?)",
                (uuid(), &subscription, &product, quantity),
            )
            .expect("account product row");
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(admin) = Pool::new(opts(None)) {
            if let Ok(mut c) = admin.get_conn() {
                let _ = c.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name));
            }
        }
    }
}
