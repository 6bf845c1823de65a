//! The "Upgrading from the Node sidecar" section of README.md and sbc-sidecar(8) name the same
//! variables, every variable the daemon reads is in them (carried over, new, or ignored), each
//! one named there is really read, and the new ones state the defaults the code applies.

use std::collections::BTreeSet;
use std::path::Path;

use sbc_sidecar::config::{IGNORED_VARIABLES, NEW_VARIABLES};

const PREFIXES: [&str; 15] = [
    "JAMBONES_",
    "SBC_",
    "DRACHTIO_",
    "STATS_",
    "ENABLE_",
    "OPTIONS_",
    "REGISTER_",
    "CHECK_",
    "EXPIRES_",
    "SEND_",
    "DEAD_",
    "LEGACY_",
    "ENCRYPTION_",
    "JWT_",
    "NODE_",
];

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// From `start` up to the next line starting with `next` (or the end).
fn section(text: &str, start: &str, next: &str) -> String {
    let from = text.find(start).unwrap_or_else(|| panic!("no section {start:?}"));
    let rest = &text[from + start.len()..];
    let end = rest.find(next).unwrap_or(rest.len());
    rest[..end].to_string()
}

fn is_variable(word: &str) -> bool {
    !word.ends_with('_')
        && PREFIXES.iter().any(|p| word.starts_with(p) && word.len() > p.len())
        && word.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Every variable-like word of a text (roff escapes removed).
fn variables_in(text: &str) -> BTreeSet<String> {
    let plain = text.replace("\\%", "").replace("\\fB", " ").replace("\\fR", " ").replace("\\fI", " ");
    plain
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| is_variable(w))
        .map(str::to_string)
        .collect()
}

/// The variables src/config/ reads (its `"NAME"` literals), as tests/docs.rs finds them.
fn variables_read_by_config() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    let mut source = String::new();
    for entry in std::fs::read_dir(&dir).expect("src/config") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs") {
            source.push_str(&std::fs::read_to_string(&path).expect("config source"));
        }
    }
    source.split('"').skip(1).step_by(2).filter(|p| is_variable(p) && !p.contains("XXX")).map(str::to_string).collect()
}

fn readme_section() -> String {
    section(&read("README.md"), "## Upgrading from the Node sidecar", "\n## ")
}

fn man_section() -> String {
    section(&read("man/sbc-sidecar.8"), ".SH \"UPGRADING FROM THE NODE SIDECAR\"", "\n.SH ")
}

#[test]
fn readme_and_man_page_upgrade_sections_name_the_same_variables() {
    let readme = variables_in(&readme_section());
    let man = variables_in(&man_section());
    assert!(readme.len() > 80, "found the README's variables: {}", readme.len());
    let only_readme: Vec<&String> = readme.difference(&man).collect();
    let only_man: Vec<&String> = man.difference(&readme).collect();
    assert!(only_readme.is_empty() && only_man.is_empty(), "README only: {only_readme:?}; man only: {only_man:?}");
}

#[test]
fn the_upgrade_section_names_every_variable_read_and_only_those() {
    let named = variables_in(&readme_section());
    let read = variables_read_by_config();
    let missing: Vec<&String> = read.difference(&named).collect();
    assert!(missing.is_empty(), "read by the daemon but not in the upgrade section: {missing:?}");
    let unknown: Vec<&String> = named.difference(&read).collect();
    assert!(unknown.is_empty(), "named in the upgrade section but not read by the daemon: {unknown:?}");
    for (name, _) in IGNORED_VARIABLES {
        assert!(named.contains(*name), "{name}");
    }
}

#[test]
fn new_variables_state_their_defaults_in_both() {
    let readme = readme_section();
    let man = man_section().replace("\\:", "");
    for (name, default, _) in NEW_VARIABLES {
        // An empty default (a list that is empty unless set) is written as such.
        let (row, entry, plain_entry) = if default.is_empty() {
            (format!("| `{name}` | (empty) |"), format!(".B \\%{name}\nDefault empty."), String::new())
        } else {
            (
                format!("| `{name}` | `{default}` |"),
                format!(".B \\%{name}\nDefault \\fB\\%{default}\\fR."),
                format!(".B \\%{name}\nDefault \\fB{default}\\fR."),
            )
        };
        assert!(readme.lines().any(|l| l == row), "README upgrade section lacks {row}");
        assert!(
            man.contains(&entry) || (!plain_entry.is_empty() && man.contains(&plain_entry)),
            "sbc-sidecar(8) upgrade section lacks {entry}"
        );
    }
}
