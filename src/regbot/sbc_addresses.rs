//! `sbc_addresses` publication (spec 8): this SBC's public SIP addresses, upserted on every
//! drachtio connect and then every `SBC_PUBLIC_ADDRESS_KEEP_ALIVE_IN_MILISECOND` while
//! connected (Node did it once, 15 minutes after connect, spec 14, item 2), followed each time by the
//! removal of rows older than `DEAD_SBC_IN_SECOND`. The cleanup runs after our own upsert so
//! it can never delete this SBC's row.

use std::time::Duration;

use crossbeam_channel::{never, select, tick, Receiver};
use log::{debug, info, warn};

use super::addresses::{sbc_address_rows, SbcAddressRow};
use crate::drachtio::ConnectionEvent;
use crate::store::carriers;
use crate::store::mysql::MysqlPool;
use crate::store::StoreError;

pub struct SbcAddressPublisher {
    keep_alive: Duration,
    dead_sbc_age: Duration,
    mysql_write: MysqlPool,
    events: Receiver<ConnectionEvent>,
    shutdown: Receiver<()>,
}

impl SbcAddressPublisher {
    pub fn new(
        keep_alive: Duration,
        dead_sbc_age: Duration,
        mysql_write: MysqlPool,
        events: Receiver<ConnectionEvent>,
        shutdown: Receiver<()>,
    ) -> SbcAddressPublisher {
        if dead_sbc_age <= keep_alive {
            warn!(
                "DEAD_SBC_IN_SECOND ({}s) is not above the keep-alive interval ({}ms): live SBCs may be deleted",
                dead_sbc_age.as_secs(),
                keep_alive.as_millis()
            );
        }
        SbcAddressPublisher { keep_alive, dead_sbc_age, mysql_write, events, shutdown }
    }

    pub fn run(mut self) {
        let ticker = tick(self.keep_alive.max(Duration::from_millis(100)));
        // The public rows of the current connection; none while disconnected, so that a node
        // whose drachtio is down ages out.
        let mut current: Option<Vec<SbcAddressRow>> = None;
        loop {
            select! {
                recv(self.events) -> ev => match ev {
                    Ok(ConnectionEvent::Connected(info)) => {
                        let rows = sbc_address_rows(&info.hostports);
                        info!("sbc public addresses: {}", describe(&rows));
                        self.publish(&rows);
                        current = Some(rows);
                    }
                    Ok(ConnectionEvent::Disconnected { .. }) => current = None,
                    Err(_) => self.events = never(),
                },
                recv(ticker) -> _ => if let Some(rows) = &current {
                    self.publish(rows);
                },
                recv(self.shutdown) -> _ => break,
            }
        }
        debug!("sbc_addresses publisher stopped");
    }

    fn publish(&self, rows: &[SbcAddressRow]) {
        if let Err(e) = self.try_publish(rows) {
            warn!("sbc_addresses not updated: {e}");
        }
    }

    fn try_publish(&self, rows: &[SbcAddressRow]) -> Result<(), StoreError> {
        let mut conn = self.mysql_write.conn()?;
        for row in rows {
            match carriers::sbc_address_sid(&mut conn, &row.ipv4)? {
                Some(sid) => carriers::update_sbc_address(&mut conn, &sid, row.port, row.tls_port, row.wss_port)?,
                None => {
                    let sid = uuid::Uuid::new_v4().to_string();
                    carriers::insert_sbc_address(&mut conn, &sid, &row.ipv4, row.port, row.tls_port, row.wss_port)?
                }
            }
        }
        let deleted = carriers::delete_stale_sbc_addresses(&mut conn, self.dead_sbc_age.as_secs())?;
        if deleted > 0 {
            info!("removed {deleted} stale sbc_addresses rows");
        }
        Ok(())
    }
}

fn describe(rows: &[SbcAddressRow]) -> String {
    if rows.is_empty() {
        return "none (all private)".to_string();
    }
    rows.iter()
        .map(|r| {
            let mut s = format!("{} udp={}", r.ipv4, r.port);
            if let Some(p) = r.tls_port {
                s.push_str(&format!(" tls={p}"));
            }
            if let Some(p) = r.wss_port {
                s.push_str(&format!(" wss={p}"));
            }
            s
        })
        .collect::<Vec<_>>()
        .join(", ")
}
