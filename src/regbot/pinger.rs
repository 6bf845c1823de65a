//! OPTIONS pings of carrier gateways (spec 7), on every instance, no leader election.
//!
//! A gateway that does not answer 2xx is blacklisted in Redis
//! (`blacklist-sip-gateway:<sid>` = `1` for `OPTIONS_PING_TTL`), which sbc-outbound and
//! sbc-inbound test with `EXISTS`; a 2xx clears it. Fixed from Node (spec 14, item 3): started once,
//! on the first drachtio connect, never again by reconnects; and a gateway whose last ping is
//! still unanswered is not pinged again on top of it.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use crossbeam_channel::{never, tick, Receiver, Select};
use log::{debug, info};

use super::alert_sink::AlertSink;
use super::{RegbotPools, RegbotSettings};
use crate::drachtio::{ConnectionEvent, DrachtioHandle, UacError, UacEvent};
use crate::sip::RequestBuilder;
use crate::store::carriers::{self, GatewayRow};
use crate::store::mysql::MysqlPool;
use crate::store::outage::OutageLog;
use crate::store::redis::{run, RedisPool};
use crate::store::StoreError;
use crate::telemetry::{Alert, PingFailure};

pub use crate::store::keys::blacklisted_gateway as blacklist_key;

/// The OPTIONS for a gateway and its next hop: Request-URI `sip[s]:<ipv4>[:<port>]` (port
/// only when set and not sips), proxy `sip:<ipv4>[:<port>];transport=<t>` (port only for an
/// IPv4 literal). drachtio fills From, To, Call-ID, CSeq and Via.
pub fn options_request(gw: &GatewayRow) -> (Vec<u8>, String) {
    let protocol = gw.protocol.as_deref().unwrap_or("udp");
    let transport = protocol.split('/').next().unwrap_or("udp").to_ascii_lowercase();
    let sips = protocol.to_ascii_lowercase().contains("tls") && gw.use_sips_scheme;
    let host = gw.ipv4.trim();
    let uri = match gw.port {
        Some(port) if !sips => format!("sip:{host}:{port}"),
        _ => format!("{}:{host}", if sips { "sips" } else { "sip" }),
    };
    let proxy = match gw.port {
        Some(port) if host.parse::<Ipv4Addr>().is_ok() => format!("sip:{host}:{port};transport={transport}"),
        _ => format!("sip:{host};transport={transport}"),
    };
    (RequestBuilder::new("OPTIONS", &uri).build(), proxy)
}

// Built and matched once per wake-up: boxing the UAC event would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Wake {
    Shutdown,
    Tick,
    Connection(Option<ConnectionEvent>),
    Uac(String, UacEvent),
}

pub struct GatewayPinger {
    settings: RegbotSettings,
    redis: RedisPool,
    mysql_read: MysqlPool,
    mysql_write: MysqlPool,
    drachtio: DrachtioHandle,
    events: Receiver<ConnectionEvent>,
    shutdown: Receiver<()>,
    /// Pings awaiting their final response, by gateway sid.
    in_flight: HashMap<String, (GatewayRow, Receiver<UacEvent>)>,
    /// Rounds are skipped while drachtio is down: a gateway must not be blacklisted (for
    /// every SBC of the cluster) because our own connection is gone.
    connected: bool,
    store_outage: OutageLog,
    alerts: AlertSink,
}

impl GatewayPinger {
    pub fn new(
        settings: RegbotSettings,
        pools: RegbotPools,
        drachtio: DrachtioHandle,
        events: Receiver<ConnectionEvent>,
        shutdown: Receiver<()>,
        alerts: AlertSink,
    ) -> GatewayPinger {
        let RegbotPools { redis, mysql_read, mysql_write } = pools;
        GatewayPinger {
            settings,
            redis,
            mysql_read,
            mysql_write,
            drachtio,
            events,
            shutdown,
            in_flight: HashMap::new(),
            connected: false,
            store_outage: OutageLog::new("gateway pinger", "database or redis"),
            alerts,
        }
    }

    pub fn run(mut self) {
        if !self.wait_for_first_connect() {
            return;
        }
        self.connected = true;
        let interval = self.settings.options_ping_interval.max(Duration::from_millis(100));
        info!("gateway OPTIONS pinger started interval={}ms", interval.as_millis());
        // The first round comes one interval after the connect, as in Node.
        let ticker = tick(interval);
        loop {
            match self.wait(&ticker) {
                Wake::Shutdown => break,
                Wake::Tick => self.round(),
                Wake::Connection(Some(ev)) => self.connected = matches!(ev, ConnectionEvent::Connected(_)),
                Wake::Connection(None) => self.events = never(),
                Wake::Uac(sid, ev) => self.on_event(&sid, ev),
            }
        }
        debug!("gateway OPTIONS pinger stopped");
    }

    fn wait_for_first_connect(&mut self) -> bool {
        loop {
            crossbeam_channel::select! {
                recv(self.events) -> ev => match ev {
                    Ok(ConnectionEvent::Connected(_)) => return true,
                    Ok(ConnectionEvent::Disconnected { .. }) => {}
                    Err(_) => return false,
                },
                recv(self.shutdown) -> _ => return false,
            }
        }
    }

    fn wait(&self, ticker: &Receiver<std::time::Instant>) -> Wake {
        let pings: Vec<(&String, &Receiver<UacEvent>)> =
            self.in_flight.iter().map(|(sid, (_, rx))| (sid, rx)).collect();
        let mut sel = Select::new();
        let i_shutdown = sel.recv(&self.shutdown);
        let i_tick = sel.recv(ticker);
        let i_events = sel.recv(&self.events);
        let first_ping = i_events + 1;
        for (_, rx) in &pings {
            sel.recv(rx);
        }
        let op = sel.select();
        let i = op.index();
        if i == i_shutdown {
            let _ = op.recv(&self.shutdown);
            Wake::Shutdown
        } else if i == i_tick {
            let _ = op.recv(ticker);
            Wake::Tick
        } else if i == i_events {
            Wake::Connection(op.recv(&self.events).ok())
        } else {
            let (sid, rx) = pings[i - first_ping];
            Wake::Uac(sid.clone(), op.recv(rx).unwrap_or(UacEvent::Failed(UacError::Disconnected)))
        }
    }

    fn round(&mut self) {
        if !self.connected {
            debug!("gateway pinger: drachtio not connected, round skipped");
            return;
        }
        let gateways = match self.mysql_read.conn().and_then(|mut c| carriers::options_ping_gateways(&mut c)) {
            Ok(g) => g,
            Err(e) => {
                self.store_outage.failed("cannot read the gateways to ping", &e);
                return;
            }
        };
        debug!("pinging {} gateways", gateways.len());
        for gw in gateways {
            if self.in_flight.contains_key(&gw.sip_gateway_sid) {
                continue;
            }
            let (sip, proxy) = options_request(&gw);
            let rx = self.drachtio.send_request(sip, Some(&proxy));
            self.in_flight.insert(gw.sip_gateway_sid.clone(), (gw, rx));
        }
    }

    fn on_event(&mut self, sid: &str, ev: UacEvent) {
        let outcome = match ev {
            UacEvent::Sent { .. } => return,
            UacEvent::Response { message, .. } => match message.status() {
                Some(status) if status >= 200 => Ok(status),
                _ => return,
            },
            UacEvent::Failed(e) => Err(e),
        };
        let Some((gw, _)) = self.in_flight.remove(sid) else {
            return;
        };
        if let Err(UacError::NotConnected | UacError::Disconnected) = &outcome {
            debug!("gateway pinger: ping of {} lost with the drachtio connection", gw.ipv4);
            return;
        }
        let result = match outcome {
            Ok(status) if (200..300).contains(&status) => self.clear_blacklist(&gw),
            Ok(status) => self.failed(&gw, PingFailure::Status(status)),
            Err(e) => self.failed(&gw, PingFailure::Error(&e.to_string())),
        };
        match result {
            Ok(()) => {
                self.store_outage.succeeded();
            }
            Err(e) => {
                self.store_outage.failed("cannot record a ping result", &e);
            }
        }
    }

    fn clear_blacklist(&self, gw: &GatewayRow) -> Result<(), StoreError> {
        let key = blacklist_key(&gw.sip_gateway_sid);
        let removed: i64 = run(&self.redis, |conn| Ok(redis::cmd("DEL").arg(&key).query(&mut **conn)?))?;
        if removed > 0 {
            info!("gateway {} answers OPTIONS again; removed from the blacklist", gw.ipv4);
        }
        Ok(())
    }

    fn failed(&self, gw: &GatewayRow, failure: PingFailure<'_>) -> Result<(), StoreError> {
        // SET NX EX: blacklisted with its TTL only when not already (EXISTS + SETEX in Node).
        let ttl = self.settings.options_ping_ttl.as_secs().max(1);
        let key = blacklist_key(&gw.sip_gateway_sid);
        let set: Option<String> = run(&self.redis, |conn| {
            Ok(redis::cmd("SET").arg(&key).arg(1).arg("EX").arg(ttl).arg("NX").query(&mut **conn)?)
        })?;
        let protocol = gw.protocol.as_deref().unwrap_or("udp");
        if set.is_some() {
            self.alerts.raise(Alert::options_ping_failed(&gw.ipv4, gw.port, protocol, failure, None, None));
        }
        let status = match failure {
            PingFailure::Status(status) => Some(status),
            PingFailure::Error(_) => None,
        };
        if let Some(status) = status.filter(|s| self.settings.options_response_remove.contains(s)) {
            carriers::disable_options_ping(&mut self.mysql_write.conn()?, &gw.sip_gateway_sid)?;
            let carrier = carriers::carrier_by_sid(&mut self.mysql_read.conn()?, &gw.voip_carrier_sid)?;
            let (name, account_sid, service_provider_sid) = match carrier {
                Some(c) => (c.name, c.account_sid, c.service_provider_sid),
                None => (String::new(), None, None),
            };
            self.alerts.raise(Alert::options_ping_disabled(
                &gw.ipv4,
                &name,
                &gw.voip_carrier_sid,
                status,
                account_sid.as_deref(),
                service_provider_sid.as_deref(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(ipv4: &str, port: Option<u16>, protocol: &str, sips: bool) -> GatewayRow {
        GatewayRow {
            sip_gateway_sid: "g".into(),
            voip_carrier_sid: "c".into(),
            ipv4: ipv4.into(),
            port,
            protocol: Some(protocol.into()),
            outbound: true,
            is_active: true,
            use_sips_scheme: sips,
        }
    }

    fn first_line(sip: &[u8]) -> String {
        String::from_utf8_lossy(sip).lines().next().unwrap_or("").to_string()
    }

    #[test]
    fn options_uri_and_proxy_follow_spec_7() {
        let (sip, proxy) = options_request(&gw("192.0.2.1", Some(5080), "udp", false));
        assert_eq!(first_line(&sip), "OPTIONS sip:192.0.2.1:5080 SIP/2.0");
        assert_eq!(proxy, "sip:192.0.2.1:5080;transport=udp");

        let (sip, proxy) = options_request(&gw("gw.example", Some(5061), "tls/srtp", true));
        assert_eq!(first_line(&sip), "OPTIONS sips:gw.example SIP/2.0", "no port with sips");
        assert_eq!(proxy, "sip:gw.example;transport=tls", "no port for a DNS name");

        let (sip, proxy) = options_request(&gw("192.0.2.1", None, "tcp", false));
        assert_eq!(first_line(&sip), "OPTIONS sip:192.0.2.1 SIP/2.0");
        assert_eq!(proxy, "sip:192.0.2.1;transport=tcp");
        assert_eq!(blacklist_key("g1"), "blacklist-sip-gateway:g1");
    }
}
