//! sbc-sidecar: the SIP sidecar daemon of a jambonz SBC node.

use std::collections::HashMap;
use std::process::ExitCode;

use sbc_sidecar::config::{self, Command};

fn main() -> ExitCode {
    let env: HashMap<String, String> =
        std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect();
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    match config::parse(&env, &args) {
        Ok(Command::Help(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Command::Version(text)) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Command::Check(cfg)) => ExitCode::from(sbc_sidecar::daemon::preflight::run(&cfg).clamp(0, 255) as u8),
        Ok(Command::Run(cfg)) => ExitCode::from(sbc_sidecar::daemon::run(cfg).clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("sbc-sidecar: {e}");
            ExitCode::from(e.exit_code().clamp(1, 255) as u8)
        }
    }
}
