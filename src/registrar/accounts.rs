//! The MySQL reads of the REGISTER pipeline (spec 12.3): account by SIP realm, the account's
//! device capacity, and a `clients` row. Parameters only, never formatted into the SQL.

use mysql::prelude::{FromValue, Queryable};
use mysql::{PooledConn, Row};

use super::webhook::{HookMethod, RegistrationHook};
use crate::store::StoreError;

/// The same join as the Node `lookupAccountBySipRealm` (`SELECT * FROM accounts acc LEFT JOIN
/// webhooks rh ON acc.registration_hook_sid = rh.webhook_sid WHERE acc.sip_realm = ?`), with
/// the columns we read named so that schema additions cannot change what we get.
const ACCOUNT_BY_REALM: &str = "SELECT acc.account_sid, acc.sip_realm, acc.is_active, acc.webhook_secret, \
     acc.device_to_call_ratio, rh.url, rh.method, rh.username, rh.password \
     FROM accounts acc LEFT JOIN webhooks rh ON acc.registration_hook_sid = rh.webhook_sid \
     WHERE acc.sip_realm = ?";

const CAPACITIES: &str = "SELECT prod.category, ap.quantity \
     FROM products prod, account_products ap, account_subscriptions subs \
     WHERE subs.account_sid = ? AND subs.pending = 0 \
     AND (subs.effective_end_date IS NULL OR subs.effective_end_date > NOW()) \
     AND ap.account_subscription_sid = subs.account_subscription_sid \
     AND ap.product_sid = prod.product_sid";

const CLIENT: &str = "SELECT is_active, password, allow_direct_app_calling, allow_direct_queue_calling, \
     allow_direct_user_calling FROM clients WHERE account_sid = ? AND username = ?";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub account_sid: String,
    /// The realm the account was found by: the REGISTER's own, or its parent domain.
    pub sip_realm: String,
    pub is_active: bool,
    pub webhook_secret: Option<String>,
    pub device_to_call_ratio: i64,
    /// The registration webhook, when the account has one with a URL.
    pub hook: Option<RegistrationHook>,
}

/// The account of a realm: exact match, then — when the realm has more than two labels —
/// once more with the first label removed (`a.b.example.com` → `b.example.com`).
pub fn account_by_realm(conn: &mut PooledConn, realm: &str) -> Result<Option<Account>, StoreError> {
    if let Some(account) = account_exact(conn, realm)? {
        return Ok(Some(account));
    }
    match parent_domain(realm) {
        Some(parent) => account_exact(conn, parent),
        None => Ok(None),
    }
}

/// `a.b.c` → `b.c`; `None` for two labels or fewer.
pub fn parent_domain(realm: &str) -> Option<&str> {
    if realm.split('.').count() > 2 {
        realm.split_once('.').map(|(_, parent)| parent)
    } else {
        None
    }
}

fn account_exact(conn: &mut PooledConn, realm: &str) -> Result<Option<Account>, StoreError> {
    let Some(mut row) = conn.exec_first::<Row, _, _>(ACCOUNT_BY_REALM, (realm,))? else {
        return Ok(None);
    };
    let url: Option<String> = column(&mut row, "webhooks", "url")?;
    let method: Option<String> = column(&mut row, "webhooks", "method")?;
    let username: Option<String> = column(&mut row, "webhooks", "username")?;
    let password: Option<String> = column(&mut row, "webhooks", "password")?;
    Ok(Some(Account {
        account_sid: column(&mut row, "accounts", "account_sid")?,
        sip_realm: column::<Option<String>>(&mut row, "accounts", "sip_realm")?.unwrap_or_else(|| realm.to_string()),
        is_active: column::<Option<i64>>(&mut row, "accounts", "is_active")?.unwrap_or(0) != 0,
        webhook_secret: column(&mut row, "accounts", "webhook_secret")?,
        device_to_call_ratio: column::<Option<i64>>(&mut row, "accounts", "device_to_call_ratio")?.unwrap_or(0),
        hook: url.map(|url| RegistrationHook {
            url,
            method: HookMethod::from_column(method.as_deref()),
            username,
            password,
        }),
    }))
}

/// The number of devices the account may register in hosting mode:
/// `quantity(voice_call_session) × device_to_call_ratio + quantity(device)`.
///
/// Conscious fix: the Node code threw (→ `500` on every REGISTER) when the subscription had
/// no `voice_call_session` product; here a missing product counts as zero, so such an account
/// gets `503 Max Devices Registered` like any account without capacity.
pub fn device_limit(conn: &mut PooledConn, account: &Account) -> Result<u64, StoreError> {
    let rows: Vec<(String, i64)> = conn.exec(CAPACITIES, (&account.account_sid,))?;
    Ok(limit_from_capacities(&rows, account.device_to_call_ratio))
}

pub fn limit_from_capacities(rows: &[(String, i64)], device_to_call_ratio: i64) -> u64 {
    // The first row of a category counts, as with the Node code's `find`.
    let quantity = |category: &str| rows.iter().find(|(c, _)| c == category).map_or(0, |(_, q)| *q);
    let limit = quantity("voice_call_session").saturating_mul(device_to_call_ratio).saturating_add(quantity("device"));
    u64::try_from(limit).unwrap_or(0)
}

/// A `clients` row (first match), the columns authentication needs.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientRow {
    pub is_active: bool,
    /// Encrypted (see `crypto.rs`).
    pub password: Option<String>,
    pub allow_direct_app_calling: i64,
    pub allow_direct_queue_calling: i64,
    pub allow_direct_user_calling: i64,
}

impl std::fmt::Debug for ClientRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRow").field("is_active", &self.is_active).finish_non_exhaustive()
    }
}

pub fn client(conn: &mut PooledConn, account_sid: &str, username: &str) -> Result<Option<ClientRow>, StoreError> {
    let Some(mut row) = conn.exec_first::<Row, _, _>(CLIENT, (account_sid, username))? else {
        return Ok(None);
    };
    let flag = |row: &mut Row, name: &str| -> Result<i64, StoreError> {
        Ok(column::<Option<i64>>(row, "clients", name)?.unwrap_or(0))
    };
    Ok(Some(ClientRow {
        is_active: flag(&mut row, "is_active")? != 0,
        password: column(&mut row, "clients", "password")?,
        allow_direct_app_calling: flag(&mut row, "allow_direct_app_calling")?,
        allow_direct_queue_calling: flag(&mut row, "allow_direct_queue_calling")?,
        allow_direct_user_calling: flag(&mut row, "allow_direct_user_calling")?,
    }))
}

/// One column of a row, converted; a missing column or an unexpected type says which.
fn column<T: FromValue>(row: &mut Row, table: &str, name: &str) -> Result<T, StoreError> {
    match row.take_opt::<T, _>(name) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(StoreError::BadData(format!("{table}.{name}: {e}"))),
        None => Err(StoreError::BadData(format!("{table}.{name}: column missing"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_domain_drops_the_first_label_of_three_or_more() {
        assert_eq!(parent_domain("a.b.example.com"), Some("b.example.com"));
        assert_eq!(parent_domain("sip.example.com"), Some("example.com"));
        assert_eq!(parent_domain("example.com"), None);
        assert_eq!(parent_domain("localhost"), None);
    }

    #[test]
    fn limit_is_sessions_times_ratio_plus_devices() {
        let rows = vec![("voice_call_session".to_string(), 2), ("device".to_string(), 3), ("api_rate".to_string(), 9)];
        assert_eq!(limit_from_capacities(&rows, 5), 13);
        assert_eq!(limit_from_capacities(&rows[..1], 5), 10);
        assert_eq!(limit_from_capacities(&rows[1..], 5), 3);
        assert_eq!(limit_from_capacities(&[], 5), 0);
        assert_eq!(limit_from_capacities(&[("voice_call_session".to_string(), -1)], 5), 0);
    }
}
