//! The message itself (RFC 5322): a header section kept in memory, where mailets edit it, and a
//! body that stays in storage and is streamed when read.

use std::fmt;
use std::io::{self, Read};
use std::sync::Arc;

/// The longest header section kept in memory. A longer one (only seen in hostile mail) is cut
/// at a line boundary and the rest is treated as body, so that memory stays bounded.
pub const MAX_HEADER_SECTION: usize = 1024 * 1024;

/// Where a message body lives. The storage layer implements this for bodies in files or
/// database rows; [`MemoryBody`] holds small bodies built by mailets.
pub trait BodySource: Send + Sync + fmt::Debug {
    /// The body's length in octets.
    fn len(&self) -> u64;
    /// Whether the body is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A fresh reader from the body's first octet. Each call starts again at the beginning.
    fn open(&self) -> io::Result<Box<dyn Read + Send>>;
}

/// A body held in memory.
#[derive(Clone, Debug, Default)]
pub struct MemoryBody(Arc<[u8]>);

impl MemoryBody {
    /// Wraps bytes as a body.
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> Self {
        MemoryBody(bytes.into())
    }
}

impl BodySource for MemoryBody {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::Cursor::new(self.0.clone())))
    }
}

/// A reader over the whole message: header section, then body.
pub type MessageReader = io::Chain<io::Cursor<Vec<u8>>, Box<dyn Read + Send>>;

/// An RFC 5322 message. Header lines end in CRLF as SMTP carries them; the header section
/// includes the empty line that separates it from the body, when the message has one.
#[derive(Clone, Debug)]
pub struct Message {
    header: Vec<u8>,
    body: Arc<dyn BodySource>,
}

impl Message {
    /// A message from its header section (up to and including the empty line) and its body.
    pub fn new(header: Vec<u8>, body: Arc<dyn BodySource>) -> Self {
        Message { header, body }
    }

    /// A message held wholly in memory, split into header and body.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let split = header_section_len(bytes);
        Message::new(
            bytes[..split].to_vec(),
            Arc::new(MemoryBody::new(&bytes[split..])),
        )
    }

    /// The raw header section.
    pub fn header_section(&self) -> &[u8] {
        &self.header
    }

    /// The body.
    pub fn body(&self) -> &Arc<dyn BodySource> {
        &self.body
    }

    /// Size in octets of the whole message.
    pub fn size(&self) -> u64 {
        self.header.len() as u64 + self.body.len()
    }

    /// A reader over the whole message.
    pub fn reader(&self) -> io::Result<MessageReader> {
        Ok(io::Cursor::new(self.header.clone()).chain(self.body.open()?))
    }

    /// The whole message in memory. Meant for tests and small generated messages.
    pub fn to_bytes(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.size() as usize);
        self.reader()?.read_to_end(&mut out)?;
        Ok(out)
    }

    /// The unfolded value of the first field called `name` (case-insensitive), without the
    /// leading space. Encoded words are left as they are; see [`Message::subject`].
    pub fn header(&self, name: &str) -> Option<String> {
        self.fields()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value())
    }

    /// The unfolded values of every field called `name`, in order.
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.fields()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value())
            .collect()
    }

    /// The names of all fields, in order.
    pub fn header_names(&self) -> Vec<String> {
        self.fields().map(|f| f.name.to_string()).collect()
    }

    /// The `Subject:` with RFC 2047 encoded words decoded.
    pub fn subject(&self) -> Option<String> {
        let parsed = mail_parser::MessageParser::new().parse_headers(&self.header[..])?;
        parsed.subject().map(str::to_string)
    }

    /// Replaces the first field called `name` with `value` and removes the others; appends the
    /// field at the end of the header section when there is none.
    pub fn set_header(&mut self, name: &str, value: &str) {
        let line = field_line(name, value);
        let spans: Vec<(usize, usize)> = self
            .fields()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| (f.start, f.end))
            .collect();
        match spans.split_first() {
            None => self.add_header(name, value),
            Some((first, rest)) => {
                for (start, end) in rest.iter().rev() {
                    self.header.drain(start..end);
                }
                self.header.splice(first.0..first.1, line);
            }
        }
    }

    /// Appends a field at the end of the header section.
    pub fn add_header(&mut self, name: &str, value: &str) {
        let at = self.fields_end();
        let mut line = field_line(name, value);
        // A last field without a line end (a message that is only a header, cut short) must
        // not run into the new one.
        if at > 0 && self.header[at - 1] != b'\n' {
            line.splice(0..0, *b"\r\n");
        }
        self.header.splice(at..at, line);
    }

    /// Inserts a field at the top of the header section (trace fields such as `Received:`).
    pub fn prepend_header(&mut self, name: &str, value: &str) {
        self.header.splice(0..0, field_line(name, value));
    }

    /// Removes every field called `name`. Returns whether one was present.
    pub fn remove_header(&mut self, name: &str) -> bool {
        let spans: Vec<(usize, usize)> = self
            .fields()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| (f.start, f.end))
            .collect();
        for (start, end) in spans.iter().rev() {
            self.header.drain(start..end);
        }
        !spans.is_empty()
    }

    /// Offset where the fields end: before the separating empty line, or at the end.
    fn fields_end(&self) -> usize {
        self.fields().last().map_or(0, |f| f.end)
    }

    fn fields(&self) -> Fields<'_> {
        Fields {
            bytes: &self.header,
            pos: 0,
        }
    }
}

/// Length of the header section of `bytes`: up to and including the first empty line, or
/// everything when there is none; capped at [`MAX_HEADER_SECTION`] on a line boundary.
pub fn header_section_len(bytes: &[u8]) -> usize {
    let mut pos = 0;
    while pos < bytes.len() {
        let line_end = bytes[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| pos + i + 1);
        if line_end > MAX_HEADER_SECTION {
            return pos;
        }
        let line = &bytes[pos..line_end];
        pos = line_end;
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    pos
}

/// `Name: value\r\n`, with CR and LF in the value replaced by spaces so that a value can never
/// inject a field of its own.
fn field_line(name: &str, value: &str) -> Vec<u8> {
    let value: String = value
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    format!("{name}: {value}\r\n").into_bytes()
}

/// One header field with its byte span in the header section.
struct Field<'a> {
    name: &'a str,
    raw_value: &'a [u8],
    start: usize,
    end: usize,
}

impl Field<'_> {
    fn value(&self) -> String {
        let text = String::from_utf8_lossy(self.raw_value);
        let unfolded: String = text.chars().filter(|&c| c != '\r' && c != '\n').collect();
        unfolded.trim().to_string()
    }
}

/// Iterates the fields of a header section; lines that are not fields are skipped.
struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        loop {
            let start = self.pos;
            if start >= self.bytes.len() || self.bytes[start] == b'\r' || self.bytes[start] == b'\n'
            {
                return None;
            }
            // The field runs until a line that does not start with white space.
            let mut end = start;
            loop {
                end = self.bytes[end..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(self.bytes.len(), |i| end + i + 1);
                match self.bytes.get(end) {
                    Some(b' ') | Some(b'\t') => continue,
                    _ => break,
                }
            }
            self.pos = end;
            let line = &self.bytes[start..end];
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let Ok(name) = std::str::from_utf8(&line[..colon]) else {
                continue;
            };
            if name.is_empty() || name.contains(|c: char| c.is_whitespace()) {
                continue;
            }
            return Some(Field {
                name,
                raw_value: &line[colon + 1..],
                start,
                end,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"From: a@example.org\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nX-Long: one\r\n two\r\nX-Dup: 1\r\nX-Dup: 2\r\n\r\nbody\r\n.line\r\n";

    /// Found by the `mime_message` fuzz target: a header section whose last line has no line
    /// end (a message that is only a header) had the added field glued onto that line, where
    /// it was neither a field of its own nor removable.
    #[test]
    fn a_field_added_after_a_last_line_without_line_end_is_its_own_line() {
        for text in [
            &b"Subject: hi"[..],
            b"Subject: hi\r\nbroken line without colon",
        ] {
            let mut m = Message::from_bytes(text);
            m.add_header("X-A", "b");
            assert_eq!(m.header("X-A").as_deref(), Some("b"));
            assert_eq!(m.header("Subject").as_deref(), Some("hi"));
            let bytes = m.to_bytes().unwrap();
            let line = b"\r\nX-A: b\r\n";
            assert!(bytes.windows(line.len()).any(|w| w == line));
            assert!(m.remove_header("X-A"));
            assert_eq!(m.header("X-A"), None);
        }
    }

    #[test]
    fn splits_and_reads_headers() {
        let m = Message::from_bytes(SAMPLE);
        assert!(m.header_section().ends_with(b"\r\n\r\n"));
        assert_eq!(m.body().len(), 13);
        assert_eq!(m.size(), SAMPLE.len() as u64);
        assert_eq!(m.header("x-long").unwrap(), "one two");
        assert_eq!(m.headers("X-Dup"), vec!["1", "2"]);
        assert_eq!(m.subject().unwrap(), "café");
        assert_eq!(m.to_bytes().unwrap(), SAMPLE);
    }

    #[test]
    fn edits_headers() {
        let mut m = Message::from_bytes(SAMPLE);
        m.set_header("X-Dup", "3");
        assert_eq!(m.headers("X-Dup"), vec!["3"]);
        m.prepend_header("Return-Path", "<a@example.org>");
        m.add_header("X-New", "evil\r\nBcc: x");
        let text = String::from_utf8(m.to_bytes().unwrap()).unwrap();
        assert!(text.starts_with("Return-Path: <a@example.org>\r\nFrom:"));
        assert!(text.contains("X-Dup: 3\r\nX-New: evil  Bcc: x\r\n\r\nbody"));
        assert!(m.remove_header("x-long"));
        assert!(m.header("X-Long").is_none());
        assert!(!m.remove_header("X-Absent"));
    }

    #[test]
    fn handles_messages_without_body_or_header() {
        let m = Message::from_bytes(b"Subject: only\r\n");
        assert_eq!(m.header("subject").unwrap(), "only");
        assert!(m.body().is_empty());
        let mut m = Message::from_bytes(b"\r\njust body\r\n");
        assert_eq!(m.header_section(), b"\r\n");
        m.add_header("X-A", "1");
        assert_eq!(m.to_bytes().unwrap(), b"X-A: 1\r\n\r\njust body\r\n");
    }
}
