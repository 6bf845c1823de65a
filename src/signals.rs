//! Process signals as messages on a channel, so the main thread can `select!` on them.

use std::io;
use std::thread;

use crossbeam_channel::{unbounded, Receiver};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Interrupt,
    Hangup,
}

/// Installs the handlers and starts the forwarding thread.
pub fn listen() -> io::Result<Receiver<Signal>> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let (tx, rx) = unbounded();
    thread::Builder::new().name("signals".into()).spawn(move || {
        for sig in signals.forever() {
            let s = match sig {
                SIGTERM => Signal::Terminate,
                SIGINT => Signal::Interrupt,
                _ => Signal::Hangup,
            };
            if tx.send(s).is_err() {
                break;
            }
        }
    })?;
    Ok(rx)
}
