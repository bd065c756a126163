//! Splits a delivery into chunks of whole CSV records, in UTF-8, each record
//! tagged with the physical line it starts on.
//!
//! Polars parses the chunks, but numbers records, not lines, and would turn a
//! ragged or badly quoted row into nulls or a failure of the whole chunk. The
//! framer therefore does the RFC 4180 record framing itself (quotes, `""`,
//! line breaks in quoted fields, CRLF), transcodes Windows-1257 as a stream,
//! strips a UTF-8 BOM, and sets aside any record that is malformed, so that
//! Polars only ever sees well-formed records.
//!
//! Whatever the bytes, time is linear in the file's size and memory bounded
//! by the chunk size and the longest record allowed: a record still open
//! when more input arrives is scanned on from where the scan stopped, never
//! from its start, and one longer than `max_record_bytes` (an unclosed
//! quote, a file without line breaks) refuses the delivery at once.

use std::io::Read;

use encoding_rs::{Decoder, DecoderResult, WINDOWS_1257};
use sha2::{Digest, Sha256};

use crate::config::source::Encoding;

/// Raw bytes read from the file at a time.
pub const READ_BLOCK: usize = 1 << 20;

/// How much the framer reads and holds at a time.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of records per chunk.
    pub chunk_bytes: usize,
    /// A longer record refuses the file.
    pub max_record_bytes: usize,
    /// Raw bytes per read.
    pub read_block: usize,
}

impl Limits {
    pub fn new(chunk_bytes: usize, max_record_bytes: usize) -> Limits {
        Limits { chunk_bytes, max_record_bytes, read_block: READ_BLOCK }
    }
}

/// A record set aside by the framer: the line it starts on and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub line: u64,
    pub reason: String,
}

/// Whole records, ready for Polars.
#[derive(Debug, Default)]
pub struct Chunk {
    /// UTF-8 records, each ending in `\n`, no header.
    pub data: Vec<u8>,
    /// The physical line each record of `data` starts on (header = line 1).
    pub lines: Vec<u64>,
    /// Records set aside, in line order.
    pub malformed: Vec<Malformed>,
    /// Bytes of the delivered file consumed so far (for progress).
    pub bytes_read: u64,
    /// Whether any record in `data` holds a quote. Most chunks hold none,
    /// and Polars parses those faster when told it need not look for quotes.
    pub quoted: bool,
}

/// Why a file cannot be framed at all.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("the file is empty: a header row is required")]
    Empty,
    #[error("line {line}: a quoted field is never closed")]
    UnclosedQuote { line: u64 },
    #[error("line {line}: bytes that are not valid {encoding}")]
    Encoding { line: u64, encoding: &'static str },
    #[error("line {line}: the header row is malformed: {reason}")]
    Header { line: u64, reason: &'static str },
    #[error(
        "line {line}: a record starting here runs past {max} bytes (`ingest.max_record_bytes`): a quoted field that is never closed, or no line breaks?"
    )]
    RecordTooLong { line: u64, max: usize },
}

/// Streams a delivery as chunks.
pub struct Framer<R: Read> {
    input: R,
    decoder: Option<Decoder>,
    delimiter: u8,
    /// Decoded bytes not yet framed.
    buf: Vec<u8>,
    /// Start of unframed data in `buf`.
    pos: usize,
    /// Physical line number at `pos`.
    line: u64,
    eof: bool,
    bom_checked: bool,
    bytes_read: u64,
    /// Fields per record, from the header.
    fields: usize,
    limits: Limits,
    scratch: Vec<u8>,
    /// SHA-256 of the raw bytes read so far.
    hasher: Sha256,
    /// Chunk buffers handed back for reuse.
    spare: Vec<Vec<u8>>,
    /// `buf[..utf8_ok_until]` is known to be valid UTF-8 (checked per block,
    /// so that records need no check of their own).
    utf8_ok_until: usize,
    /// Position of the next quote in `buf` at or after where it was last
    /// looked for (`buf.len()` then if there was none); `None` after a fill.
    /// A record before it has no quote and takes the fast path.
    next_quote: Option<usize>,
    /// How far the scan of the record at `pos` got before it ran out of input.
    partial: Option<Scan>,
}

/// A record's scan so far: resumed where it stopped when more input arrives.
#[derive(Debug, Clone, Copy)]
struct Scan {
    /// Offset from the record's start of the next byte to look at.
    i: usize,
    fields: usize,
    lines: u64,
    problem: Option<&'static str>,
    at_field_start: bool,
    in_quote: bool,
    /// The last byte was a field's closing quote.
    after_quote: bool,
    /// A quote was seen.
    quoted: bool,
}

impl Scan {
    fn start() -> Scan {
        Scan {
            i: 0,
            fields: 1,
            lines: 1,
            problem: None,
            at_field_start: true,
            in_quote: false,
            after_quote: false,
            quoted: false,
        }
    }
}

/// One framed record, as positions into `buf`.
struct Record {
    start: usize,
    /// End of the record's content (line terminator excluded).
    end: usize,
    /// Position after the line terminator.
    next: usize,
    /// Physical lines it spans.
    lines: u64,
    fields: usize,
    /// Why the record is malformed, if it is.
    problem: Option<&'static str>,
    /// Whether it holds a quote.
    quoted: bool,
}

impl<R: Read> Framer<R> {
    /// Read the header and position the framer on the first record.
    pub fn new(input: R, encoding: Encoding, delimiter: u8, limits: Limits) -> Result<(Self, Vec<String>), FrameError> {
        let decoder = match encoding {
            Encoding::Utf8 => None,
            Encoding::Windows1257 => Some(WINDOWS_1257.new_decoder_without_bom_handling()),
        };
        let mut f = Framer {
            input,
            decoder,
            delimiter,
            buf: Vec::with_capacity(2 * limits.read_block),
            pos: 0,
            line: 1,
            eof: false,
            bom_checked: false,
            bytes_read: 0,
            fields: 0,
            limits,
            scratch: Vec::new(),
            hasher: Sha256::new(),
            spare: Vec::new(),
            utf8_ok_until: 0,
            next_quote: None,
            partial: None,
        };
        let header = loop {
            match f.next_record()? {
                None => return Err(FrameError::Empty),
                Some(r) if r.end == r.start => {
                    f.advance(&r);
                    continue;
                }
                Some(r) => {
                    if let Some(reason) = r.problem {
                        return Err(FrameError::Header { line: f.line, reason });
                    }
                    let names = split_fields(&f.buf[r.start..r.end], delimiter);
                    f.advance(&r);
                    break names;
                }
            }
        };
        f.fields = header.len();
        Ok((f, header))
    }

    /// SHA-256 (hex) of every byte of the file; call after the last chunk.
    pub fn sha256(self) -> String {
        debug_assert!(self.eof, "the file was read to its end");
        crate::hex::encode(&self.hasher.finalize())
    }

    fn advance(&mut self, r: &Record) {
        self.pos = r.next;
        self.line += r.lines;
    }

    /// Take back a chunk's `data` for a later chunk: reusing the buffer
    /// saves allocating, faulting in and freeing one per chunk.
    pub fn recycle(&mut self, mut data: Vec<u8>) {
        data.clear();
        self.spare.push(data);
    }

    /// The next chunk of records, or `None` at the end of the file.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, FrameError> {
        let chunk_bytes = self.limits.chunk_bytes;
        let data = self.spare.pop().unwrap_or_else(|| Vec::with_capacity(chunk_bytes + 4096));
        let mut chunk = Chunk { data, ..Chunk::default() };
        while chunk.data.len() < chunk_bytes {
            self.take_plain_run(&mut chunk);
            if chunk.data.len() >= chunk_bytes {
                break;
            }
            let Some(r) = self.next_record()? else { break };
            let line = self.line;
            if r.end == r.start {
                // A blank line holds no record.
            } else if let Some(problem) = r.problem {
                chunk.malformed.push(Malformed { line, reason: problem.to_owned() });
            } else if r.fields != self.fields {
                chunk
                    .malformed
                    .push(Malformed { line, reason: format!("expected {} fields, found {}", self.fields, r.fields) });
            } else {
                chunk.data.extend_from_slice(&self.buf[r.start..r.end]);
                chunk.data.push(b'\n');
                chunk.lines.push(line);
                chunk.quoted |= r.quoted;
            }
            self.advance(&r);
        }
        chunk.bytes_read = self.bytes_read;
        if chunk.lines.is_empty() && chunk.malformed.is_empty() {
            return Ok(None);
        }
        Ok(Some(chunk))
    }

    /// Append to `chunk` the run of plain records at `pos` in one copy: whole
    /// lines of text known to be UTF-8, with no quote, no carriage return
    /// and the header's number of fields. It stops before anything else (and
    /// at the end of the buffer), which `next_record` then frames.
    fn take_plain_run(&mut self, chunk: &mut Chunk) {
        if self.pos >= self.buf.len() {
            return;
        }
        let valid = if self.decoder.is_some() { self.buf.len() } else { self.utf8_ok_until };
        let room = self.limits.chunk_bytes.saturating_sub(chunk.data.len());
        let end = self.next_quote().min(valid).min(self.pos + room);
        let Some(region) = self.buf.get(self.pos..end) else { return };
        let (mut taken, mut lines) = (0, 0u64);
        for nl in memchr::memchr_iter(b'\n', region) {
            let line = &region[taken..nl];
            let plain = !line.is_empty()
                && line.len() <= self.limits.max_record_bytes
                && line.last() != Some(&b'\r')
                && memchr::memchr_iter(self.delimiter, line).count() + 1 == self.fields;
            if !plain {
                break;
            }
            lines += 1;
            taken = nl + 1;
        }
        if lines == 0 {
            return;
        }
        chunk.data.extend_from_slice(&region[..taken]);
        chunk.lines.extend((0..lines).map(|k| self.line + k));
        self.pos += taken;
        self.line += lines;
    }

    /// Frame the record at `pos`, reading more input as needed.
    fn next_record(&mut self) -> Result<Option<Record>, FrameError> {
        loop {
            if self.bom_checked
                && let Some(r) = self.scan(self.eof)
            {
                if r.next - r.start > self.limits.max_record_bytes + 2 {
                    return Err(self.too_long());
                }
                return Ok(Some(r));
            }
            if self.buf.len() - self.pos > self.limits.max_record_bytes {
                return Err(self.too_long());
            }
            if self.eof {
                if self.pos < self.buf.len() {
                    return Err(FrameError::UnclosedQuote { line: self.line });
                }
                return Ok(None);
            }
            self.fill()?;
        }
    }

    fn too_long(&self) -> FrameError {
        FrameError::RecordTooLong { line: self.line, max: self.limits.max_record_bytes }
    }

    /// Read and decode the next block, compacting consumed bytes away.
    fn fill(&mut self) -> Result<(), FrameError> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.utf8_ok_until = self.utf8_ok_until.saturating_sub(self.pos);
            self.pos = 0;
        }
        self.scratch.resize(self.limits.read_block, 0);
        let n = loop {
            match self.input.read(&mut self.scratch) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        };
        self.bytes_read += n as u64;
        self.hasher.update(&self.scratch[..n]);
        let last = n == 0;
        let raw = &self.scratch[..n];
        if let Some(decoder) = self.decoder.as_mut() {
            let start = self.buf.len();
            let need = decoder.max_utf8_buffer_length_without_replacement(raw.len()).unwrap_or(raw.len() * 3 + 16);
            self.buf.resize(start + need, 0);
            let (result, _read, written) =
                decoder.decode_to_utf8_without_replacement(raw, &mut self.buf[start..], last);
            self.buf.truncate(start + written);
            if let DecoderResult::Malformed(..) = result {
                let line = self.line + memchr::memchr_iter(b'\n', &self.buf[self.pos..]).count() as u64;
                return Err(FrameError::Encoding { line, encoding: "Windows-1257" });
            }
            self.bom_checked = true;
        } else {
            self.buf.extend_from_slice(raw);
            // Decide about a UTF-8 byte-order mark once three bytes (or all) are in.
            if !self.bom_checked && (self.buf.len() >= 3 || last) {
                if self.buf.starts_with(b"\xEF\xBB\xBF") {
                    self.buf.drain(..3);
                }
                self.bom_checked = true;
            }
        }
        if last {
            self.eof = true;
        }
        self.next_quote = None;
        if self.decoder.is_none() && self.bom_checked {
            // Records start after a line feed, so on a character boundary.
            let start = self.utf8_ok_until.max(self.pos);
            self.utf8_ok_until = match simdutf8::compat::from_utf8(&self.buf[start..]) {
                Ok(_) => self.buf.len(),
                Err(e) => start + e.valid_up_to(),
            };
        }
        Ok(())
    }

    /// Frame one record starting at `pos` if the buffer holds all of it;
    /// otherwise remember how far the scan got, for the next call.
    fn scan(&mut self, eof: bool) -> Option<Record> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let resumed = self.partial.take();
        if resumed.is_none() {
            // Fast path: a whole line with no quote is a record of its own.
            let quote = self.next_quote();
            let buf = &self.buf[self.pos..];
            if let Some(nl) = memchr::memchr(b'\n', buf).or(eof.then_some(buf.len()))
                && quote >= self.pos + nl
            {
                let line = &buf[..nl];
                let content = line.strip_suffix(b"\r").unwrap_or(line);
                let fields = 1 + memchr::memchr_iter(self.delimiter, content).count();
                let next = nl + usize::from(nl < buf.len());
                return Some(self.record(content.len(), next, 1, fields, content));
            }
        }
        let mut st = resumed.unwrap_or_else(Scan::start);
        let buf = &self.buf[self.pos..];
        let d = self.delimiter;
        // Slow path: walk the bytes with RFC 4180 quoting, from where the last call stopped.
        loop {
            if st.in_quote {
                // A quoted field runs to its closing quote, across line breaks.
                let Some(q) = memchr::memchr2(b'"', b'\n', &buf[st.i..]) else {
                    st.i = buf.len();
                    break;
                };
                st.i += q;
                if buf[st.i] == b'\n' {
                    st.lines += 1;
                    st.i += 1;
                    continue;
                }
                // A quote: doubled, or the end of the field.
                match buf.get(st.i + 1) {
                    Some(b'"') => st.i += 2,
                    None if !eof => break,
                    _ => {
                        st.i += 1;
                        st.in_quote = false;
                        st.after_quote = true;
                        st.at_field_start = false;
                    }
                }
                continue;
            }
            if !st.at_field_start && !st.after_quote {
                // Inside an unquoted field: skip to what can matter.
                match memchr::memchr3(d, b'\n', b'"', &buf[st.i..]) {
                    Some(k) => st.i += k,
                    None => st.i = buf.len(),
                }
            }
            let Some(&c) = buf.get(st.i) else { break };
            if st.after_quote && c != d && c != b'\n' && c != b'\r' {
                st.problem = st.problem.or(Some("text after the closing quote of a field"));
            }
            st.after_quote = false;
            st.quoted |= c == b'"';
            if st.at_field_start && c == b'"' {
                st.in_quote = true;
                st.i += 1;
                continue;
            }
            if c == d {
                st.fields += 1;
                st.at_field_start = true;
            } else if c == b'\n' {
                let i = st.i;
                let content_end = if i > 0 && buf[i - 1] == b'\r' { i - 1 } else { i };
                return Some(Record {
                    start: self.pos,
                    end: self.pos + content_end,
                    next: self.pos + i + 1,
                    lines: st.lines,
                    fields: st.fields,
                    problem: st.problem.or(self.utf8_problem(self.pos, &buf[..content_end])),
                    quoted: st.quoted,
                });
            } else {
                if c == b'"' {
                    st.problem = st.problem.or(Some("a quote inside an unquoted field"));
                }
                st.at_field_start = false;
            }
            st.i += 1;
        }
        if !eof || st.in_quote {
            self.partial = Some(st);
            return None;
        }
        let content_end = if buf.ends_with(b"\r") { buf.len() - 1 } else { buf.len() };
        Some(Record {
            start: self.pos,
            end: self.pos + content_end,
            next: self.pos + buf.len(),
            lines: st.lines,
            fields: st.fields,
            problem: st.problem.or(self.utf8_problem(self.pos, &buf[..content_end])),
            quoted: st.quoted,
        })
    }

    /// Position of the first quote at or after `pos` (`buf.len()` if none),
    /// searched for only when the last one found lies behind.
    fn next_quote(&mut self) -> usize {
        match self.next_quote {
            Some(q) if q >= self.pos => q,
            _ => {
                let q = memchr::memchr(b'"', &self.buf[self.pos..]).map_or(self.buf.len(), |i| self.pos + i);
                self.next_quote = Some(q);
                q
            }
        }
    }

    fn record(&self, len: usize, next: usize, lines: u64, fields: usize, content: &[u8]) -> Record {
        Record {
            start: self.pos,
            end: self.pos + len,
            next: self.pos + next,
            lines,
            fields,
            problem: self.utf8_problem(self.pos, content),
            quoted: false,
        }
    }

    /// Why `content`, found at `start` in `buf`, is not valid UTF-8, if it is not.
    fn utf8_problem(&self, start: usize, content: &[u8]) -> Option<&'static str> {
        // Transcoded input is valid UTF-8 by construction.
        if self.decoder.is_none()
            && start + content.len() > self.utf8_ok_until
            && simdutf8::basic::from_utf8(content).is_err()
        {
            Some("bytes that are not valid UTF-8")
        } else {
            None
        }
    }
}

/// Split one record into unquoted fields (used for the header only).
pub fn split_fields(record: &[u8], delimiter: u8) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = Vec::new();
    let mut i = 0;
    let mut quoted = false;
    while i < record.len() {
        let c = record[i];
        if quoted {
            if c == b'"' {
                if record.get(i + 1) == Some(&b'"') {
                    field.push(b'"');
                    i += 1;
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
        } else if c == b'"' && field.is_empty() {
            quoted = true;
        } else if c == delimiter {
            out.push(String::from_utf8_lossy(&field).into_owned());
            field.clear();
        } else {
            field.push(c);
        }
        i += 1;
    }
    out.push(String::from_utf8_lossy(&field).into_owned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(input: &[u8], enc: Encoding, chunk: usize) -> (Vec<String>, Vec<(u64, String)>, Vec<Malformed>) {
        frame_with(input, enc, Limits::new(chunk, 1 << 20))
    }

    fn frame_with(input: &[u8], enc: Encoding, limits: Limits) -> (Vec<String>, Vec<(u64, String)>, Vec<Malformed>) {
        let (mut f, header) = Framer::new(input, enc, b';', limits).unwrap();
        let (mut records, mut bad) = (Vec::new(), Vec::new());
        while let Some(c) = f.next_chunk().unwrap() {
            let text = String::from_utf8(c.data.clone()).unwrap();
            assert_eq!(c.quoted, text.contains('"'), "a chunk says whether it holds quotes");
            // As ingest does: every later chunk is framed into a used buffer.
            f.recycle(c.data);
            let mut lines = c.lines.iter();
            // Records end in '\n' but may hold '\n' inside quotes: re-frame by quotes.
            let mut cur = String::new();
            let mut quotes = 0;
            for ch in text.chars() {
                if ch == '"' {
                    quotes += 1;
                }
                if ch == '\n' && quotes % 2 == 0 {
                    records.push((*lines.next().unwrap(), std::mem::take(&mut cur)));
                } else {
                    cur.push(ch);
                }
            }
            bad.extend(c.malformed);
        }
        (header, records, bad)
    }

    #[test]
    fn header_bom_crlf_and_quoted_line_breaks() {
        let input = b"\xEF\xBB\xBFa;b\r\n1;\"x\r\ny\"\r\n2;\"q;\"\"r\"\"\"\r\n\r\n3;z";
        let (h, recs, bad) = frame(input, Encoding::Utf8, 4096);
        assert_eq!(h, ["a", "b"]);
        assert_eq!(recs, [(2, "1;\"x\r\ny\"".into()), (4, "2;\"q;\"\"r\"\"\"".into()), (6, "3;z".into())]);
        assert!(bad.is_empty());
    }

    /// Runs of plain lines are copied whole; a blank line in one is still
    /// skipped, even where a record has a single field, and a CRLF line ends
    /// without its carriage return (one inside a field stays).
    #[test]
    fn plain_runs_skip_blank_lines_and_carriage_returns() {
        let (h, recs, bad) = frame(b"a\n1\n\n2\n3\n\n", Encoding::Utf8, 4096);
        assert_eq!(h, ["a"]);
        assert_eq!(recs, [(2, "1".into()), (4, "2".into()), (5, "3".into())]);
        assert!(bad.is_empty());
        let (_, recs, _) = frame(b"a;b\n1;2\n3;4\r\n5;6\n7;x\ry\n", Encoding::Utf8, 4096);
        assert_eq!(recs, [(2, "1;2".into()), (3, "3;4".into()), (4, "5;6".into()), (5, "7;x\ry".into())]);
    }

    #[test]
    fn malformed_records_are_set_aside_with_their_line() {
        let input = b"a;b\n1\n2;\"x\"y\n3;4;5\n4;a\"b\n\xff;1\n5;ok\n";
        let (_, recs, bad) = frame(input, Encoding::Utf8, 4096);
        assert_eq!(recs, [(7, "5;ok".into())]);
        let lines: Vec<u64> = bad.iter().map(|m| m.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6]);
        assert!(bad[0].reason.contains("expected 2 fields, found 1"));
    }

    /// UTF-8 is checked a read block at a time: a character split across
    /// blocks is fine, and a bad byte in a later block still sets aside only
    /// its own record.
    #[test]
    fn utf8_checked_across_read_blocks() {
        let mut input = b"a;b\n".to_vec();
        let mut line = 2u64;
        // Fill up to just before the first block's end with 9-byte records.
        while input.len() + 9 < READ_BLOCK - 1 {
            input.extend_from_slice(b"1234;678\n");
            line += 1;
        }
        while input.len() < READ_BLOCK - 1 {
            input.push(b'x');
        }
        // 'õ' straddles the block boundary, in a record of its own.
        input.extend_from_slice("õ;1\n".as_bytes());
        let split_line = line;
        input.extend_from_slice(b"2;\xff\n3;ok\n");
        let (_, recs, bad) = frame(&input, Encoding::Utf8, 1 << 20);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!(bad[0].line, split_line + 1);
        assert!(bad[0].reason.contains("UTF-8"));
        assert!(recs.iter().any(|(l, r)| *l == split_line && r.ends_with("õ;1")));
        assert_eq!(recs.last().map(|(l, r)| (*l, r.as_str())), Some((split_line + 2, "3;ok")));
    }

    #[test]
    fn unclosed_quote_refuses_the_file() {
        let limits = Limits::new(4096, 4096);
        let (mut f, _) = Framer::new(&b"a;b\n1;\"open\n2;3\n"[..], Encoding::Utf8, b';', limits).unwrap();
        assert!(matches!(f.next_chunk(), Err(FrameError::UnclosedQuote { line: 2 })));
        assert!(matches!(Framer::new(&b""[..], Encoding::Utf8, b';', limits), Err(FrameError::Empty)));
    }

    #[test]
    fn the_hash_covers_every_byte_read() {
        let input = b"\xEF\xBB\xBFa;b\n1;2\n";
        let (mut f, _) = Framer::new(&input[..], Encoding::Utf8, b';', Limits::new(4096, 4096)).unwrap();
        while f.next_chunk().unwrap().is_some() {}
        assert_eq!(f.sha256(), crate::hex::encode(&Sha256::digest(input)));
    }

    #[test]
    fn windows_1257_is_transcoded() {
        // "Šõ" in Windows-1257 is 0xD0 0xF5.
        let input = b"a;b\n1;\xD0\xF5\n";
        let (_, recs, _) = frame(input, Encoding::Windows1257, 4096);
        assert_eq!(recs, [(2, "1;Šõ".into())]);
    }

    /// A record that never ends is refused as soon as it passes the limit,
    /// at the line where it starts, holding no more than the limit and a
    /// read block: an unclosed quote, a quoted field of line breaks, a file
    /// with no line break at all.
    #[test]
    fn a_record_past_the_limit_refuses_the_file_at_once() {
        let limits = Limits { chunk_bytes: 4096, max_record_bytes: 64 << 10, read_block: 4096 };
        let big = 8 << 20;
        let mut unclosed = b"a;b\n1;2\n3;\"".to_vec();
        unclosed.resize(big, b'x');
        let mut newlines = b"a;b\n1;\"".to_vec();
        newlines.resize(big, b'\n');
        let no_breaks = vec![b'a'; big];
        for (input, line, in_header) in [(&unclosed, 3, false), (&newlines, 2, false), (&no_breaks, 1, true)] {
            let err = match Framer::new(input.as_slice(), Encoding::Utf8, b';', limits) {
                Err(e) => {
                    assert!(in_header);
                    e
                }
                Ok((mut f, _)) => {
                    let e = std::iter::from_fn(|| Some(f.next_chunk())).find_map(|c| c.err()).unwrap();
                    assert!(
                        f.buf.capacity() <= 4 * (limits.max_record_bytes + limits.read_block),
                        "{}",
                        f.buf.capacity()
                    );
                    assert!(f.bytes_read < 2 * (limits.max_record_bytes + limits.read_block) as u64, "read on");
                    e
                }
            };
            match err {
                FrameError::RecordTooLong { line: l, max } => assert_eq!((l, max), (line, limits.max_record_bytes)),
                other => panic!("expected RecordTooLong, got {other:?}"),
            }
        }
    }

    proptest! {
        /// Whatever the read block (down to a byte) and chunk boundaries, records and lines come out the same.
        #[test]
        fn framing_is_independent_of_chunking(
            rows in proptest::collection::vec(("[a-zõäöü ]{0,6}", "[a-z;\"\n]{0,6}", any::<bool>()), 1..40),
            chunk in 1usize..200,
            read_block in prop_oneof![1usize..16, 16usize..300, Just(READ_BLOCK)],
        ) {
            let mut input = String::from("x;y\n");
            let mut expected = Vec::new();
            let mut line = 2u64;
            for (a, b, crlf) in &rows {
                let quoted = format!("\"{}\"", b.replace('"', "\"\""));
                let nl = if *crlf { "\r\n" } else { "\n" };
                input.push_str(&format!("{a};{quoted}{nl}"));
                expected.push((line, format!("{a};{quoted}")));
                line += 1 + b.matches('\n').count() as u64;
            }
            let limits = Limits { chunk_bytes: chunk, max_record_bytes: 1 << 20, read_block };
            let (_, recs, bad) = frame_with(input.as_bytes(), Encoding::Utf8, limits);
            prop_assert!(bad.is_empty());
            prop_assert_eq!(recs, expected);
        }

        /// Malformed records (stray quotes, text after a closing quote, ragged
        /// rows) are found the same way whatever the read block.
        #[test]
        fn malformed_records_do_not_depend_on_the_read_block(
            text in "[ab;\"\n]{0,80}",
            read_block in 1usize..40,
        ) {
            let input = format!("x;y\n{text}");
            let whole = Limits { chunk_bytes: 64, max_record_bytes: 1 << 20, read_block: READ_BLOCK };
            let small = Limits { read_block, ..whole };
            let run = |limits: Limits| {
                let (mut f, _) = Framer::new(input.as_bytes(), Encoding::Utf8, b';', limits).unwrap();
                let mut out = Vec::new();
                loop {
                    match f.next_chunk() {
                        Ok(Some(c)) => out.push(format!("{:?} {:?} {:?}", c.data, c.lines, c.malformed)),
                        Ok(None) => return Ok(out),
                        Err(e) => return Err(e.to_string()),
                    }
                }
            };
            prop_assert_eq!(run(whole), run(small));
        }
    }
}
