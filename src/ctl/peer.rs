//! Who may use the CLI socket: root, the daemon's own user, and members of `SBC_CTL_GROUP`.
//!
//! The socket's mode already keeps others out when it lives in the package's run directory,
//! but not when an operator points `SBC_SOCKET_PATH` somewhere else or loosens a mode: the
//! daemon asks the kernel who is calling (`SO_PEERCRED`, read through rustix's safe wrapper:
//! the library forbids `unsafe`, and std's `UnixStream::peer_cred` is not stable) and refuses
//! anyone else with one clear error line.
//!
//! Group membership is the caller's primary group, a supplementary group of its process
//! (`/proc/<pid>/status`, when visible), or the member list of the group in `/etc/group`.

use std::fs;
use std::os::fd::AsFd;

/// The error line a refused client reads (then the connection is closed).
pub fn refusal(uid: u32) -> String {
    format!(
        "Permission denied: uid {uid} may not use the sbc-sidecar control socket \
         (allowed: root, the daemon's own user, members of SBC_CTL_GROUP)"
    )
}

/// The credentials the kernel recorded for the other end of a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// `SO_PEERCRED` of a connected Unix socket.
pub fn peer_of(socket: &impl AsFd) -> std::io::Result<Peer> {
    let cred = rustix::net::sockopt::socket_peercred(socket)?;
    Ok(Peer { pid: cred.pid.as_raw_nonzero().get(), uid: cred.uid.as_raw(), gid: cred.gid.as_raw() })
}

/// Which peers are let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    /// The daemon's own uid (the owner of the socket file it created).
    pub own_uid: u32,
    /// `SBC_CTL_GROUP`: its name (for the member list) and gid.
    pub group: Option<(String, u32)>,
}

impl PeerPolicy {
    pub fn allows(&self, peer: &Peer) -> bool {
        if peer.uid == 0 || peer.uid == self.own_uid {
            return true;
        }
        let Some((name, gid)) = &self.group else {
            return false;
        };
        peer.gid == *gid
            || process_groups(peer.pid).contains(gid)
            || user_name(peer.uid).is_some_and(|user| group_members(name).contains(&user))
    }
}

/// The gid of group `name` in `/etc/group`.
pub fn group_gid(name: &str) -> Option<u32> {
    let groups = fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

fn group_members(name: &str) -> Vec<String> {
    let groups = fs::read_to_string("/etc/group").unwrap_or_default();
    groups
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() == 4 && fields[0] == name).then(|| fields[3].split(',').map(str::to_string).collect())
        })
        .unwrap_or_default()
}

fn user_name(uid: u32) -> Option<String> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}

/// The supplementary groups of process `pid` (empty when its /proc entry is hidden).
fn process_groups(pid: i32) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|list| list.split_whitespace().filter_map(|g| g.parse().ok()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn the_kernel_reports_our_own_credentials_for_a_socket_pair() {
        let (a, _b) = UnixStream::pair().unwrap();
        let peer = peer_of(&a).unwrap();
        assert_eq!(peer.pid, std::process::id() as i32);
        let me = fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap();
        assert_eq!(peer.uid, me);
    }

    #[test]
    fn root_the_own_user_and_group_members_are_allowed() {
        let policy = PeerPolicy { own_uid: 1234, group: Some(("sbc-ctl-test".into(), 4321)) };
        let peer = |uid, gid| Peer { pid: i32::MAX, uid, gid };
        assert!(policy.allows(&peer(0, 0)));
        assert!(policy.allows(&peer(1234, 99)));
        assert!(policy.allows(&peer(5000, 4321)));
        assert!(!policy.allows(&peer(5000, 5000)));
        let no_group = PeerPolicy { own_uid: 1234, group: None };
        assert!(!no_group.allows(&peer(5000, 4321)));
    }

    #[test]
    fn groups_are_read_from_etc_group() {
        assert_eq!(group_gid("root"), Some(0));
        assert_eq!(group_gid("no-such-group-sbc"), None);
        assert_eq!(user_name(0).as_deref(), Some("root"));
    }
}
