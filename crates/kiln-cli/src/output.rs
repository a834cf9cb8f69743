//! Writing to stdout. A closed pipe (`kiln run … | head`, `kiln info | head`) ends the output
//! quietly, as ripgrep does, where `println!` would panic.

use std::io::{self, Write};

/// Streams text to stdout, flushing each piece.
pub struct Stdout {
    closed: bool,
}

impl Stdout {
    /// A writer on the process's stdout.
    pub fn new() -> Stdout {
        Stdout { closed: false }
    }

    /// Writes and flushes `text`; returns false once the reader has gone away.
    pub fn write(&mut self, text: &str) -> io::Result<bool> {
        if self.closed {
            return Ok(false);
        }
        let mut out = io::stdout().lock();
        match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the reader has gone away.
    pub fn closed(&self) -> bool {
        self.closed
    }
}

/// `println!` for a command's output: when stdout's reader has gone away the process ends
/// quietly with success (see [`print_out`]).
macro_rules! outln {
    () => {
        $crate::output::print_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::print_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for a command's output, flushed at once (progress figures); see [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::print_out(format_args!($($arg)*))
    };
}

pub(crate) use {out, outln};

/// Writes and flushes `args` on stdout. A closed pipe means the reader has all it wanted: the
/// process exits with success, as ripgrep does. Any other write error ends it with one line.
pub fn print_out(args: std::fmt::Arguments) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|_| out.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}
