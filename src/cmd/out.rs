//! Standard output and standard error that a closed reader cannot crash.
//!
//! `println!` panics when the write fails, and Rust ignores SIGPIPE, so `mdmsim tree | head -1`
//! would end in a panic once `head` has gone. Every command prints through [`line`] and
//! [`text`] instead: when standard output is gone (EPIPE, or any other write error) the rest of
//! the output is dropped, [`closed`] turns true, and the command carries on to its own exit
//! code (a `run` stops, as it would on Ctrl-C: see `run.rs`). Messages on standard error go
//! through [`warn`], which never fails either.

use std::fmt::Display;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once standard output refused a write.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `value` and a newline to standard output (nothing once it is closed).
pub fn line(value: impl Display) {
    write(format_args!("{value}\n"));
}

/// Writes `value` as it is to standard output (nothing once it is closed).
pub fn text(value: impl Display) {
    write(format_args!("{value}"));
}

/// True once standard output refused a write (its reader went away).
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// Writes `value` and a newline to standard error, ignoring failures (a closed standard error
/// has nobody left to tell).
pub fn warn(value: impl Display) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{value}");
}

fn write(args: std::fmt::Arguments<'_>) {
    if closed() {
        return;
    }
    let mut out = std::io::stdout().lock();
    // Flushed per write: a failure shows here, not in the exit-time flush nobody checks, and
    // a reader such as `head` gets each line as it is printed.
    let result = out.write_fmt(args).and_then(|()| out.flush());
    if let Err(e) = result {
        CLOSED.store(true, Ordering::Relaxed);
        // A reader that went away (`| head`) is normal; anything else (a full disk) is said once.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            warn(format_args!("mdmsim: standard output: {e}; the rest of the output is dropped"));
        }
    }
}
