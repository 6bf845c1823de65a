//! Shared pieces of the fuzz targets: the independent strict reading of Digest credentials the
//! `digest` target compares the daemon's parser with, and small input helpers.

pub mod strict_digest;

/// Fuzz input as text: parsers of header values take `&str`, and invalid UTF-8 never reaches
/// them (SipMessage::parse refuses it), so a lossy conversion loses no reachable input.
pub fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// The output-size bound every target asserts: output at most linear in the input.
pub fn assert_linear(what: &str, output: usize, input: usize, factor: usize, slack: usize) {
    assert!(
        output <= factor * input + slack,
        "{what}: {output} bytes out of {input} bytes in (bound {factor}·n+{slack})"
    );
}
