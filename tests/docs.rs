//! The documentation an operator reads names every variable the daemon reads: README,
//! sbc-sidecar(8) and the packaged /etc/default/sbc-sidecar. The list of variables is taken from
//! the configuration code itself, so a new variable without documentation fails here.

use std::collections::BTreeSet;
use std::path::Path;

use sbc_sidecar::config::{IGNORED_VARIABLES, NEW_VARIABLES};

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every `"NAME"` string literal in src/config/ that looks like one of our variables.
fn variables_read_by_config() -> BTreeSet<String> {
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
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("src/config: {e}"))
        .map(|entry| entry.expect("src/config entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .collect();
    files.sort();
    let source: String = files.iter().map(|path| std::fs::read_to_string(path).expect("config source")).collect();
    let mut out = BTreeSet::new();
    for piece in source.split('"').skip(1).step_by(2) {
        let is_name =
            !piece.is_empty() && piece.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if is_name && PREFIXES.iter().any(|p| piece.starts_with(p)) && !piece.contains("XXX") {
            out.insert(piece.to_string());
        }
    }
    out
}

#[test]
fn every_variable_is_documented_in_readme_man_page_and_default_file() {
    let vars = variables_read_by_config();
    assert!(vars.len() > 60, "found the variables: {}", vars.len());
    for (doc, text) in [
        ("README.md", read("README.md")),
        ("man/sbc-sidecar.8", read("man/sbc-sidecar.8")),
        ("packaging/default/sbc-sidecar", read("packaging/default/sbc-sidecar")),
    ] {
        let missing: Vec<&String> = vars.iter().filter(|v| !text.contains(v.as_str())).collect();
        assert!(missing.is_empty(), "{doc} does not mention {missing:?}");
    }
}

/// The variables we accept and ignore say so wherever an operator looks them up.
#[test]
fn ignored_variables_are_documented_as_ignored() {
    let man = read("man/sbc-sidecar.8");
    let readme = read("README.md");
    let default_file = read("packaging/default/sbc-sidecar");
    for (name, _) in IGNORED_VARIABLES {
        let entry = man
            .split(".TP\n")
            .find(|e| e.starts_with(&format!(".B \\%{name}\n")))
            .unwrap_or_else(|| panic!("sbc-sidecar(8) has no entry for {name}"));
        assert!(entry.contains("Accepted and ignored"), "sbc-sidecar(8) on {name}: {entry}");
        assert!(entry.contains("warning at startup"), "sbc-sidecar(8) on {name}: {entry}");
        let row = readme
            .lines()
            .find(|l| l.starts_with('|') && l.contains(&format!("`{name}`")))
            .unwrap_or_else(|| panic!("README has no table row for {name}"));
        assert!(row.contains("accepted and ignored"), "README row of {name}: {row}");
        let comment = default_file
            .lines()
            .take_while(|l| !l.starts_with(&format!("#{name}=")))
            .last()
            .unwrap_or_else(|| panic!("the default file has no {name}"));
        assert!(comment.contains("Accepted and ignored"), "default file on {name}: {comment}");
    }
}

#[test]
fn readme_states_the_defaults_of_our_own_variables() {
    let readme = read("README.md");
    for (name, default, _) in NEW_VARIABLES {
        let line = readme
            .lines()
            .find(|l| l.starts_with('|') && l.contains(&format!("`{name}`")))
            .unwrap_or_else(|| panic!("README has no table row for {name}"));
        assert!(line.contains(default), "README row of {name} does not state its default {default}: {line}");
    }
}

#[test]
fn the_unit_restarts_after_a_role_failure_and_the_man_page_documents_it() {
    let unit = read("packaging/sbc-sidecar.service");
    let setting = |name: &str| {
        unit.lines()
            .find_map(|l| l.trim().strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
            .map(str::trim)
            .unwrap_or_else(|| panic!("the unit has no {name}="))
            .to_string()
    };
    assert_eq!(setting("Restart"), "on-failure");
    let prevented: Vec<String> = setting("RestartPreventExitStatus").split_whitespace().map(String::from).collect();
    assert_eq!(prevented, ["64", "78"]);
    let code = sbc_sidecar::daemon::EXIT_ROLE_FAILED.to_string();
    assert!(!prevented.contains(&code), "exit status {code} must be restarted");
    let man = read("man/sbc-sidecar.8");
    let exit_status = man.split(".SH \"EXIT STATUS\"").nth(1).expect("man page has EXIT STATUS");
    assert!(exit_status.contains(&format!(".B {code}\n")), "EXIT STATUS documents {code}");
}
