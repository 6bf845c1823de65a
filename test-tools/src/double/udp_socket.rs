//! Socket options of the double's SIP UDP socket that std does not offer: a larger receive
//! buffer, and the ICMP error queue through which drachtio (sofia's `tport_udp_error`) learns
//! that a UDP request went to a closed port and answers the app `503` within a millisecond
//! (drachtio-protocol.md §7.4, drachtio-capture-uac.txt step d1).
//!
//! With `IP_RECVERR` set, an ICMP error for any datagram the socket sent makes the next receive
//! fail (ECONNREFUSED for port unreachable) and queues the details, with the destination of
//! the datagram that caused it, on the socket's error queue (ip(7)).

use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

fn set_int_option(udp: &UdpSocket, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: a valid socket descriptor and a c_int option value of the size passed.
    unsafe {
        libc::setsockopt(
            udp.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Asks for a 4 MB receive buffer (the kernel caps it at net.core.rmem_max). The default
/// 208 KB holds only about a hundred small datagrams: a burst of a few hundred REGISTERs, as
/// the benchmark sends and as a SIP server facing many devices sees, overflowed it and the
/// lost requests showed up as 500 ms retransmissions. Best effort: failure leaves the default.
pub(crate) fn enlarge_receive_buffer(udp: &UdpSocket) {
    set_int_option(udp, libc::SOL_SOCKET, libc::SO_RCVBUF, 4 * 1024 * 1024);
}

/// Turns on the ICMP error queue (IPv4 sockets; the double binds 127.0.0.x).
pub(crate) fn report_icmp_errors(udp: &UdpSocket) {
    set_int_option(udp, libc::IPPROTO_IP, libc::IP_RECVERR, 1);
}

/// Takes every queued error off the socket and returns the destinations that were found
/// unreachable (ICMP destination unreachable: port, host, network, …). Never blocks.
pub(crate) fn take_unreachable_destinations(udp: &UdpSocket) -> Vec<SocketAddr> {
    let mut unreachable = Vec::new();
    // Bounded: the queue is drained in a few rounds, and a flood cannot hold the reader here.
    for _ in 0..64 {
        // SAFETY: every pointer in `msg` points at a live local buffer of the length given, and
        // the control messages are walked with the CMSG_* macros within msg_controllen.
        unsafe {
            let mut name: libc::sockaddr_in = zeroed();
            let mut data = [0u8; 1024];
            let mut control = [0u8; 512];
            let mut iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
            let mut msg: libc::msghdr = zeroed();
            msg.msg_name = (&mut name as *mut libc::sockaddr_in).cast();
            msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = control.len() as _;
            if libc::recvmsg(udp.as_raw_fd(), &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) < 0 {
                break;
            }
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::IPPROTO_IP && (*cmsg).cmsg_type == libc::IP_RECVERR {
                    let err = &*(libc::CMSG_DATA(cmsg) as *const libc::sock_extended_err);
                    // ICMP type 3: destination unreachable.
                    if err.ee_origin == libc::SO_EE_ORIGIN_ICMP
                        && err.ee_type == 3
                        && name.sin_family as i32 == libc::AF_INET
                    {
                        let ip = Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr));
                        let addr = SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(name.sin_port)));
                        if !unreachable.contains(&addr) {
                            unreachable.push(addr);
                        }
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
    }
    unreachable
}
