//! Every citation of docs/ in a comment of src/, test-tools/src/, tests/ and fuzz/ points at
//! something that exists (the forms are listed in docs/README.md):
//!
//! * `spec 4.1`, `spec section 2`, `spec 6.2, 6.4, 7`, `spec 5.2–5.4`: headings `### 4.1`, `## 2.`
//!   of docs/spec/sidecar-behaviour.md;
//! * `spec 4.1 step 6`, `spec 14, item 22`: item 6 or 22 of the numbered list under that heading;
//! * `drachtio-protocol.md §1.5, §7.4`: headings of docs/spec/drachtio-protocol.md;
//! * `drachtio-capture-uac.txt steps c1, c2`: `# step …` comments of that capture;
//! * `docs/<path>` (a `*` matches any part of a name), and `docs/<file>.md, "Title"`: the file
//!   exists, and has a heading with that title.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The numbered headings of a markdown document (`## 14.` → "14", `### 4.1 …` → "4.1"), each
/// with the numbers of the top-level numbered list under it (`1. …`, up to the next heading).
fn sections(markdown: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in markdown.lines() {
        if line.starts_with('#') {
            let number = line.trim_start_matches('#').split_whitespace().next().unwrap_or("").trim_end_matches('.');
            current = number.starts_with(|c: char| c.is_ascii_digit()).then(|| number.to_string());
            if let Some(n) = &current {
                out.entry(n.clone()).or_default();
            }
        } else if let (Some(n), Some((item, _))) = (&current, line.split_once(". ")) {
            if !item.is_empty() && item.chars().all(|c| c.is_ascii_digit()) {
                out.get_mut(n).expect("entered above").push(item.to_string());
            }
        }
    }
    out
}

/// Every heading's text, backticks removed.
fn titles(markdown: &str) -> Vec<String> {
    markdown.lines().filter(|l| l.starts_with('#')).map(|l| l.trim_start_matches('#').trim().replace('`', "")).collect()
}

/// The step labels of a capture (`# step c1: …` → "c1").
fn capture_steps(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# step "))
        .map(|rest| rest.chars().take_while(char::is_ascii_alphanumeric).collect())
        .collect()
}

/// A comment: the text of consecutive comment lines joined by spaces, and where each line starts.
struct Comment {
    text: String,
    lines: Vec<(usize, usize)>,
}

impl Comment {
    fn line_at(&self, offset: usize) -> usize {
        self.lines.iter().rev().find(|(start, _)| *start <= offset).map_or(0, |&(_, line)| line)
    }
}

fn comments(source: &str) -> Vec<Comment> {
    let mut out = Vec::new();
    let mut current: Option<Comment> = None;
    for (i, line) in source.lines().enumerate() {
        let trimmed = line.trim_start();
        let text = if trimmed.starts_with("//") {
            Some(trimmed.trim_start_matches(['/', '!']))
        } else {
            line.split_once(" // ").map(|(_, c)| c)
        };
        match (text, &mut current) {
            (Some(t), Some(c)) => {
                c.lines.push((c.text.len() + 1, i + 1));
                c.text.push(' ');
                c.text.push_str(t.trim());
            }
            (Some(t), None) => current = Some(Comment { text: t.trim().to_string(), lines: vec![(0, i + 1)] }),
            (None, _) => out.extend(current.take()),
        }
    }
    out.extend(current);
    out
}

/// A number (`4.1`, `14`) or a step label (`c1`) at the start of `s`, and the rest.
fn label(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '.')).unwrap_or(s.len());
    let word = s[..end].trim_end_matches('.');
    (word, &s[word.len()..])
}

/// Section and item numbers start with a digit.
fn numeric(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_digit())
}

/// Capture steps are `4`, `e` or `c1`.
fn step(word: &str) -> bool {
    word.len() <= 2
}

/// A list such as `3–5`, `6.2, 6.4 and 7`, `e, f, i` or `§2.5, §7.1` (with `prefix` "§") at the
/// start of `s`, each label accepted by `is_label`: the labels (a range gives both ends) and the
/// rest of `s`.
fn labels<'a>(mut s: &'a str, prefix: &str, is_label: fn(&str) -> bool) -> (Vec<&'a str>, &'a str) {
    let mut out = Vec::new();
    loop {
        let (word, rest) = label(s.strip_prefix(prefix).unwrap_or(s));
        if word.is_empty() || !is_label(word) {
            return (out, s);
        }
        out.push(word);
        s = rest;
        let Some(next) = [", ", " and ", "–", "-"].iter().find_map(|sep| rest.strip_prefix(sep)) else {
            return (out, s);
        };
        match next.strip_prefix(prefix) {
            Some(n) if is_label(label(n).0) && !label(n).0.is_empty() => s = next,
            _ => return (out, s),
        }
    }
}

/// Offsets of `word` in `text` where it starts a word (not `addr-spec`, not `docs/spec`).
fn find_word<'a>(text: &'a str, word: &'a str) -> impl Iterator<Item = usize> + 'a {
    text.match_indices(word)
        .map(|(i, _)| i)
        .filter(move |&i| !text[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || "-/_.".contains(c)))
}

struct Docs {
    spec: BTreeMap<String, Vec<String>>,
    protocol: BTreeMap<String, Vec<String>>,
    captures: BTreeMap<&'static str, Vec<String>>,
}

impl Docs {
    fn load() -> Docs {
        let captures = ["drachtio-capture.txt", "drachtio-capture-uac.txt"]
            .map(|name| (name, capture_steps(&read(&format!("docs/spec/{name}")))));
        Docs {
            spec: sections(&read("docs/spec/sidecar-behaviour.md")),
            protocol: sections(&read("docs/spec/drachtio-protocol.md")),
            captures: captures.into_iter().collect(),
        }
    }

    /// The citations in one comment, each with what is wrong with it (`None` when it resolves).
    fn check(&self, text: &str) -> Vec<(usize, String, Option<String>)> {
        let mut found = Vec::new();
        // spec N[.N] [step N | , item N], …
        for at in find_word(text, "spec ") {
            let mut rest = &text[at + "spec ".len()..];
            rest = rest.strip_prefix("section ").or_else(|| rest.strip_prefix('§')).unwrap_or(rest);
            if !rest.starts_with(|c: char| c.is_ascii_digit()) {
                continue;
            }
            let (numbers, mut after) = labels(rest, "", numeric);
            let mut items = Vec::new();
            for kind in [", item ", " item ", " steps ", " step "] {
                if let Some(list) = after.strip_prefix(kind) {
                    (items, after) = labels(list, "", numeric);
                    break;
                }
            }
            let cited = &text[at..text.len() - after.len()];
            let problem = numbers.iter().find_map(|n| match self.spec.get(*n) {
                None => Some(format!("docs/spec/sidecar-behaviour.md has no section {n}")),
                Some(list) => items
                    .iter()
                    .find(|i| !list.contains(&i.to_string()))
                    .map(|i| format!("section {n} has no item {i}")),
            });
            found.push((at, cited.to_string(), problem));
        }
        // drachtio-protocol.md §2.5, §7.1
        for (at, _) in text.match_indices("drachtio-protocol.md §") {
            let rest = &text[at + "drachtio-protocol.md ".len()..];
            let (numbers, after) = labels(rest, "§", numeric);
            let cited = &text[at..text.len() - after.len()];
            let problem = match numbers.iter().find(|n| !self.protocol.contains_key(**n)) {
                Some(n) => Some(format!("docs/spec/drachtio-protocol.md has no section {n}")),
                None => numbers.is_empty().then(|| "no section number after §".to_string()),
            };
            found.push((at, cited.to_string(), problem));
        }
        // drachtio-capture[-uac].txt step(s) X, Y
        for (name, steps) in &self.captures {
            for (at, _) in text.match_indices(&format!("{name} step")) {
                let rest = &text[at + name.len()..];
                let Some(list) = rest.strip_prefix(" steps ").or_else(|| rest.strip_prefix(" step ")) else { continue };
                let (cited_steps, after) = labels(list, "", step);
                let cited = &text[at..text.len() - after.len()];
                let problem = cited_steps
                    .iter()
                    .find(|s| !steps.iter().any(|step| step.starts_with(**s)))
                    .map(|s| format!("{name} has no step {s}"));
                found.push((at, cited.to_string(), problem));
            }
        }
        // docs/<path>[, "Title"]; a path into the spec directory starts at the root: docs/spec/…
        for at in find_word(text, "spec/") {
            found.push((at, "spec/".into(), Some("a path of the repository: write docs/spec/…".into())));
        }
        for at in find_word(text, "docs/") {
            let rest = &text[at..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || "._-/*".contains(c))).unwrap_or(rest.len());
            let path = rest[..end].trim_end_matches('.');
            let mut problem = (!path_exists(path)).then(|| format!("no file {path}"));
            let mut cited = path.to_string();
            if let Some(title) = rest[path.len()..].strip_prefix(", \"").and_then(|t| t.split_once('"')).map(|t| t.0) {
                cited = format!("{path}, \"{title}\"");
                if problem.is_none() && !titles(&read(path)).iter().any(|t| t.starts_with(title)) {
                    problem = Some(format!("{path} has no heading {title:?}"));
                }
            }
            found.push((at, cited, problem));
        }
        found
    }
}

/// Whether `path` (relative to the repository, `*` matching any part of one name) exists.
fn path_exists(path: &str) -> bool {
    let Some((prefix, suffix)) = path.split_once('*') else { return repo().join(path).exists() };
    let full = repo().join(prefix);
    let (dir, start) = match prefix.ends_with('/') {
        true => (full.as_path(), ""),
        false => {
            (full.parent().expect("under the repository"), full.file_name().and_then(|n| n.to_str()).unwrap_or(""))
        }
    };
    std::fs::read_dir(dir).into_iter().flatten().flatten().any(|e| {
        let name = e.file_name().to_string_lossy().to_string();
        name.starts_with(start) && name.ends_with(suffix) && name.len() >= start.len() + suffix.len()
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_citation_in_a_comment_names_a_section_that_exists_in_docs() {
    let docs = Docs::load();
    let mut files = Vec::new();
    for dir in ["src", "test-tools/src", "tests", "fuzz/src", "fuzz/fuzz_targets"] {
        rust_files(&repo().join(dir), &mut files);
    }
    files.sort();
    let (mut count, mut broken) = (0, Vec::new());
    for file in &files {
        let name = file.strip_prefix(repo()).expect("under the repository").display().to_string();
        for comment in comments(&std::fs::read_to_string(file).expect("readable source")) {
            for (at, cited, problem) in docs.check(&comment.text) {
                count += 1;
                if let Some(problem) = problem {
                    broken.push(format!("{name}:{}: {cited:?}: {problem}", comment.line_at(at)));
                }
            }
        }
    }
    assert!(count > 100, "found only {count} citations: is the scanner still reading the comments?");
    assert!(broken.is_empty(), "{} of {count} citations point nowhere:\n{}", broken.len(), broken.join("\n"));
}

#[test]
fn the_scanner_reads_each_form_and_rejects_what_does_not_exist() {
    let docs = Docs::load();
    let verdicts = |text: &str| -> Vec<(String, bool)> {
        docs.check(text).into_iter().map(|(_, cited, problem)| (cited, problem.is_none())).collect()
    };
    let ok = |cited: &str| (cited.to_string(), true);
    let bad = |cited: &str| (cited.to_string(), false);
    assert_eq!(verdicts("(spec 6.2, 6.4, 7, 8, 12.3)."), [ok("spec 6.2, 6.4, 7, 8, 12.3")]);
    assert_eq!(
        verdicts("spec 5.2–5.4 and spec section 2, spec 4.1 steps 3–5"),
        [ok("spec 5.2–5.4"), ok("spec section 2"), ok("spec 4.1 steps 3–5")]
    );
    assert_eq!(verdicts("spec 14, item 26; spec 14, item 27"), [ok("spec 14, item 26"), bad("spec 14, item 27")]);
    assert_eq!(verdicts("spec 14.13: …, spec 13"), [bad("spec 14.13"), bad("spec 13")]);
    assert_eq!(verdicts("in spec order, an addr-spec"), []);
    assert_eq!(
        verdicts("(drachtio-protocol.md §2.5, §7.1 and §7.9; §8.1 alone)"),
        [ok("drachtio-protocol.md §2.5, §7.1 and §7.9")]
    );
    assert_eq!(verdicts("drachtio-protocol.md §8"), [bad("drachtio-protocol.md §8")]);
    assert_eq!(
        verdicts("drachtio-capture-uac.txt steps c1, f and s2, drachtio-capture.txt step 6"),
        [ok("drachtio-capture-uac.txt steps c1, f and s2"), bad("drachtio-capture.txt step 6")]
    );
    assert_eq!(
        verdicts("docs/spec/drachtio-capture*.txt, docs/spec/missing.md."),
        [ok("docs/spec/drachtio-capture*.txt"), bad("docs/spec/missing.md")]
    );
    assert_eq!(
        verdicts(r#"docs/spec/test-vectors.md, "Encrypted clients.password""#),
        [ok(r#"docs/spec/test-vectors.md, "Encrypted clients.password""#)]
    );
    assert_eq!(verdicts(r#"docs/DESIGN.md, "Where we do worse""#), [bad(r#"docs/DESIGN.md, "Where we do worse""#)]);
    assert_eq!(verdicts("spec/drachtio-capture.txt"), [bad("spec/")]);
}
