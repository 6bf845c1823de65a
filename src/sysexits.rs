//! The exit statuses of sysexits.h the programs use. systemd shows them by name, and the
//! unit's `RestartPreventExitStatus=64 78` names the two a restart cannot fix.

/// A command-line mistake.
pub const EX_USAGE: i32 = 64;
/// A dependency (MySQL, Redis, drachtio) did not answer.
pub const EX_UNAVAILABLE: i32 = 69;
/// A missing or malformed environment variable or configuration file.
pub const EX_CONFIG: i32 = 78;
