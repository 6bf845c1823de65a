//! `drachtio-double`: the test double of drachtio-server as a program, so that `make run` can
//! stand in for drachtio-server on a development machine.
//!
//! ```text
//! drachtio-double --admin 127.0.0.1:9022 --sip 127.0.0.1:5060 --secret cymru [--uac-timeout-ms 32000]
//! ```
//!
//! Prints `drachtio-double listening admin=<addr> sip=<addr>` once ready, traces every frame and
//! SIP message on stderr, and runs until it is killed.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use sbc_test_tools::double;

const USAGE: &str =
    "usage: drachtio-double --admin <ip:port> --sip <ip:port> --secret <secret> [--uac-timeout-ms <ms>] [--quiet]";

fn parse_args(args: &[String]) -> Result<(double::DoubleConfig, bool), String> {
    let mut cfg = double::DoubleConfig {
        admin: "127.0.0.1:9022".parse().map_err(|e| format!("{e}"))?,
        sip_port: 5060,
        ..double::DoubleConfig::default()
    };
    let mut quiet = false;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        if flag == "--quiet" {
            quiet = true;
            continue;
        }
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--admin" => cfg.admin = value.parse().map_err(|_| format!("--admin: `{value}` is not ip:port"))?,
            "--sip" => {
                let sip: SocketAddr = value.parse().map_err(|_| format!("--sip: `{value}` is not ip:port"))?;
                cfg.sip_ip = sip.ip();
                cfg.sip_port = sip.port();
            }
            "--secret" => cfg.secret = value.clone(),
            "--uac-timeout-ms" => {
                let ms: u64 = value.parse().map_err(|_| format!("--uac-timeout-ms: `{value}` is not a number"))?;
                cfg.uac_timeout = Duration::from_millis(ms);
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok((cfg, quiet))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let (cfg, quiet) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("drachtio-double: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    double::set_trace(!quiet);
    let running = match double::Double::start(cfg) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("drachtio-double: cannot listen: {e}");
            return ExitCode::from(1);
        }
    };
    println!("drachtio-double listening admin={} sip={}", running.admin_addr(), running.sip_addr());
    // Runs until killed; SIGTERM/SIGINT end the process with the default disposition.
    loop {
        std::thread::park();
    }
}
