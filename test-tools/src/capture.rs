//! Reads the frames captured from a live drachtio-server (docs/spec/drachtio-capture*.txt).
//!
//! Each `=== C->S` / `=== S->C` block has an `exact: b'…'` line: a Python bytes literal of the
//! whole frame as it was on the TCP stream.

#![allow(dead_code)]

use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// app → drachtio
    ToServer,
    /// drachtio → app
    ToApp,
    /// a SIP datagram seen on the network, not a control frame
    Udp,
}

#[derive(Debug, Clone)]
pub struct CapturedFrame {
    pub dir: Dir,
    /// The whole frame, `<len>#<payload>` (or the datagram for `Dir::Udp`).
    pub bytes: Vec<u8>,
}

impl CapturedFrame {
    /// The payload after `<len>#`.
    pub fn payload(&self) -> &[u8] {
        match self.bytes.iter().position(|&b| b == b'#') {
            Some(i) if self.dir != Dir::Udp => &self.bytes[i + 1..],
            _ => &self.bytes,
        }
    }

    pub fn meta(&self) -> Vec<String> {
        let p = self.payload();
        let end = p.windows(2).position(|w| w == b"\r\n").unwrap_or(p.len());
        String::from_utf8_lossy(&p[..end]).split('|').map(str::to_string).collect()
    }

    pub fn sip(&self) -> Option<&[u8]> {
        let p = self.payload();
        p.windows(2).position(|w| w == b"\r\n").map(|i| &p[i + 2..])
    }
}

pub fn fixture(name: &str) -> PathBuf {
    crate::repo_root().join("docs/spec").join(name)
}

/// All frames of a capture file, in order.
pub fn load(name: &str) -> Vec<CapturedFrame> {
    let text = std::fs::read_to_string(fixture(name)).expect("capture fixture is readable");
    let mut frames = Vec::new();
    let mut dir = None;
    for line in text.lines() {
        if line.starts_with("=== C->S") {
            dir = Some(Dir::ToServer);
        } else if line.starts_with("=== S->C") {
            dir = Some(Dir::ToApp);
        } else if line.starts_with("=== UDP") {
            dir = Some(Dir::Udp);
        } else if let Some(lit) = line.strip_prefix("exact: ") {
            let d = dir.take().expect("an exact: line follows a === header");
            frames.push(CapturedFrame { dir: d, bytes: python_bytes_literal(lit) });
        }
    }
    frames
}

/// Decodes `b'…'` (the escapes Python's repr uses: \\ \' \" \r \n \t \xNN).
pub fn python_bytes_literal(lit: &str) -> Vec<u8> {
    let inner = lit.trim();
    let quote = inner.as_bytes()[1];
    let body = &inner[2..inner.len() - 1];
    assert_eq!(inner.as_bytes()[inner.len() - 1], quote, "bytes literal closes with its quote");
    let b = body.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'\\' => out.push(b'\\'),
                b'\'' => out.push(b'\''),
                b'"' => out.push(b'"'),
                b'x' => {
                    let hex = std::str::from_utf8(&b[i + 2..i + 4]).expect("hex escape");
                    out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                    i += 4;
                    continue;
                }
                other => panic!("unexpected escape \\{}", other as char),
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_captured_frame_has_a_consistent_length_prefix() {
        for name in ["drachtio-capture.txt", "drachtio-capture-uac.txt"] {
            let frames = load(name);
            assert!(frames.len() > 5, "{name} has frames");
            for f in frames.iter().filter(|f| f.dir != Dir::Udp) {
                let hash = f.bytes.iter().position(|&b| b == b'#').expect("length prefix");
                let len: usize = std::str::from_utf8(&f.bytes[..hash]).unwrap().parse().unwrap();
                assert_eq!(len, f.bytes.len() - hash - 1, "length prefix of a frame in {name}");
            }
        }
    }
}
