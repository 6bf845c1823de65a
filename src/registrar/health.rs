//! Logs a store going away and coming back once per change, not once per REGISTER: during
//! a Redis outage thousands of devices re-register, and each still gets its 503.

use std::sync::atomic::{AtomicBool, Ordering};

use log::{debug, info, warn};

use crate::store::StoreError;

pub struct StoreHealth {
    name: &'static str,
    down: AtomicBool,
}

impl StoreHealth {
    pub const fn new(name: &'static str) -> StoreHealth {
        StoreHealth { name, down: AtomicBool::new(false) }
    }

    pub fn failed(&self, what: &str, error: &StoreError) {
        if !self.down.swap(true, Ordering::Relaxed) {
            warn!("registrar: {} unreachable, answering REGISTER with 503 while it lasts: {what}: {error}", self.name);
        } else {
            debug!("registrar: {} still unreachable: {what}: {error}", self.name);
        }
    }

    pub fn succeeded(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            info!("registrar: {} reachable again", self.name);
        }
    }
}
