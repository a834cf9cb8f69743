//! Writing streamed text to stdout. A closed pipe (`kiln run … | head`) ends the output
//! quietly, as ripgrep does.

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
