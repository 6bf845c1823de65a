//! Randomised robustness of the SIP codec and the drachtio frame decoder.
//!
//! Everything that reads bytes from the network is fed random bytes, truncations at every
//! offset and random mutations of real captured traffic (docs/spec/drachtio-capture*.txt). The only
//! acceptable outcomes are `Ok` or a typed error: never a panic. Where a parser has a printer,
//! whatever parses must print back to something that parses to the same value, and the frame
//! decoder must give the same frames whatever way the stream is split.
//!
//! The generator is seeded, so a failure names an iteration that reproduces exactly.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sbc_sidecar::drachtio::frame::{encode_unchecked, FrameDecoder, FrameError};
use sbc_sidecar::sip::{
    parse_authorization, parse_challenge, parse_contacts, replace_first_expires, top_via, CSeq, NameAddr, SipMessage,
    SipUri, Via,
};

const SEED: u64 = 0x5b_c5_1d_ec_a5;

// ---- captured frames (exact bytes from docs/spec/drachtio-capture.txt and -uac.txt) ----

const PING: &[u8] = b"41#4e67c179-e765-458c-be81-42246b15b9db|ping";

const PONG: &[u8] = b"90#f42a5180-6124-4987-abc5-853460e3c8b1|response|4e67c179-e765-458c-be81-42246b15b9db|OK|pong";

const REGISTER_UDP: &[u8] = b"509#16b7a9dd-67bd-4860-a385-610634ada832|sip|network|355|udp|127.0.0.1|5070|10:02:44.185253|95a0c875-8247-4444-8d4b-6707da2fc141||127.0.0.1|5060|\r\n\
    REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n\
    Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-12816-1-0;rport=5070\r\n\
    Max-Forwards: 70\r\n\
    From: <sip:alice@127.0.0.1:5060>;tag=12816SIPpTag001\r\n\
    To: <sip:alice@127.0.0.1:5060>\r\n\
    Call-ID: 1-12816@127.0.0.1\r\n\
    CSeq: 1 REGISTER\r\n\
    Contact: <sip:alice@127.0.0.1:5070;transport=UDP>\r\n\
    Expires: 3600\r\n\
    User-Agent: sipp-test\r\n\
    Content-Length: 0\r\n\
    \r\n\
    ";

const CHALLENGE_401: &[u8] = b"493#96ad89f2-3d15-4695-b053-2ac491a45577|sip|network|364|udp|127.0.0.14|5060|10:44:34.627733|4deb4b1b-2e0a-49c2-bb67-d8ae408565cf||\r\n\
    SIP/2.0 401 Unauthorized\r\n\
    Via: SIP/2.0/UDP 127.0.0.10;rport;branch=z9hG4bKN14gFDa8KBjrN\r\n\
    From: <sip:reguser@regdomain>;tag=5cb2c73a\r\n\
    To: <sip:reguser@regdomain>;tag=uas32103t1\r\n\
    Call-ID: reg-9a14e206-b996-4463-8ebe-278f391bcd69\r\n\
    CSeq: 1 REGISTER\r\n\
    WWW-Authenticate: Digest realm=\"sip.jambonz.org\", nonce=\"acc32103n1\", qop=\"auth\", algorithm=MD5\r\n\
    Content-Length: 0\r\n\
    \r\n\
    ";

const REGISTER_WITH_AUTHORIZATION: &[u8] = b"761#202f510d-4ad9-4686-95fa-9d9ddb346e1a|response|14c76be3-5f49-4b98-962d-32c64f342b94|OK|application|574|udp|127.0.0.10|5060|10:44:34.628927|818213eb-9860-40f8-aba5-b07d55005162|Msg sent:|\r\n\
    REGISTER sip:sip.jambonz.org SIP/2.0\r\n\
    Via: SIP/2.0/UDP 127.0.0.10;rport;branch=z9hG4bKpay9g8tBHm8aH\r\n\
    Max-Forwards: 70\r\n\
    From: <sip:reguser@regdomain>;tag=5cb2c73a\r\n\
    To: <sip:reguser@regdomain>\r\n\
    Call-ID: reg-9a14e206-b996-4463-8ebe-278f391bcd69\r\n\
    CSeq: 2 REGISTER\r\n\
    Contact: <sip:reguser@127.0.0.10:5060>\r\n\
    Expires: 3600\r\n\
    User-Agent: capture-uac\r\n\
    Authorization: Digest username=\"foo\", realm=\"sip.jambonz.org\", nonce=\"acc32103n1\", uri=\"sip:sip.jambonz.org\", response=\"5f9843497b7bbedafb3f55300bf36b1a\", algorithm=MD5, cnonce=\"c5502d28\", qop=auth, nc=00000001\r\n\
    Content-Length: 0\r\n\
    \r\n\
    ";

const REGISTERED_200: &[u8] = b"452#80d201f1-6449-4af3-9113-ae1081d87636|sip|network|323|udp|127.0.0.14|5060|10:44:34.630034|818213eb-9860-40f8-aba5-b07d55005162||\r\n\
    SIP/2.0 200 OK\r\n\
    Via: SIP/2.0/UDP 127.0.0.10;rport;branch=z9hG4bKpay9g8tBHm8aH\r\n\
    From: <sip:reguser@regdomain>;tag=5cb2c73a\r\n\
    To: <sip:reguser@regdomain>;tag=uas32103t1\r\n\
    Call-ID: reg-9a14e206-b996-4463-8ebe-278f391bcd69\r\n\
    CSeq: 2 REGISTER\r\n\
    Contact: <sip:reguser@127.0.0.10:5060>;expires=600\r\n\
    Expires: 900\r\n\
    Content-Length: 0\r\n\
    \r\n\
    ";

const OPTIONS_FROM_FS: &[u8] = b"483#4a32359c-9f28-449d-b259-9fbec3dab286|sip|network|327|udp|127.0.0.20|5060|10:45:08.195240|3c09d20c-64b3-4564-a509-8952a60fdffc||127.0.0.10|5060|\r\n\
    OPTIONS sip:127.0.0.10:5060 SIP/2.0\r\n\
    Via: SIP/2.0/UDP 127.0.0.20:5060;branch=z9hG4bK-32335-1-0;rport=5060\r\n\
    From: <sip:fs@127.0.0.20:5060>;tag=32335o1\r\n\
    To: <sip:127.0.0.10:5060>\r\n\
    Call-ID: 1-32335@127.0.0.20\r\n\
    CSeq: 1 OPTIONS\r\n\
    Max-Forwards: 70\r\n\
    X-FS-Status: open\r\n\
    X-FS-ServiceUrl: http://127.0.0.20:3000\r\n\
    X-FS-Calls: 0\r\n\
    Content-Length: 0\r\n\
    \r\n\
    ";

const UNAVAILABLE_503_BARE_TO: &[u8] = b"415#59102a32-aa53-42a7-abda-3c0d84f27c10|sip|network|0|tcp||0|10:45:07.064051|0d8255aa-9bce-43b2-a070-aefac045c073||\r\n\
    SIP/2.0 503 Service Unavailable\r\n\
    Via: SIP/2.0/TCP 127.0.0.10;branch=z9hG4bKS59KpSDp8eB3K\r\n\
    From: <sip:127.0.0.10:5060;transport=tcp>;tag=SDgvrS1S5Qj4N\r\n\
    To: sip:127.0.0.18:5060;transport=tcp;tag=tp9mtmjX208pH\r\n\
    Call-ID: 73a8b2b8-64f2-1240-4c97-d2ca60ea5eec\r\n\
    CSeq: 123334361 OPTIONS\r\n\
    Content-Length: 0\r\n\
    \r\n\
    ";

const APP_RESPONSE: &[u8] = b"234#8794d59d-a1b0-48e5-9877-39d4c582dd25|sip|deadbeef-0000-4000-8000-000000000000|\r\n\
    SIP/2.0 200 OK\r\n\
    Call-ID: no-such-call@127.0.0.99\r\n\
    CSeq: 1 OPTIONS\r\n\
    From: <sip:nobody@127.0.0.99>;tag=abc\r\n\
    To: <sip:127.0.0.10:5060>\r\n\
    Content-Length: 0\r\n\
    \r\n\
    ";

const OPTIONS_PROBE: &[u8] = b"OPTIONS sip:127.0.0.10:5060 SIP/2.0\r\n\
    Via: SIP/2.0/UDP 127.0.0.21:5060;branch=z9hG4bK-h-ace39590\r\n\
    Max-Forwards: 70\r\n\
    From: <sip:probe@127.0.0.21:5060>;tag=h0222a875\r\n\
    To: <sip:127.0.0.10:5060>\r\n\
    Call-ID: h-3f41ea29-6152-4c4b-9c92-c26c43a7a6d2@127.0.0.21\r\n\
    CSeq: 1 OPTIONS\r\n\
    X-FS-Status: open\r\n\
    Content-Length: 0\r\n\
    \r\n\
    ";

/// The drachtio `sip` frames above.
const SIP_FRAMES: &[&[u8]] = &[
    REGISTER_UDP,
    CHALLENGE_401,
    REGISTER_WITH_AUTHORIZATION,
    REGISTERED_200,
    OPTIONS_FROM_FS,
    UNAVAILABLE_503_BARE_TO,
    APP_RESPONSE,
];

/// Every captured frame, in a plausible stream order.
const ALL_FRAMES: &[&[u8]] = &[
    PING,
    PONG,
    REGISTER_UDP,
    CHALLENGE_401,
    REGISTER_WITH_AUTHORIZATION,
    REGISTERED_200,
    OPTIONS_FROM_FS,
    UNAVAILABLE_503_BARE_TO,
    APP_RESPONSE,
];

// ---- header values (captured, plus the awkward forms the parsers must handle) ----

const URIS: &[&str] = &[
    "sip:127.0.0.1:5060",
    "sip:alice@127.0.0.1:5070;transport=UDP",
    "sip:reguser@regdomain",
    "sip:sip.jambonz.org",
    "sip:127.0.0.14:5060;transport=udp",
    "sips:bob:pw@[2001:db8::1]:5061;lr;maddr=127.0.10.1?subject=hi&x=y",
    "sip:alice;day=tuesday@atlanta.com",
    "sip:jane@jambonz.org@jambonz.org",
];

const NAME_ADDRS: &[&str] = &[
    "<sip:alice@127.0.0.1:5060>;tag=12816SIPpTag001",
    "<sip:alice@127.0.0.1:5070;transport=UDP>",
    "sip:127.0.0.18:5060;transport=tcp;tag=tp9mtmjX208pH",
    "<sip:reguser@127.0.0.10:5060>;expires=600",
    r#""Bob \"B\", Jr" <sips:bob@example.com;lr>;expires=60;+sip.instance="<urn:uuid:1;x>""#,
    "Alice Smith <sip:alice@a.example>",
    "*",
];

const VIAS: &[&str] = &[
    "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-12816-1-0;rport=5070",
    "SIP/2.0/UDP 127.0.0.10;rport;branch=z9hG4bKKFjZBQ80SS5je",
    "SIP/2.0/TCP 127.0.0.10;branch=z9hG4bKS59KpSDp8eB3K",
    "SIP / 2.0 / WSS [2001:db8::9] : 443 ;received=2001:db8::1;branch=z9hG4bKx",
];

const CSEQS: &[&str] = &["1 REGISTER", "123334345 OPTIONS", "4294967295 INVITE"];

const AUTHORIZATIONS: &[&str] = &[
    r#"Digest username="foo", realm="sip.jambonz.org", nonce="acc32103n1", uri="sip:sip.jambonz.org", response="5f9843497b7bbedafb3f55300bf36b1a", algorithm=MD5, cnonce="c5502d28", qop=auth, nc=00000001"#,
    r#"Digest username="john",realm="jambonz.org",nonce="157590482938000",uri="sip:jambonz.org",response="941658f7cac3f357d4258ae52074c5e7",nc=00000001,qop=auth,cnonce="6b8b4567",opaque="x""#,
    r#"Digest username="", realm="r", nonce="n", uri="u", response="""#,
];

const CHALLENGES: &[&str] = &[
    r#"Digest realm="sip.jambonz.org", nonce="acc32103n1", qop="auth", algorithm=MD5"#,
    r#"Digest realm="jambonz.org", algorithm=MD5, qop="auth", nonce="157590482938000", stale=true"#,
    "digest stale=TRUE ,opaque = \"o\\\"p\" ,qop=\"auth-int, auth\",\r\n nonce=\"a,b\", REALM=\"x\"",
];

// ---- generators ----

/// Characters that mean something to one of the parsers, plus a few that test char boundaries
/// and JavaScript-versus-Rust white space differences.
const INTERESTING: &[char] = &[
    '<', '>', ';', ',', '"', '=', '@', ':', '[', ']', '\\', '/', '?', '&', '%', '#', '*', ' ', '\t', '\r', '\n', '0',
    '9', 'a', 'Z', '.', '-', '\0', 'é', '\u{85}', '\u{a0}', '\u{2028}', '\u{3000}', '\u{feff}', '😀',
];

fn random_char(rng: &mut StdRng) -> char {
    if rng.gen_bool(0.8) {
        INTERESTING[rng.gen_range(0..INTERESTING.len())]
    } else {
        char::from_u32(rng.gen_range(0..0x3000)).unwrap_or('x')
    }
}

/// One to four random edits: replace, insert, delete, truncate or duplicate.
fn mutate_str(rng: &mut StdRng, input: &str) -> String {
    let mut chars: Vec<char> = input.chars().collect();
    for _ in 0..rng.gen_range(1..=4) {
        let len = chars.len();
        let at = rng.gen_range(0..=len);
        match rng.gen_range(0..5) {
            0 if at < len => chars[at] = random_char(rng),
            1 => chars.insert(at, random_char(rng)),
            2 if at < len => {
                let end = rng.gen_range(at..=len.min(at + 8));
                chars.drain(at..end);
            }
            3 => chars.truncate(at),
            _ => {
                let end = rng.gen_range(at..=len);
                let copy: Vec<char> = chars[at..end].to_vec();
                let to = rng.gen_range(0..=len);
                chars.splice(to..to, copy);
            }
        }
    }
    chars.into_iter().collect()
}

const INTERESTING_BYTES: &[u8] = b"\r\n:;,<>\"#= 0123456789/@\xc3\xa9\xff\x00";

/// Random byte edits; the message stays mostly intact so the parser gets deep.
fn mutate_bytes(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let len = bytes.len();
        let at = rng.gen_range(0..=len);
        let byte =
            if rng.gen_bool(0.7) { INTERESTING_BYTES[rng.gen_range(0..INTERESTING_BYTES.len())] } else { rng.gen() };
        match rng.gen_range(0..5) {
            0 if at < len => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            2 if at < len => {
                let end = rng.gen_range(at..=len.min(at + 16));
                bytes.drain(at..end);
            }
            3 if at < len => bytes[at] ^= 1 << rng.gen_range(0..8),
            _ => {
                let end = rng.gen_range(at..=len.min(at + 64));
                let copy = bytes[at..end].to_vec();
                let to = rng.gen_range(0..=len);
                bytes.splice(to..to, copy);
            }
        }
    }
    bytes
}

/// Cuts `data` into chunks of mixed sizes (single bytes up to whole kilobytes, some empty).
fn random_split<'a>(rng: &mut StdRng, data: &'a [u8]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let n = match rng.gen_range(0..5) {
            0 => 0,
            1 => 1,
            2 => rng.gen_range(1..8),
            3 => rng.gen_range(1..200),
            _ => rng.gen_range(1..3000),
        };
        let end = (at + n).min(data.len());
        chunks.push(&data[at..end]);
        at = end;
    }
    chunks
}

// ---- checks: no panic, and whatever parses reprints to the same value ----

fn check_uri(s: &str) -> bool {
    let Ok(uri) = SipUri::parse(s) else { return false };
    assert_eq!(SipUri::parse(&uri.to_string()).as_ref(), Ok(&uri), "URI reprint of {s:?}");
    let _ = (uri.host_is_ipv4_literal(), uri.param("transport"));
    true
}

fn check_name_addr(s: &str) -> bool {
    let Ok(addr) = NameAddr::parse(s) else { return false };
    assert_eq!(NameAddr::parse(&addr.to_string()).as_ref(), Ok(&addr), "name-addr reprint of {s:?}");
    let _ = (addr.expires_param(), addr.tag());
    check_uri(addr.uri_str());
    true
}

fn check_via(s: &str) -> bool {
    let Ok(via) = Via::parse(s) else { return false };
    assert_eq!(Via::parse(&via.to_string()).as_ref(), Ok(&via), "Via reprint of {s:?}");
    let _ = (via.transport_lower(), via.branch(), via.received(), via.rport());
    true
}

fn check_cseq(s: &str) -> bool {
    let Ok(cseq) = CSeq::parse(s) else { return false };
    assert_eq!(CSeq::parse(&cseq.to_string()).as_ref(), Ok(&cseq), "CSeq reprint of {s:?}");
    true
}

/// Accepted means read as digest-utils would, quoted strings aside (fuzz target `digest`: strictness).
fn check_authorization(s: &str) -> bool {
    let parsed = parse_authorization(s);
    if let Ok(creds) = &parsed {
        assert_eq!(Some(fields_of(creds)), naive_authorization(s), "Authorization {s:?}");
    }
    let Ok(creds) = parsed else { return false };
    let _ = (creds.fields(), creds.expected_response("REGISTER", "pw"));
    creds.require_complete().is_ok()
}

fn check_challenge(s: &str) -> bool {
    let Ok(challenge) = parse_challenge(s) else { return false };
    let _ = sbc_sidecar::sip::authorization_header(&challenge, "u", "p", "REGISTER", "sip:x", 1, "c");
    true
}

/// `replace_first_expires` against the regex it stands for, `/expires=\d+/`.
fn check_replace_first_expires(s: &str) {
    let replaced = replace_first_expires(s, 30);
    let found = s.match_indices("expires=").find(|(i, _)| s.as_bytes().get(i + 8).is_some_and(u8::is_ascii_digit));
    match found {
        None => assert_eq!(replaced, s),
        Some((i, _)) => {
            let digits = s[i + 8..].bytes().take_while(u8::is_ascii_digit).count();
            assert_eq!(replaced, format!("{}expires=30{}", &s[..i], &s[i + 8 + digits..]));
        }
    }
}

/// Runs the parser of one kind of header value; true when the value parsed (for
/// Authorization: parsed and complete).
fn check_header_value(kind: usize, s: &str) -> bool {
    match kind {
        0 => check_uri(s),
        1 => {
            check_replace_first_expires(s);
            check_name_addr(s)
        }
        2 => check_via(s),
        3 => check_cseq(s),
        4 => check_authorization(s),
        _ => check_challenge(s),
    }
}

const HEADER_SAMPLES: &[&[&str]] = &[URIS, NAME_ADDRS, VIAS, CSEQS, AUTHORIZATIONS, CHALLENGES];

fn check_message(bytes: &[u8]) -> bool {
    let Ok(msg) = SipMessage::parse(bytes) else { return false };
    assert_eq!(SipMessage::parse(&msg.to_bytes()).as_ref(), Ok(&msg), "message reprint of {bytes:?}");
    if let Some(uri) = msg.request_uri() {
        check_uri(uri);
    }
    let _ = (top_via(&msg), parse_contacts(&msg));
    for via in msg.header_values("Via") {
        check_via(via);
    }
    for contact in msg.header_all("Contact") {
        check_replace_first_expires(contact);
    }
    for contact in msg.header_values("Contact") {
        check_name_addr(contact);
    }
    for name in ["From", "To"] {
        if let Some(v) = msg.header(name) {
            check_name_addr(v);
        }
    }
    if let Some(v) = msg.header("CSeq") {
        check_cseq(v);
    }
    if let Some(v) = msg.header("Authorization") {
        check_authorization(v);
    }
    if let Some(v) = msg.header("WWW-Authenticate") {
        check_challenge(v);
    }
    true
}

/// The SIP message inside a drachtio `sip` frame: everything after the first CRLF.
fn sip_part(frame: &[u8]) -> &[u8] {
    let at = frame.windows(2).position(|w| w == b"\r\n").unwrap_or(frame.len());
    &frame[(at + 2).min(frame.len())..]
}

fn sip_messages() -> Vec<&'static [u8]> {
    let mut messages: Vec<&[u8]> = SIP_FRAMES.iter().map(|f| sip_part(f)).collect();
    messages.push(OPTIONS_PROBE);
    messages
}

// ---- an independent, deliberately naive emulation of digest-utils' regexes ----

fn js_space(c: char) -> bool {
    "\t\n\u{b}\u{c}\r \u{a0}\u{1680}\u{2028}\u{2029}\u{202f}\u{205f}\u{3000}\u{feff}".contains(c)
        || ('\u{2000}'..='\u{200a}').contains(&c)
}

fn js_line_terminator(c: char) -> bool {
    "\n\r\u{2028}\u{2029}".contains(c)
}

/// Whether `h[i]` is inside a quoted string (`\` escapes inside quotes), counted from the start.
fn naive_inside_quotes(h: &[char], i: usize) -> bool {
    let (mut quoted, mut escaped) = (false, false);
    for &c in &h[..i] {
        (quoted, escaped) = match c {
            _ if escaped => (quoted, false),
            '\\' if quoted => (true, true),
            '"' => (!quoted, false),
            _ => (quoted, false),
        };
    }
    quoted
}

/// `[,\s]{1}<name>="?(.+?)[",]`, tried the way a backtracking engine does: every start outside
/// quoted strings (where the registrar departs from digest-utils), then with and without the
/// quote, then every value length from one up.
fn naive_field(h: &[char], name: &str) -> Option<String> {
    let key: Vec<char> = format!("{name}=").chars().collect();
    for i in 0..h.len() {
        if naive_inside_quotes(h, i) || !(h[i] == ',' || js_space(h[i])) || !h[i + 1..].starts_with(&key) {
            continue;
        }
        let p = i + 1 + key.len();
        let starts = if h.get(p) == Some(&'"') { vec![p + 1, p] } else { vec![p] };
        for q in starts {
            let mut k = q + 1;
            while k <= h.len() && !js_line_terminator(h[k - 1]) {
                if k < h.len() && (h[k] == '"' || h[k] == ',') {
                    let v: String = h[q..k].iter().collect();
                    return Some(if v == "\"" { String::new() } else { v });
                }
                k += 1;
            }
        }
    }
    None
}

/// `/<key>(.*)$/`: the leftmost occurrence outside quoted strings with no line terminator
/// after it.
fn naive_rest(h: &[char], key: &str) -> Option<String> {
    let key: Vec<char> = key.chars().collect();
    (0..h.len())
        .filter(|&j| !naive_inside_quotes(h, j) && h[j..].starts_with(&key))
        .find(|&j| !h[j + key.len()..].iter().any(|&c| js_line_terminator(c)))
        .map(|j| h[j + key.len()..].iter().collect())
}

const DIGEST_FIELDS: [&str; 10] =
    ["username", "realm", "nonce", "uri", "algorithm", "response", "qop", "nc", "cnonce", "opaque"];

/// The ten fields digest-utils would report, or `None` when it would find none at all.
fn naive_authorization(s: &str) -> Option<Vec<Option<String>>> {
    let h: Vec<char> = s.chars().collect();
    let mut fields: Vec<Option<String>> = DIGEST_FIELDS.iter().map(|name| naive_field(&h, name)).collect();
    for (index, key) in [(7, "nc="), (6, "qop=")] {
        if fields[index].as_deref().unwrap_or("").is_empty() {
            if let Some(rest) = naive_rest(&h, key) {
                fields[index] = Some(rest);
            }
        }
    }
    if fields.iter().all(Option::is_none) {
        return None;
    }
    if fields[4].as_deref().unwrap_or("").is_empty() {
        fields[4] = Some("MD5".to_string());
    }
    Some(fields)
}

fn fields_of(c: &sbc_sidecar::sip::DigestCredentials) -> Vec<Option<String>> {
    vec![
        c.username.clone(),
        c.realm.clone(),
        c.nonce.clone(),
        c.uri.clone(),
        Some(c.algorithm.clone()),
        c.response.clone(),
        c.qop.clone(),
        c.nc.clone(),
        c.cnonce.clone(),
        c.opaque.clone(),
    ]
}

// ---- frame decoding ----

/// Feeds the chunks in order, draining after each; stops at the first error like the reader.
fn decode(chunks: &[&[u8]], max_payload: usize) -> (Vec<Vec<u8>>, Option<FrameError>, usize) {
    let mut decoder = FrameDecoder::new(max_payload);
    let mut frames = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e), decoder.buffered()),
            }
        }
    }
    let buffered = decoder.buffered();
    (frames, None, buffered)
}

fn payload_of(frame: &[u8]) -> Vec<u8> {
    let hash = frame.iter().position(|&b| b == b'#').unwrap_or(0);
    frame[hash + 1..].to_vec()
}

fn random_payload(rng: &mut StdRng) -> Vec<u8> {
    let len = match rng.gen_range(0..3) {
        0 => rng.gen_range(1..10),
        1 => rng.gen_range(1..600),
        _ => rng.gen_range(1..5000),
    };
    // Digits and `#` inside payloads must never confuse the decoder.
    (0..len).map(|_| if rng.gen_bool(0.3) { b"0123456789#"[rng.gen_range(0..11)] } else { rng.gen() }).collect()
}

// ---- tests ----

#[test]
fn captured_frames_and_messages_are_what_the_fuzzing_starts_from() {
    for frame in ALL_FRAMES {
        let (frames, err, buffered) = decode(&[frame], 1 << 20);
        assert_eq!((frames.len(), err, buffered), (1, None, 0), "{:?}", String::from_utf8_lossy(frame));
    }
    for bytes in sip_messages() {
        let msg = SipMessage::parse(bytes).unwrap();
        // the app's own response (APP_RESPONSE) has no Via: drachtio adds it
        assert_eq!(top_via(&msg).is_ok(), msg.has_header("Via"));
        assert!(check_message(bytes));
    }
    for (kind, samples) in HEADER_SAMPLES.iter().enumerate() {
        // the last sample of each kind is a deliberately broken or incomplete one
        for s in &samples[..samples.len() - 1] {
            assert!(check_header_value(kind, s), "{s:?}");
        }
        check_header_value(kind, samples[samples.len() - 1]);
    }
}

#[test]
fn sip_message_survives_truncation_at_every_offset() {
    for bytes in sip_messages() {
        let parsed = (0..=bytes.len()).filter(|&cut| check_message(&bytes[..cut])).count();
        // every cut after the start line leaves a (shorter) valid message
        assert!(parsed > bytes.len() / 2, "only {parsed} of {} cuts parsed", bytes.len());
    }
}

#[test]
fn sip_message_survives_random_mutations() {
    let mut rng = StdRng::seed_from_u64(SEED);
    let messages = sip_messages();
    let mut parsed = 0;
    for _ in 0..4000 {
        let mut bytes = messages[rng.gen_range(0..messages.len())].to_vec();
        // Sometimes mutate repeatedly so damage accumulates.
        for _ in 0..rng.gen_range(1..4) {
            bytes = mutate_bytes(&mut rng, &bytes);
        }
        parsed += usize::from(check_message(&bytes));
    }
    // enough mutants must still parse for the reprint checks to mean something
    assert!(parsed > 1000, "only {parsed} mutants parsed");
}

#[test]
fn sip_message_survives_random_bytes() {
    let mut rng = StdRng::seed_from_u64(SEED + 1);
    for _ in 0..3000 {
        let len = rng.gen_range(0..400);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if rng.gen_bool(0.5) {
                    INTERESTING_BYTES[rng.gen_range(0..INTERESTING_BYTES.len())]
                } else {
                    rng.gen()
                }
            })
            .collect();
        check_message(&bytes);
        // Random bytes behind a valid start line get past the first check.
        let mut with_start = b"REGISTER sip:a.example SIP/2.0\r\nVia: ".to_vec();
        with_start.extend_from_slice(&bytes);
        check_message(&with_start);
    }
}

#[test]
fn header_parsers_survive_truncation_at_every_char_boundary() {
    for (kind, samples) in HEADER_SAMPLES.iter().enumerate() {
        for s in *samples {
            for (cut, _) in s.char_indices().chain(std::iter::once((s.len(), ' '))) {
                check_header_value(kind, &s[..cut]);
                check_header_value(kind, &s[cut..]);
            }
        }
    }
}

#[test]
fn header_parsers_survive_random_mutations() {
    let mut rng = StdRng::seed_from_u64(SEED + 2);
    let mut parsed = [0; 6];
    for _ in 0..6000 {
        let kind = rng.gen_range(0..HEADER_SAMPLES.len());
        let samples = HEADER_SAMPLES[kind];
        let mut s = samples[rng.gen_range(0..samples.len())].to_string();
        if rng.gen_bool(0.2) {
            s = mutate_str(&mut rng, &s);
        }
        s = mutate_str(&mut rng, &s);
        // Every parser sees every mutant, not just the one it was made from.
        for any_kind in 0..HEADER_SAMPLES.len() {
            if check_header_value(any_kind, &s) && any_kind == kind {
                parsed[kind] += 1;
            }
        }
    }
    // each parser must have accepted a good share of its own mutants, or the checks are vacuous
    // (the Authorization parser refuses every mutant that is no longer strict RFC 7616)
    let minimum = [100, 100, 100, 100, 40, 100];
    assert!(parsed.iter().zip(minimum).all(|(&n, min)| n > min), "parsed mutants per kind: {parsed:?}");
}

#[test]
fn authorization_parser_matches_a_naive_regex_emulation() {
    // Single tokens and characters, plus whole `, name="` openings so that fields are found often.
    const PIECES: &[&str] = &[
        "username",
        "realm",
        "nonce",
        "uri",
        "algorithm",
        "response",
        "qop",
        "nc",
        "cnonce",
        "opaque",
        "xnc",
        "Digest",
        "=",
        "\"",
        ",",
        " ",
        "\t",
        "\r",
        "\n",
        "\u{2028}",
        "\u{a0}",
        "\u{85}",
        "\u{feff}",
        "abc",
        "00000001",
        "auth",
        "MD5",
        "é",
        "😀",
        ", username=\"",
        " realm=\"",
        ",nonce=",
        " uri=\"",
        ", nc=",
        " qop=",
        ",cnonce=\"",
        " opaque=",
        "\", ",
        ", algorithm=",
        " response=\"",
        "\",",
    ];
    let mut rng = StdRng::seed_from_u64(SEED + 3);
    for _ in 0..5000 {
        let s: String = (0..rng.gen_range(0..40)).map(|_| PIECES[rng.gen_range(0..PIECES.len())]).collect();
        check_authorization(&s);
    }
    // Well-formed headers with random values: enough must be accepted for the check to bite.
    let mut accepted = 0;
    for _ in 0..5000 {
        let mut names = DIGEST_FIELDS.to_vec();
        let params: Vec<String> = (0..rng.gen_range(1..8))
            .map(|_| {
                let name = names.swap_remove(rng.gen_range(0..names.len()));
                let value: String = (0..rng.gen_range(1..4)).map(|_| PIECES[rng.gen_range(0..PIECES.len())]).collect();
                let token = value.chars().all(|c| c.is_ascii_alphanumeric());
                if token && rng.gen_bool(0.5) {
                    format!("{name}={value}")
                } else {
                    format!("{name}=\"{value}\"")
                }
            })
            .collect();
        let s = format!("Digest {}", params.join(", "));
        check_authorization(&s);
        accepted += usize::from(parse_authorization(&s).is_ok());
    }
    assert!(accepted > 500, "only {accepted} well-formed headers accepted");
}

#[test]
fn frame_decoder_gives_the_same_frames_whatever_the_split() {
    let mut rng = StdRng::seed_from_u64(SEED + 4);
    for _ in 0..400 {
        let payloads: Vec<Vec<u8>> = (0..rng.gen_range(1..20))
            .map(|_| {
                if rng.gen_bool(0.5) {
                    payload_of(ALL_FRAMES[rng.gen_range(0..ALL_FRAMES.len())])
                } else {
                    random_payload(&mut rng)
                }
            })
            .collect();
        let stream: Vec<u8> = payloads.iter().flat_map(|p| encode_unchecked(p)).collect();
        let chunks = random_split(&mut rng, &stream);
        let (frames, err, buffered) = decode(&chunks, 1 << 20);
        assert_eq!(err, None);
        assert_eq!(frames, payloads);
        assert_eq!(buffered, 0);
    }
}

#[test]
fn frame_decoder_truncated_stream_yields_only_complete_frames() {
    let stream: Vec<u8> = ALL_FRAMES.concat();
    let mut ends = Vec::new();
    let mut offset = 0;
    for frame in ALL_FRAMES {
        offset += frame.len();
        ends.push(offset);
    }
    let payloads: Vec<Vec<u8>> = ALL_FRAMES.iter().map(|f| payload_of(f)).collect();
    for cut in 0..=stream.len() {
        let (frames, err, buffered) = decode(&[&stream[..cut]], 1 << 20);
        let complete = ends.iter().filter(|&&end| end <= cut).count();
        assert_eq!(err, None, "cut at {cut}");
        assert_eq!(frames, payloads[..complete], "cut at {cut}");
        assert_eq!(buffered, cut - ends[..complete].last().copied().unwrap_or(0), "cut at {cut}");
    }
}

#[test]
fn frame_decoder_corrupted_stream_fails_the_same_way_whatever_the_split() {
    let mut rng = StdRng::seed_from_u64(SEED + 5);
    let clean: Vec<u8> = ALL_FRAMES.concat();
    for _ in 0..1500 {
        let mut stream = mutate_bytes(&mut rng, &clean);
        if rng.gen_bool(0.2) {
            stream = mutate_bytes(&mut rng, &stream);
        }
        let max_payload = [1 << 20, 4096, 300, 50][rng.gen_range(0..4)];
        let whole = decode(&[&stream], max_payload);
        for _ in 0..4 {
            let chunks = random_split(&mut rng, &stream);
            let split = decode(&chunks, max_payload);
            assert_eq!((&split.0, &split.1), (&whole.0, &whole.1), "stream {:?}", String::from_utf8_lossy(&stream));
        }
    }
}

#[test]
fn frame_decoder_survives_random_bytes() {
    let mut rng = StdRng::seed_from_u64(SEED + 6);
    for _ in 0..3000 {
        let len = rng.gen_range(0..200);
        let bytes: Vec<u8> = (0..len)
            .map(|_| if rng.gen_bool(0.6) { b"0123456789#|"[rng.gen_range(0..12)] } else { rng.gen() })
            .collect();
        let whole = decode(&[&bytes], 1 << 20);
        let split = decode(&random_split(&mut rng, &bytes), 1 << 20);
        assert_eq!((&split.0, &split.1), (&whole.0, &whole.1));
    }
}
