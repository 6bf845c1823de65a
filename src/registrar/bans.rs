//! PLACEHOLDER until the sec-bans branch lands (same API).
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct BanSettings {
    pub max_failures: u32,
    pub window: Duration,
    pub ban: Duration,
    pub capacity: usize,
}

impl Default for BanSettings {
    fn default() -> Self {
        BanSettings {
            max_failures: 10,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(300),
            capacity: 65536,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanEntry {
    pub ip: IpAddr,
    pub failures: u32,
    pub remaining: Duration,
}

pub struct Bans {
    settings: BanSettings,
    table: Mutex<HashMap<IpAddr, (Instant, u32, Option<Instant>)>>,
}

impl Bans {
    pub fn new(settings: BanSettings) -> Bans {
        Bans { settings, table: Mutex::new(HashMap::new()) }
    }
    pub fn banned(&self, ip: IpAddr, now: Instant) -> Option<BanEntry> {
        let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let (_, failures, until) = t.get(&ip.to_canonical())?;
        let until = (*until)?;
        (until > now).then(|| BanEntry { ip, failures: *failures, remaining: until - now })
    }
    pub fn record_failure(&self, ip: IpAddr, now: Instant) -> Option<BanEntry> {
        if self.settings.max_failures == 0 {
            return None;
        }
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if t.len() >= self.settings.capacity {
            t.clear();
        }
        let e = t.entry(ip.to_canonical()).or_insert((now, 0, None));
        if e.2.is_some_and(|u| u > now) {
            return None;
        }
        if now.duration_since(e.0) > self.settings.window {
            *e = (now, 0, None);
        }
        e.1 += 1;
        if e.1 >= self.settings.max_failures {
            e.2 = Some(now + self.settings.ban);
            return Some(BanEntry { ip, failures: e.1, remaining: self.settings.ban });
        }
        None
    }
    pub fn list(&self, now: Instant) -> Vec<BanEntry> {
        let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.iter()
            .filter_map(|(ip, (_, f, u))| {
                u.filter(|u| *u > now).map(|u| BanEntry { ip: *ip, failures: *f, remaining: u - now })
            })
            .collect()
    }
    pub fn clear(&self, ip: IpAddr) -> bool {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.remove(&ip.to_canonical()).is_some()
    }
    pub fn settings(&self) -> &BanSettings {
        &self.settings
    }
}
