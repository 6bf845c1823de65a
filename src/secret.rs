//! [`Secret`]: a configuration value (a password, a shared secret) that must never reach a
//! log line. A leaf module: the roles that hold secrets and `config/`, which fills them, both
//! use it without depending on each other.

use std::fmt;

/// A value that must never reach a log line: `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The actual value, for the one place that needs it (a hash, an AUTH command).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// For settings written in code (tests, tools).
impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret::new(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
