//! Log lines on their way to stderr, with anything shaped like a personal code redacted.
//!
//! ladu's own log messages never hold one, but the crates it embeds write
//! what they like: Ballista's scheduler and executors log failed tasks with
//! their expressions, whose literals are whatever a user typed into a query.
//! The formatter hands each event over in one write, so no code is split
//! between two.

use std::io::Write;

use crate::pseudonym::isikukood::redact;

/// A writer that passes text on to `W` with every run of eleven digits redacted.
pub struct Redacting<W: Write>(pub W);

impl<W: Write> Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(redact(&String::from_utf8_lossy(buf)).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Standard error, redacted: for a log subscriber's writer.
pub fn stderr() -> Redacting<std::io::Stderr> {
    Redacting(std::io::stderr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_in_a_log_line_is_redacted_and_the_rest_kept() {
        let mut out = Redacting(Vec::new());
        let line = b"ERROR Task failed: CAST(person_code@3 AS Utf8) = 38001010009 at stage 4\n";
        assert_eq!(out.write(line).unwrap(), line.len());
        let text = String::from_utf8(out.0).unwrap();
        assert!(!text.contains("38001010009"), "{text}");
        assert!(
            text.starts_with("ERROR Task failed: CAST(person_code@3 AS Utf8) = ") && text.ends_with("at stage 4\n")
        );
    }
}
