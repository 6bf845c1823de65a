//! Length-prefixed framing of the drachtio control protocol: `<LEN>#<PAYLOAD>`.
//!
//! `LEN` is the byte length of the payload in ASCII decimal. There is no terminator between
//! frames, so a decoder must accept any split of the byte stream (one byte at a time, several
//! frames in one read, a length prefix cut in the middle).

use std::fmt;

/// drachtio-server keeps app → server frames in a 12 228-byte circular buffer; a larger frame
/// silently stalls the connection (drachtio-protocol.md §1.5). We refuse anything above 12 KB.
pub const MAX_OUTGOING_PAYLOAD: usize = 12 * 1024;

/// The server → app direction has no limit in drachtio itself; we cap it so that a corrupted
/// length prefix cannot make us buffer without bound.
pub const MAX_INCOMING_PAYLOAD: usize = 1024 * 1024;

/// At most this many length digits are accepted on the read side (drachtio-protocol.md §1.6).
const MAX_LEN_DIGITS: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A byte other than an ASCII digit appeared before `#`.
    BadLengthPrefix { byte: u8 },
    /// More than `MAX_LEN_DIGITS` digits before `#`.
    LengthPrefixTooLong,
    /// `0#` announces an empty frame, which neither side ever sends.
    ZeroLength,
    /// The announced payload is larger than we are willing to buffer.
    TooLarge { len: usize, max: usize },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadLengthPrefix { byte } => {
                write!(f, "drachtio frame: byte 0x{byte:02x} in length prefix is not a digit")
            }
            FrameError::LengthPrefixTooLong => write!(f, "drachtio frame: length prefix has too many digits"),
            FrameError::ZeroLength => write!(f, "drachtio frame: zero-length frame"),
            FrameError::TooLarge { len, max } => {
                write!(f, "drachtio frame: payload of {len} bytes exceeds the limit of {max} bytes")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Encodes one payload as a frame. Refuses payloads drachtio-server could not take whole.
pub fn encode(payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    if payload.is_empty() {
        return Err(FrameError::ZeroLength);
    }
    if payload.len() > MAX_OUTGOING_PAYLOAD {
        return Err(FrameError::TooLarge { len: payload.len(), max: MAX_OUTGOING_PAYLOAD });
    }
    Ok(encode_unchecked(payload))
}

/// Encodes without the outgoing size limit (the server side of the protocol has none).
pub fn encode_unchecked(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b'#');
    out.extend_from_slice(payload);
    out
}

/// Incremental decoder: feed it whatever the socket returned, then drain complete payloads.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of unconsumed data in `buf` (compacted lazily to avoid a memmove per frame).
    start: usize,
    max_payload: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(MAX_INCOMING_PAYLOAD)
    }
}

impl FrameDecoder {
    pub fn new(max_payload: usize) -> Self {
        FrameDecoder { buf: Vec::with_capacity(16 * 1024), start: 0, max_payload }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a payload.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Returns the next complete payload, `Ok(None)` when more bytes are needed, or an error
    /// when the stream is corrupt (the connection must then be dropped).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let pending = &self.buf[self.start..];
        let mut len: usize = 0;
        let mut digits = 0;
        let mut hash_at = None;
        for (i, &b) in pending.iter().enumerate() {
            if b == b'#' {
                hash_at = Some(i);
                break;
            }
            if !b.is_ascii_digit() {
                return Err(FrameError::BadLengthPrefix { byte: b });
            }
            digits += 1;
            if digits > MAX_LEN_DIGITS {
                return Err(FrameError::LengthPrefixTooLong);
            }
            len = len * 10 + usize::from(b - b'0');
        }
        let Some(hash_at) = hash_at else { return Ok(None) };
        if digits == 0 {
            return Err(FrameError::BadLengthPrefix { byte: b'#' });
        }
        if len == 0 {
            return Err(FrameError::ZeroLength);
        }
        if len > self.max_payload {
            return Err(FrameError::TooLarge { len, max: self.max_payload });
        }
        let body_start = hash_at + 1;
        if pending.len() < body_start + len {
            return Ok(None);
        }
        let payload = pending[body_start..body_start + len].to_vec();
        self.start += body_start + len;
        Ok(Some(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_byte_length() {
        assert_eq!(encode(b"abc|ping").unwrap(), b"8#abc|ping".to_vec());
        // multi-byte UTF-8 counts bytes, not characters
        assert_eq!(encode("é".as_bytes()).unwrap(), b"2#\xc3\xa9".to_vec());
    }

    #[test]
    fn refuses_frames_drachtio_would_stall_on() {
        let big = vec![b'x'; MAX_OUTGOING_PAYLOAD + 1];
        assert!(matches!(encode(&big), Err(FrameError::TooLarge { .. })));
        assert!(encode(&vec![b'x'; MAX_OUTGOING_PAYLOAD]).is_ok());
        assert_eq!(encode(b""), Err(FrameError::ZeroLength));
    }

    #[test]
    fn decodes_any_split() {
        let stream = b"5#hello3#abc11#hello|world";
        for split in 0..stream.len() {
            let mut d = FrameDecoder::default();
            let mut out = Vec::new();
            d.push(&stream[..split]);
            while let Some(f) = d.next_frame().unwrap() {
                out.push(f);
            }
            d.push(&stream[split..]);
            while let Some(f) = d.next_frame().unwrap() {
                out.push(f);
            }
            assert_eq!(out, vec![b"hello".to_vec(), b"abc".to_vec(), b"hello|world".to_vec()], "split {split}");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn byte_at_a_time() {
        let stream = b"5#hello3#abc";
        let mut d = FrameDecoder::default();
        let mut out = Vec::new();
        for b in stream {
            d.push(&[*b]);
            while let Some(f) = d.next_frame().unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, vec![b"hello".to_vec(), b"abc".to_vec()]);
    }

    #[test]
    fn rejects_corrupt_prefixes() {
        let mut d = FrameDecoder::default();
        d.push(b"12a#x");
        assert_eq!(d.next_frame(), Err(FrameError::BadLengthPrefix { byte: b'a' }));
        let mut d = FrameDecoder::default();
        d.push(b"#x");
        assert!(d.next_frame().is_err());
        let mut d = FrameDecoder::default();
        d.push(b"0#");
        assert_eq!(d.next_frame(), Err(FrameError::ZeroLength));
        let mut d = FrameDecoder::default();
        d.push(b"123456789012#");
        assert_eq!(d.next_frame(), Err(FrameError::LengthPrefixTooLong));
        let mut d = FrameDecoder::new(100);
        d.push(b"101#");
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge { len: 101, max: 100 })));
    }
}
