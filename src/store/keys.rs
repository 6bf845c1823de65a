//! Every Redis key and member format of the Node contract (spec 12.1), and the few of our own,
//! in one place: sbc-inbound, sbc-outbound, the feature server and the API server read and
//! write the same keys, so a name here is part of the drop-in promise.
//!
//! Keys without a cluster prefix are shared by every cluster using the Redis (that is the
//! Node layout); `<cluster>` is `JAMBONES_CLUSTER_ID`, `default` when unset (the config module
//! resolves that default; these functions prefix what they are given).

/// The sorted set of registrations: member [`user_key`]`(aor)`, score = expiry in Unix
/// milliseconds. Written by the registrar; counted by the `sbc.users.count` gauge and the CLI.
pub const ACTIVE_USER: &str = "active-user";

/// `user:<aor>`: the JSON string of one registration, and its member in [`ACTIVE_USER`].
pub fn user_key(aor: &str) -> String {
    format!("user:{aor}")
}

/// The address of record of an [`ACTIVE_USER`] member (`user:alice@a.org` → `alice@a.org`).
pub fn aor_of_member(member: &str) -> Option<&str> {
    member.strip_prefix("user:")
}

/// The user part of an [`ACTIVE_USER`] member: the text between `user:` and the last `@`, as
/// the Node registrar counted users (spec 4.5, `getCountOfUsers`).
pub fn user_of_member(member: &str) -> Option<&str> {
    aor_of_member(member)?.rsplit_once('@').map(|(user, _)| user)
}

/// The heartbeat sets of one cluster (spec 12.1), shared by the heartbeat role and the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSets {
    /// `ip:port` of every feature server that checked in `open` (IPv6 as `[addr]:port`).
    pub active_fs: String,
    /// Bare IP of every RTP server that checked in `open`.
    pub active_rtp: String,
    /// The `X-FS-ServiceUrl` values of open feature servers.
    pub fs_service_url: String,
    /// Feature servers an operator drained: bare IPs or `ip:port`, written only by the CLI.
    pub drained_fs: String,
}

impl ClusterSets {
    pub fn new(cluster_id: &str) -> ClusterSets {
        ClusterSets {
            active_fs: format!("{cluster_id}:active-fs"),
            active_rtp: format!("{cluster_id}:active-rtp"),
            fs_service_url: format!("{cluster_id}:fs-service-url"),
            drained_fs: format!("{cluster_id}:drained-fs"),
        }
    }
}

/// `<cluster>:regbot-token`: who holds the outbound-registration role (spec 6.1).
pub fn regbot_token(cluster_id: &str) -> String {
    format!("{cluster_id}:regbot-token")
}

/// `<cluster>:regbot-members` (ours, `SBC_REGBOT_MODE`): the SBCs taking part.
pub fn regbot_members(cluster_id: &str) -> String {
    format!("{cluster_id}:regbot-members")
}

/// `<cluster>:regbot-sbcs:<carrier>` (ours): the SBCs holding a registration for a carrier.
pub fn regbot_sbcs(cluster_id: &str, voip_carrier_sid: &str) -> String {
    format!("{cluster_id}:regbot-sbcs:{voip_carrier_sid}")
}

/// `<cluster>:regbot-leader-contacts` (ours): in leader mode, gateway sid → the Contact
/// `user@host` the leader registered it with.
pub fn regbot_leader_contacts(cluster_id: &str) -> String {
    format!("{cluster_id}:regbot-leader-contacts")
}

/// `<cluster>:regbot-failures:<carrier>` (ours): failed registrations counted cluster-wide.
pub fn regbot_failures(cluster_id: &str, voip_carrier_sid: &str) -> String {
    format!("{cluster_id}:regbot-failures:{voip_carrier_sid}")
}

/// `eph-gw-ip:<ip>`: an ephemeral gateway address of a registration carrier (spec 6.5).
pub fn ephemeral_gateway(ip: &std::net::Ipv4Addr) -> String {
    format!("eph-gw-ip:{ip}")
}

/// `blacklist-sip-gateway:<sid>`: a gateway that stopped answering OPTIONS (spec 7).
pub fn blacklisted_gateway(sip_gateway_sid: &str) -> String {
    format!("blacklist-sip-gateway:{sip_gateway_sid}")
}

/// Prefix of our one-time digest-answer keys, `sbc-nonce-use:<32 hex>` (not cluster-prefixed:
/// nonces are valid on every SBC sharing the secret, which share one Redis).
pub const NONCE_USE_PREFIX: &str = "sbc-nonce-use:";

/// `<cluster>:sbc-sidecar-preflight:<pid>-<nanos>`: the throw-away key `--check` writes.
pub fn preflight_probe(cluster_id: &str, pid: u32, nanos: u128) -> String {
    format!("{cluster_id}:sbc-sidecar-preflight:{pid}-{nanos}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_names() {
        assert_eq!(user_key("alice@a.org"), "user:alice@a.org");
        assert_eq!(user_of_member("user:we@ird@a.org"), Some("we@ird"));
        assert_eq!(aor_of_member("other"), None);
        let s = ClusterSets::new("default");
        assert_eq!(s.active_fs, "default:active-fs");
        assert_eq!(s.active_rtp, "default:active-rtp");
        assert_eq!(s.fs_service_url, "default:fs-service-url");
        assert_eq!(s.drained_fs, "default:drained-fs");
        assert_eq!(regbot_token("c"), "c:regbot-token");
        assert_eq!(regbot_sbcs("c", "v"), "c:regbot-sbcs:v");
        assert_eq!(ephemeral_gateway(&[192, 0, 2, 1].into()), "eph-gw-ip:192.0.2.1");
        assert_eq!(blacklisted_gateway("g1"), "blacklist-sip-gateway:g1");
    }
}
