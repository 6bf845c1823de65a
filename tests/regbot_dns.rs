//! A reg trunk on a DNS name: the SRV of its transport, answered by a fake DNS server, becomes
//! ephemeral gateways. The rig is tests/support/regbot_rig.rs.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use sbc_sidecar::regbot::DnsSettings;
use sbc_test_tools::db::TestDb;
use sbc_test_tools::wait_until;

#[path = "support/regbot_rig.rs"]
mod regbot_rig;
use regbot_rig::*;

/// A DNS server for one zone: answers SRV and A questions from its tables, NXDOMAIN
/// otherwise, and remembers the questions.
struct FakeDns {
    addr: SocketAddr,
    questions: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDns {
    fn start(srv: Vec<(&'static str, u16, &'static str)>, a: Vec<(&'static str, Ipv4Addr)>) -> FakeDns {
        use simple_dns::rdata::{RData, A, SRV};
        use simple_dns::{Name, Packet, ResourceRecord, CLASS, QTYPE, RCODE, TYPE};
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = socket.local_addr().unwrap();
        let questions = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (q, st) = (questions.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                let Ok(query) = Packet::parse(&buf[..n]) else { continue };
                let mut reply = Packet::new_reply(query.id());
                for question in &query.questions {
                    let name = question.qname.to_string();
                    let kind = if question.qtype == QTYPE::TYPE(TYPE::SRV) { "SRV" } else { "A" };
                    q.lock().unwrap().push(format!("{kind} {name}"));
                    reply.questions.push(question.clone());
                    for (n, port, target) in &srv {
                        if kind == "SRV" && *n == name {
                            let rdata = RData::SRV(SRV {
                                priority: 10,
                                weight: 0,
                                port: *port,
                                target: Name::new_unchecked(target),
                            });
                            reply.answers.push(ResourceRecord::new(Name::new_unchecked(n), CLASS::IN, 60, rdata));
                        }
                    }
                    for (n, ip) in &a {
                        if kind == "A" && *n == name {
                            let rdata = RData::A(A { address: u32::from(*ip) });
                            reply.answers.push(ResourceRecord::new(Name::new_unchecked(n), CLASS::IN, 60, rdata));
                        }
                    }
                }
                if reply.answers.is_empty() {
                    *reply.rcode_mut() = RCODE::NameError;
                }
                if let Ok(bytes) = reply.build_bytes_vec() {
                    let _ = socket.send_to(&bytes, from);
                }
            }
        });
        FakeDns { addr, questions, stop, thread: Some(thread) }
    }

    fn questions(&self) -> Vec<String> {
        self.questions.lock().unwrap().clone()
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_reg_trunk_on_a_dns_name_writes_ephemeral_gateways_from_the_srv_of_its_transport() {
    let db = TestDb::create();
    let double = start_double(Duration::from_secs(2));
    let dns = FakeDns::start(
        vec![("_sip._tcp.carrier.regbot.test", 5060, "edge.carrier.regbot.test")],
        vec![("edge.carrier.regbot.test", Ipv4Addr::new(127, 0, 0, 165))],
    );
    let carrier = add_carrier(&db, CarrierRow { trunk_type: "reg", ..CarrierRow::default() });
    add_gateway(&db, &carrier, "carrier.regbot.test", None, "tcp", false);
    let mut s = settings(&cluster());
    s.dns = DnsSettings { servers: vec![dns.addr], timeout: Duration::from_millis(500), attempts: 1 };
    let sidecar = Instance::start(&double, &db, s);

    // the double resolves no names: the REGISTER gets the stack's 503, with expires 0
    let status = wait_for_status(&db, &carrier, "failure recorded", |s| s["status"] == "fail");
    assert_eq!(status["reason"], "503 Service Unavailable");
    assert!(wait_until(WAIT, || eph_field("127.0.0.165", &carrier).is_some()), "questions: {:?}", dns.questions());
    let at = eph_field("127.0.0.165", &carrier).unwrap();
    assert!(at.abs_diff(unix_now()) <= 3, "a failure writes `now`: readers see it expired");
    let questions = dns.questions();
    assert_eq!(questions[0], "SRV _sip._tcp.carrier.regbot.test", "SRV for the gateway's own transport");
    assert!(questions.contains(&"A edge.carrier.regbot.test".to_string()), "{questions:?}");
    assert!(!questions.iter().any(|q| q.contains("_sip._udp")), "{questions:?}");
    let snap = sidecar.snapshot();
    assert_eq!(snap.regbots[0].target, "carrier.regbot.test;transport=tcp");
    drop(sidecar);
    let _: () = redis_query(redis::cmd("DEL").arg("eph-gw-ip:127.0.0.165"));
}
