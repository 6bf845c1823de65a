//! The Redis set names of one cluster (spec 12.1), shared by the heartbeat role and the CLI server.

/// `<cluster>:active-fs` and friends. `<cluster>` is `JAMBONES_CLUSTER_ID`, `default` when unset;
/// the config module resolves that default, this type just prefixes what it is given.
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

/// The sorted set of registered users (not cluster-prefixed): member `user:<aor>`, score = expiry
/// in Unix milliseconds. Written by the registrar; the CLI `status` action counts it.
pub const ACTIVE_USER: &str = "active-user";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_names_are_prefixed_with_the_cluster_id() {
        let s = ClusterSets::new("default");
        assert_eq!(s.active_fs, "default:active-fs");
        assert_eq!(s.active_rtp, "default:active-rtp");
        assert_eq!(s.fs_service_url, "default:fs-service-url");
        assert_eq!(s.drained_fs, "default:drained-fs");
    }
}
