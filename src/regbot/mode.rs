//! `SBC_REGBOT_MODE`: which SBCs of a cluster register to the carriers.

use std::fmt;
use std::str::FromStr;

/// Who registers to the carriers (`SBC_REGBOT_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegbotMode {
    /// One elected SBC per cluster (the Node behaviour).
    #[default]
    Leader,
    /// Every SBC, each with its own Contact and Call-ID.
    Every,
}

impl RegbotMode {
    pub const NAMES: &'static str = "leader, every";

    pub fn as_str(self) -> &'static str {
        match self {
            RegbotMode::Leader => "leader",
            RegbotMode::Every => "every",
        }
    }
}

impl FromStr for RegbotMode {
    type Err = ();

    fn from_str(s: &str) -> Result<RegbotMode, ()> {
        match s.trim().to_ascii_lowercase().as_str() {
            "leader" => Ok(RegbotMode::Leader),
            "every" => Ok(RegbotMode::Every),
            _ => Err(()),
        }
    }
}

impl fmt::Display for RegbotMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// On whose behalf one registration is sent: the configured [`RegbotMode`] applied to one
/// gateway, with the SBC's id where every SBC registers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum SentBy {
    /// The cluster's elected leader, under the gateway's shared Call-ID (the Node behaviour).
    #[default]
    Leader,
    /// This SBC, one of every SBC of the cluster; `sbc` is its id (its public SIP address),
    /// under which its state for the carrier is kept in Redis.
    Every { sbc: String },
}

impl SentBy {
    /// The SBC's id in `every` mode; `None` for the leader.
    pub fn sbc(&self) -> Option<&str> {
        match self {
            SentBy::Leader => None,
            SentBy::Every { sbc } => Some(sbc),
        }
    }
}
