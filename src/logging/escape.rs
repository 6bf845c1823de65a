//! What a log line may contain: every character a device could use to forge or hide log text
//! is written as an escape instead.
//!
//! Log messages carry values taken from requests (Authorization `username`, To URIs, header
//! text). A raw ESC can clear an operator's terminal or recolour what follows (`ESC[2J`), a CR
//! or LF forges a second line, and the Unicode bidi overrides reorder what a reader sees. The
//! logger escapes them once, in the backend, so no call site can forget.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` is written as an escape: C0 controls (tab included), DEL, C1 controls, and
/// the bidi embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069).
fn must_escape(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every character of `must_escape` written as `\r`, `\n`, `\t`, `\xNN` (C0,
/// DEL) or `\u{NNNN}` (C1, bidi). A backslash is not doubled: a line is read by people, and
/// `\x1b` written by a device as four characters stays recognisable as text.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(must_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && must_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if must_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        assert!(matches!(escape("registrar: aor=alice@example.com ünïcode"), Cow::Borrowed(_)));
    }

    #[test]
    fn controls_del_c1_and_bidi_are_escaped() {
        assert_eq!(escape("a\u{1b}[2Jb"), "a\\x1b[2Jb");
        assert_eq!(escape("l1\r\nl2\tx"), "l1\\r\\nl2\\tx");
        assert_eq!(escape("\u{0}\u{7f}\u{85}\u{9b}"), "\\x00\\x7f\\u{85}\\u{9b}");
        assert_eq!(escape("user\u{202e}gpj.exe"), "user\\u{202e}gpj.exe");
        for c in ['\u{202a}', '\u{202d}', '\u{2066}', '\u{2069}'] {
            assert!(!escape(&format!("x{c}y")).contains(c), "{c:?}");
        }
        // neighbours of the ranges are kept
        assert_eq!(escape("\u{2029}\u{202f}\u{2065}\u{206a}~"), "\u{2029}\u{202f}\u{2065}\u{206a}~");
    }

    #[test]
    fn every_escaped_line_is_free_of_what_must_be_escaped() {
        let all: String = (0u32..0x2100).filter_map(char::from_u32).collect();
        let escaped = escape(&all);
        assert!(!escaped.chars().any(must_escape));
    }
}
