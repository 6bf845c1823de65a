//! The regbot phase's registrar: an in-process UDP registrar on 127.0.0.1 that answers every
//! REGISTER with `200 OK` granting `E` seconds and records when each one arrived.

use super::*;

/// What the registrar knows about one Call-ID.
pub struct Seen {
    pub first: Instant,
    pub first_cseq: u64,
    pub last_cseq: u64,
    /// The first REGISTER with another CSeq (the first refresh).
    pub second: Option<Instant>,
}

#[derive(Default)]
pub struct Book {
    /// (arrival, Call-ID index in `calls`, CSeq, Expires asked for) of every REGISTER.
    pub requests: Vec<(Instant, usize, u64, Option<u64>)>,
    pub calls: Vec<Seen>,
    pub by_call_id: HashMap<String, usize>,
    pub retransmissions: usize,
    pub expires_asked: HashMap<u64, usize>,
    pub unparsable: usize,
}

pub struct Registrar {
    pub addr: SocketAddr,
    pub book: Arc<Mutex<Book>>,
    pub distinct: Arc<AtomicUsize>,
    pub refreshed: Arc<AtomicUsize>,
    pub total: Arc<AtomicUsize>,
    pub stop: Arc<AtomicBool>,
    pub thread: Option<JoinHandle<()>>,
}

impl Registrar {
    pub fn start(expires: u64) -> io::Result<Registrar> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let book = Arc::new(Mutex::new(Book::default()));
        let distinct = Arc::new(AtomicUsize::new(0));
        let refreshed = Arc::new(AtomicUsize::new(0));
        let total = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, d, r, t, s) = (book.clone(), distinct.clone(), refreshed.clone(), total.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("bench-registrar".into())
            .spawn(move || registrar_loop(socket, expires, b, d, r, t, s))?;
        Ok(Registrar { addr, book, distinct, refreshed, total, stop, thread: Some(thread) })
    }
}

impl Drop for Registrar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn registrar_loop(
    socket: UdpSocket,
    expires: u64,
    book: Arc<Mutex<Book>>,
    distinct: Arc<AtomicUsize>,
    refreshed: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(_) => continue, // timeout: look at the stop flag
        };
        let at = Instant::now();
        let Some(req) = Register::parse(&buf[..n]) else {
            if let Ok(mut b) = book.lock() {
                b.unparsable += 1;
            }
            continue;
        };
        let _ = socket.send_to(req.ok_response(expires).as_bytes(), from);
        total.fetch_add(1, Ordering::Relaxed);
        let Ok(mut b) = book.lock() else { continue };
        let b = &mut *b;
        if let Some(e) = req.expires {
            *b.expires_asked.entry(e).or_default() += 1;
        }
        let index = match b.by_call_id.get(&req.call_id) {
            Some(&i) => {
                let seen = &mut b.calls[i];
                if req.cseq == seen.last_cseq {
                    b.retransmissions += 1;
                } else {
                    if seen.second.is_none() && req.cseq != seen.first_cseq {
                        seen.second = Some(at);
                        refreshed.fetch_add(1, Ordering::Relaxed);
                    }
                    seen.last_cseq = req.cseq;
                }
                i
            }
            None => {
                let i = b.calls.len();
                b.calls.push(Seen { first: at, first_cseq: req.cseq, last_cseq: req.cseq, second: None });
                b.by_call_id.insert(req.call_id.clone(), i);
                distinct.fetch_add(1, Ordering::Relaxed);
                i
            }
        };
        b.requests.push((at, index, req.cseq, req.expires));
    }
}

/// The parts of a REGISTER the answer copies.
pub struct Register {
    pub vias: Vec<String>,
    pub from: String,
    pub to: String,
    pub call_id: String,
    pub cseq_line: String,
    pub cseq: u64,
    pub contact_uri: Option<String>,
    pub expires: Option<u64>,
}

impl Register {
    pub fn parse(bytes: &[u8]) -> Option<Register> {
        let text = std::str::from_utf8(bytes).ok()?;
        let head = text.split("\r\n\r\n").next()?;
        let mut lines = head.split("\r\n");
        if !lines.next()?.starts_with("REGISTER ") {
            return None;
        }
        let mut r = Register {
            vias: Vec::new(),
            from: String::new(),
            to: String::new(),
            call_id: String::new(),
            cseq_line: String::new(),
            cseq: 0,
            contact_uri: None,
            expires: None,
        };
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "via" | "v" => r.vias.push(value.to_string()),
                "from" | "f" => r.from = value.to_string(),
                "to" | "t" => r.to = value.to_string(),
                "call-id" | "i" => r.call_id = value.to_string(),
                "cseq" => {
                    r.cseq_line = value.to_string();
                    r.cseq = value.split_whitespace().next()?.parse().ok()?;
                }
                "contact" | "m" => {
                    r.contact_uri =
                        value.split_once('<').and_then(|(_, rest)| rest.split_once('>')).map(|(u, _)| u.to_string())
                }
                "expires" => r.expires = value.parse().ok(),
                _ => {}
            }
        }
        if r.vias.is_empty() || r.call_id.is_empty() || r.cseq_line.is_empty() {
            return None;
        }
        Some(r)
    }

    pub fn ok_response(&self, expires: u64) -> String {
        let mut out = String::with_capacity(512);
        out.push_str("SIP/2.0 200 OK\r\n");
        for via in &self.vias {
            out.push_str(&format!("Via: {via}\r\n"));
        }
        out.push_str(&format!("From: {}\r\n", self.from));
        if self.to.contains(";tag=") {
            out.push_str(&format!("To: {}\r\n", self.to));
        } else {
            out.push_str(&format!("To: {};tag=benchreg\r\n", self.to));
        }
        out.push_str(&format!("Call-ID: {}\r\nCSeq: {}\r\n", self.call_id, self.cseq_line));
        if let Some(uri) = &self.contact_uri {
            out.push_str(&format!("Contact: <{uri}>;expires={expires}\r\n"));
        }
        out.push_str(&format!("Expires: {expires}\r\nContent-Length: 0\r\n\r\n"));
        out
    }
}
