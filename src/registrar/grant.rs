//! The result of authentication, whichever way it was done (webhook or `clients` table).

use serde_json::{Map, Value};

use super::request::ExpiresBounds;

/// What the device is allowed, from the webhook's JSON answer (`status: ok`) or the `clients`
/// row. Values other components read are kept verbatim as JSON.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grant {
    /// Granted registration interval; `None` means "the requested one".
    pub expires: Option<u32>,
    /// `call_hook` / `call_status_hook`, stored as `callHook` / `callStatusHook`.
    pub call_hook: Option<Value>,
    pub call_status_hook: Option<Value>,
    /// `allow_direct_app_calling`, `allow_direct_queue_calling`, `allow_direct_user_calling`:
    /// booleans from a webhook, 0/1 from the `clients` table.
    pub allow_direct_app_calling: Option<Value>,
    pub allow_direct_queue_calling: Option<Value>,
    pub allow_direct_user_calling: Option<Value>,
}

impl Grant {
    /// Reads the fields the registrar uses from a webhook answer whose `status` was `ok`.
    pub fn from_hook_json(json: &Map<String, Value>) -> Grant {
        Grant {
            expires: json.get("expires").and_then(truthy_seconds),
            call_hook: json.get("call_hook").cloned(),
            call_status_hook: json.get("call_status_hook").cloned(),
            allow_direct_app_calling: json.get("allow_direct_app_calling").cloned(),
            allow_direct_queue_calling: json.get("allow_direct_queue_calling").cloned(),
            allow_direct_user_calling: json.get("allow_direct_user_calling").cloned(),
        }
    }

    /// The granted interval: the hook's `expires` when it gave a positive one (it may exceed
    /// the requested value; the Node code accepted that too), else the requested one; never
    /// more than `bounds.max` (a webhook answering `expires: 4294967295` does not keep a
    /// binding for 136 years).
    pub fn granted_expires(&self, requested: u32, bounds: ExpiresBounds) -> u32 {
        bounds.cap(self.expires.unwrap_or(requested))
    }
}

/// JavaScript truthiness applied to a seconds value: a positive number (fraction dropped) or
/// a string holding one. `0`, `false`, `null`, `""` mean "not given".
fn truthy_seconds(v: &Value) -> Option<u32> {
    let secs = match v {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 1.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    }?;
    (secs > 0).then(|| secs.min(u64::from(u32::MAX)) as u32)
}

/// Authentication said no.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Denial {
    /// The webhook flagged the source as a spammer (`blacklist: true`).
    pub blacklist: bool,
    /// Extra headers the webhook asked to put on the 403.
    pub headers: Vec<(String, String)>,
}

/// Outcome of a successful authentication exchange (transport errors are separate).
// One per REGISTER, moved once: boxing the grant would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum AuthVerdict {
    Granted(Grant),
    Denied(Denial),
}

impl AuthVerdict {
    /// The status the `app.hook.response_time` metric is tagged with.
    pub fn status(&self) -> u16 {
        match self {
            AuthVerdict::Granted(_) => 200,
            AuthVerdict::Denied(_) => 403,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const B: ExpiresBounds = ExpiresBounds { min: 60, max: 3600 };

    fn grant(v: Value) -> Grant {
        Grant::from_hook_json(v.as_object().unwrap())
    }

    #[test]
    fn expires_must_be_truthy() {
        assert_eq!(grant(json!({"status":"ok","expires":120})).granted_expires(3600, B), 120);
        let lax = ExpiresBounds { min: 60, max: 86_400 };
        assert_eq!(grant(json!({"status":"ok","expires":7200})).granted_expires(3600, lax), 7200);
        // never above the maximum
        assert_eq!(grant(json!({"status":"ok","expires":7200})).granted_expires(3600, B), 3600);
        assert_eq!(grant(json!({"status":"ok","expires":4294967295u64})).granted_expires(60, B), 3600);
        assert_eq!(grant(json!({"status":"ok","expires":"90"})).granted_expires(3600, B), 90);
        assert_eq!(grant(json!({"status":"ok","expires":60.7})).granted_expires(3600, B), 60);
        for v in [json!(0), json!(null), json!(false), json!(""), json!(-5), json!(0.5)] {
            assert_eq!(grant(json!({"status":"ok","expires":v})).granted_expires(3600, B), 3600, "{v}");
        }
        assert_eq!(grant(json!({"status":"ok"})).granted_expires(3600, B), 3600);
    }

    #[test]
    fn hooks_and_flags_are_kept_verbatim() {
        let g = grant(json!({
            "status":"ok","call_hook":{"url":"https://x/y","method":"POST"},"call_status_hook":"https://x/s",
            "allow_direct_app_calling":true,"allow_direct_user_calling":false
        }));
        assert_eq!(g.call_hook, Some(json!({"url":"https://x/y","method":"POST"})));
        assert_eq!(g.call_status_hook, Some(json!("https://x/s")));
        assert_eq!(g.allow_direct_app_calling, Some(json!(true)));
        assert_eq!(g.allow_direct_queue_calling, None);
        assert_eq!(g.allow_direct_user_calling, Some(json!(false)));
    }
}
