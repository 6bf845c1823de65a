//! Writes the seed corpora under fuzz/corpus/<target>/ from the drachtio captures in
//! docs/spec (or the directory given as the first argument) and the string literals of
//! the repository's tests and SIP sources. Run from fuzz/: `cargo run --bin extract-seeds`.
//! Seeds are named by content hash, so running it again adds nothing twice.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// Keeps the committed corpora small: real messages are well under this.
const MAX_SEED_BYTES: usize = 8 * 1024;

struct Corpus {
    root: PathBuf,
    written: usize,
}

impl Corpus {
    fn add(&mut self, target: &str, seed: &[u8]) {
        if seed.is_empty() || seed.len() > MAX_SEED_BYTES {
            return;
        }
        let dir = self.root.join(target);
        fs::create_dir_all(&dir).expect("create corpus directory");
        let mut h = DefaultHasher::new();
        seed.hash(&mut h);
        let path = dir.join(format!("seed-{:016x}", h.finish()));
        if !path.exists() {
            fs::write(&path, seed).expect("write seed");
            self.written += 1;
        }
    }
}

/// A Python bytes literal body (`b'…'` without the quotes).
fn python_bytes(lit: &str) -> Vec<u8> {
    let b = lit.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            i += 1;
            match b[i] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'x' if i + 2 < b.len() => {
                    out.push(u8::from_str_radix(&lit[i + 1..i + 3], 16).unwrap_or(b'?'));
                    i += 2;
                }
                other => out.push(other),
            }
        } else {
            out.push(b[i]);
        }
        i += 1;
    }
    out
}

/// Frames of a capture file: every `exact: b'…'` line.
fn capture_frames(text: &str) -> Vec<Vec<u8>> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("exact: b'").and_then(|l| l.strip_suffix('\'')))
        .map(python_bytes)
        .collect()
}

/// Rust string literals of a source file: `"…"` with the common escapes, and `r#"…"#`.
fn rust_literals(src: &str) -> Vec<String> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"r#\"") {
            if let Some(end) = src[i + 3..].find("\"#") {
                out.push(src[i + 3..i + 3 + end].to_string());
                i += 3 + end + 2;
                continue;
            }
        }
        if b[i] == b'"' && (i == 0 || (b[i - 1] != b'\'' && b[i - 1] != b'\\')) {
            let mut s = String::new();
            let mut j = i + 1;
            let mut closed = false;
            while j < b.len() {
                let c = src[j..].chars().next().unwrap_or('\0');
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' if j + 1 < b.len() => {
                        let e = b[j + 1];
                        match e {
                            b'r' => s.push('\r'),
                            b'n' => s.push('\n'),
                            b't' => s.push('\t'),
                            b'0' => s.push('\0'),
                            b'\n' => {
                                // line continuation: skip the newline and leading blanks
                                j += 2;
                                while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
                                    j += 1;
                                }
                                continue;
                            }
                            other => s.push(other as char),
                        }
                        j += 2;
                        continue;
                    }
                    _ => s.push(c),
                }
                j += c.len_utf8();
            }
            if closed {
                out.push(s);
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    out
}

fn header_values(sip: &[u8], corpus: &mut Corpus) {
    let Ok(text) = std::str::from_utf8(sip) else { return };
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        let target = match name.trim().to_ascii_lowercase().as_str() {
            "authorization" | "www-authenticate" | "proxy-authenticate" | "proxy-authorization" => "digest",
            _ => "sip_header_values",
        };
        corpus.add(target, value.as_bytes());
    }
    if let Some(first) = text.split("\r\n").next() {
        if let Some(uri) = first.split(' ').nth(1) {
            corpus.add("sip_header_values", uri.as_bytes());
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn main() {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = fuzz_dir.parent().expect("fuzz/ is inside the repository");
    let spec = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| repo.join("docs/spec"));
    let mut corpus = Corpus { root: fuzz_dir.join("corpus"), written: 0 };

    for name in ["drachtio-capture.txt", "drachtio-capture-uac.txt"] {
        let Ok(text) = fs::read_to_string(spec.join(name)) else {
            eprintln!("extract-seeds: {} not found, skipped", spec.join(name).display());
            continue;
        };
        for frame in capture_frames(&text) {
            corpus.add("drachtio", &frame);
            let Some(hash) = frame.iter().position(|&b| b == b'#') else { continue };
            let payload = &frame[hash + 1..];
            if let Some(crlf) = payload.windows(2).position(|w| w == b"\r\n") {
                let sip = &payload[crlf + 2..];
                corpus.add("sip_message", sip);
                header_values(sip, &mut corpus);
            }
        }
    }

    let mut files = Vec::new();
    for dir in ["tests", "src/sip", "src/registrar", "src/drachtio", "src/ctl", "src/heartbeat", "test-tools/src"] {
        rust_files(&repo.join(dir), &mut files);
    }
    files.sort();
    for file in files {
        let Ok(src) = fs::read_to_string(&file) else { continue };
        for lit in rust_literals(&src) {
            let t = lit.trim_start();
            if (t.contains(" SIP/2.0\r\n") || t.starts_with("SIP/2.0 ")) && t.contains("\r\n") {
                corpus.add("sip_message", lit.as_bytes());
                header_values(lit.as_bytes(), &mut corpus);
            } else if t.starts_with("Digest") || t.starts_with("digest") {
                corpus.add("digest", lit.as_bytes());
            } else if t.starts_with("sip:") || t.starts_with("sips:") || t.starts_with('<') || t.starts_with("SIP/2.0/")
            {
                corpus.add("sip_header_values", lit.as_bytes());
            } else if t.starts_with("{\"action\"") {
                corpus.add("ctl_line", format!("{lit}\n").as_bytes());
            } else if t.starts_with('{') && t.contains("\"status\"") {
                let mut seed = vec![0u8];
                seed.extend_from_slice(lit.as_bytes());
                corpus.add("webhook_reply", &seed);
            } else if t.contains("|sip|") || t.contains("|response|") {
                corpus.add("drachtio", lit.as_bytes());
            }
        }
    }

    // A few that no source spells out whole.
    for line in [
        "{\"action\":\"fs-drain\",\"server\":\"[fd00::5]:5070\"}\n{\"action\":\"bans-clear\",\"ip\":\"::ffff:127.0.0.1\"}\n",
        "{\"action\":\"set\",\"key\":\"x\",\"value\":\"a, b\"}\n{\"action\":\"status\"}\n",
    ] {
        corpus.add("ctl_line", line.as_bytes());
    }
    for body in [
        "{\"status\":\"ok\",\"expires\":300,\"call_hook\":{\"url\":\"http://127.0.0.1/x\"}}",
        "{\"status\":\"fail\",\"blacklist\":true,\"headers\":{\"X-Reason\":\"no\",\"Bad Name\":\"x\"}}",
    ] {
        let mut seed = vec![0u8];
        seed.extend_from_slice(body.as_bytes());
        corpus.add("webhook_reply", &seed);
    }
    for value in [
        r#"Digest opaque="x username=bob", username="alice", realm="r", nonce="n", uri="sip:r", response="0""#,
        "127.0.0.1:5070",
        "http://127.0.0.1:3000/",
    ] {
        corpus.add(if value.starts_with("Digest") { "digest" } else { "sip_header_values" }, value.as_bytes());
    }
    println!("extract-seeds: {} new seeds under {}", corpus.written, corpus.root.display());
}
