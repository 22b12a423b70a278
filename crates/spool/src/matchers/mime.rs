//! A streaming walk over the MIME structure of a message, for the attachment matchers.
//!
//! The body stays where it is stored and is read line by line: only the current line (at most
//! [`MAX_LINE`] octets; a longer one is taken in pieces), the stack of open boundaries and
//! one part's header section (at most [`MAX_PART_HEADER`]) are in memory, so a message of any
//! size is walked in bounded memory. Each part's header section is read with mail-parser
//! (RFC 2231 and RFC 2047 file names, quoted parameters).

use std::io::{self, BufRead, BufReader, Read, Write};

use mail_parser::{MessageParser, MimeHeaders};
use mailroom_mailet::Message;

/// The longest line piece read at once.
const MAX_LINE: u64 = 8 * 1024;
/// The most of a part's header section kept; the rest of it is skipped.
const MAX_PART_HEADER: usize = 64 * 1024;
/// The deepest nesting of multiparts followed; deeper boundaries are body text.
const MAX_DEPTH: usize = 64;

/// A part as the walk meets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// 0 for the message itself, 1 for the parts of its top multipart, and so on.
    pub depth: usize,
    /// The content type, lower-case (`text/plain` when the part does not say).
    pub content_type: String,
    /// The file name (Content-Disposition `filename`, else Content-Type `name`), decoded.
    pub file_name: Option<String>,
    /// The Content-Transfer-Encoding, lower-case (`7bit` when the part does not say).
    pub encoding: String,
    /// Whether the part is, or is inside, a `multipart/alternative`.
    pub in_alternative: bool,
}

impl Part {
    fn parse(header: &[u8], depth: usize, in_alternative: bool) -> (Part, Option<Vec<u8>>) {
        // mail-parser wants the empty line that ends a header section.
        let with_end;
        let bytes = if header.ends_with(b"\n\r\n") || header.ends_with(b"\n\n") {
            header
        } else {
            with_end = [header, b"\r\n\r\n"].concat();
            &with_end
        };
        let parsed = MessageParser::new().parse_headers(bytes);
        let (content_type, boundary, file_name, encoding) = match &parsed {
            Some(m) => {
                let ct = m.content_type();
                let content_type = ct.map_or_else(
                    || "text/plain".to_string(),
                    |ct| {
                        format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
                            .to_ascii_lowercase()
                    },
                );
                let boundary = ct
                    .filter(|ct| ct.ctype().eq_ignore_ascii_case("multipart"))
                    .and_then(|ct| ct.attribute("boundary"))
                    .filter(|b| !b.is_empty())
                    .map(|b| [&b"--"[..], b.as_bytes()].concat());
                let encoding = m
                    .content_transfer_encoding()
                    .unwrap_or("7bit")
                    .trim()
                    .to_ascii_lowercase();
                (
                    content_type,
                    boundary,
                    m.attachment_name().map(str::to_string),
                    encoding,
                )
            }
            None => ("text/plain".to_string(), None, None, "7bit".to_string()),
        };
        let in_alternative = in_alternative || content_type == "multipart/alternative";
        let part = Part {
            depth,
            content_type,
            file_name,
            encoding,
            in_alternative,
        };
        (part, boundary)
    }
}

/// An open multipart: its delimiter (`--boundary`) and whether it is (inside) an alternative.
struct Open {
    delimiter: Vec<u8>,
    in_alternative: bool,
}

/// What a line is to the walk.
enum Line {
    /// A line of the current part's body (or of a preamble or epilogue).
    Text,
    /// `--boundary` of the open multipart at this index: a part of it starts.
    Delimiter(usize),
    /// `--boundary--` of the open multipart at this index: it ends.
    Close(usize),
    /// The end of the message.
    End,
}

/// Walks the parts of a message in order. [`Walker::next_part`] gives each part's header;
/// [`Walker::copy_body`] may then read that part's body (otherwise it is skipped).
pub struct Walker {
    input: BufReader<Box<dyn Read + Send>>,
    open: Vec<Open>,
    line: Vec<u8>,
    /// Whether the next piece read starts a line (a long line comes in pieces).
    at_line_start: bool,
    /// The top-level header, not yet given out.
    first: Option<Part>,
    /// A delimiter line read at the end of a body, not yet acted on.
    pending: Option<Line>,
    /// Whether the last part given out may have a body still to read.
    in_body: bool,
}

impl Walker {
    /// A walk over `message`, reading its body from storage.
    pub fn new(message: &Message) -> io::Result<Walker> {
        let (top, boundary) = Part::parse(message.header_section(), 0, false);
        let mut open = Vec::new();
        if let Some(delimiter) = boundary {
            open.push(Open {
                delimiter,
                in_alternative: top.in_alternative,
            });
        }
        Ok(Walker {
            input: BufReader::with_capacity(16 * 1024, message.body().open()?),
            open,
            line: Vec::new(),
            at_line_start: true,
            first: Some(top),
            pending: None,
            in_body: false,
        })
    }

    /// The next part's header, or `None` at the end of the message.
    pub fn next_part(&mut self) -> io::Result<Option<Part>> {
        if let Some(top) = self.first.take() {
            // The message's own body is its only part unless it is a multipart.
            self.in_body = self.open.is_empty();
            return Ok(Some(top));
        }
        loop {
            let line = match self.pending.take() {
                Some(line) => line,
                None => self.read_line()?,
            };
            match line {
                Line::End => return Ok(None),
                Line::Text => continue,
                Line::Close(index) => {
                    self.open.truncate(index);
                    if self.open.is_empty() {
                        // The epilogue of the top multipart: nothing more to find.
                        return Ok(None);
                    }
                }
                Line::Delimiter(index) => {
                    self.open.truncate(index + 1);
                    let header = self.read_header()?;
                    let depth = self.open.len();
                    let in_alternative = self.open[index].in_alternative;
                    let (part, boundary) = Part::parse(&header, depth, in_alternative);
                    match boundary {
                        Some(delimiter) if self.open.len() < MAX_DEPTH => {
                            self.open.push(Open {
                                delimiter,
                                in_alternative: part.in_alternative,
                            });
                            self.in_body = false;
                        }
                        _ => self.in_body = true,
                    }
                    return Ok(Some(part));
                }
            }
        }
    }

    /// Writes the current part's body, decoded from base64 when `base64`, to `out` (the
    /// line end before the next delimiter belongs to the delimiter and is left out).
    pub fn copy_body(&mut self, base64: bool, out: &mut dyn Write) -> io::Result<()> {
        // A part cut short by the next delimiter (held in `pending`) has no body.
        if !self.in_body || self.pending.is_some() {
            self.in_body = false;
            return Ok(());
        }
        self.in_body = false;
        let mut decoder = Base64::default();
        let mut held_line_end: Vec<u8> = Vec::new();
        loop {
            let line = self.read_line()?;
            if !matches!(line, Line::Text) {
                self.pending = Some(line);
                break;
            }
            if base64 {
                decoder.feed(&self.line, out)?;
                continue;
            }
            out.write_all(&held_line_end)?;
            held_line_end.clear();
            let text_end = self
                .line
                .iter()
                .rposition(|&b| b != b'\r' && b != b'\n')
                .map_or(0, |i| i + 1);
            out.write_all(&self.line[..text_end])?;
            held_line_end.extend_from_slice(&self.line[text_end..]);
        }
        if base64 {
            decoder.finish(out)?;
        }
        Ok(())
    }

    /// Reads one line (or piece of a long one) into `self.line` and says what it is.
    fn read_line(&mut self) -> io::Result<Line> {
        self.line.clear();
        let n = (&mut self.input)
            .take(MAX_LINE)
            .read_until(b'\n', &mut self.line)?;
        if n == 0 {
            return Ok(Line::End);
        }
        let at_start = self.at_line_start;
        self.at_line_start = self.line.ends_with(b"\n");
        if !at_start || !self.line.starts_with(b"--") {
            return Ok(Line::Text);
        }
        let text = self.line.trim_ascii_end();
        for (index, open) in self.open.iter().enumerate().rev() {
            if let Some(rest) = text.strip_prefix(open.delimiter.as_slice()) {
                if rest.is_empty() {
                    return Ok(Line::Delimiter(index));
                }
                if rest == b"--" {
                    return Ok(Line::Close(index));
                }
            }
        }
        Ok(Line::Text)
    }

    /// A part's header section, up to the empty line (bounded; the rest is skipped).
    fn read_header(&mut self) -> io::Result<Vec<u8>> {
        let mut header = Vec::new();
        loop {
            match self.read_line()? {
                Line::Text => {}
                // A part cut short by the next delimiter: no body.
                other => {
                    self.pending = Some(other);
                    return Ok(header);
                }
            }
            if self.line == b"\r\n" || self.line == b"\n" {
                return Ok(header);
            }
            if header.len() + self.line.len() <= MAX_PART_HEADER {
                header.extend_from_slice(&self.line);
            }
        }
    }
}

/// A base64 decoder fed line by line: characters outside the alphabet are skipped, as RFC
/// 2045 says a decoder should, and output goes out in groups.
#[derive(Default)]
struct Base64 {
    quad: Vec<u8>,
    done: bool,
}

impl Base64 {
    fn feed(&mut self, line: &[u8], out: &mut dyn Write) -> io::Result<()> {
        let mut decoded = Vec::with_capacity(line.len());
        for &c in line {
            if self.done {
                break;
            }
            let value = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                b'=' => {
                    self.flush(&mut decoded);
                    self.done = true;
                    break;
                }
                _ => continue,
            };
            self.quad.push(value);
            if self.quad.len() == 4 {
                self.flush(&mut decoded);
            }
        }
        out.write_all(&decoded)
    }

    fn flush(&mut self, decoded: &mut Vec<u8>) {
        let q = &self.quad;
        if q.len() >= 2 {
            decoded.push(q[0] << 2 | q[1] >> 4);
        }
        if q.len() >= 3 {
            decoded.push(q[1] << 4 | q[2] >> 2);
        }
        if q.len() == 4 {
            decoded.push(q[2] << 6 | q[3]);
        }
        self.quad.clear();
    }

    fn finish(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let mut decoded = Vec::new();
        self.flush(&mut decoded);
        out.write_all(&decoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(text: &[u8]) -> Vec<(usize, String, Option<String>, bool)> {
        let message = Message::from_bytes(text);
        let mut walker = Walker::new(&message).unwrap();
        let mut out = Vec::new();
        while let Some(p) = walker.next_part().unwrap() {
            out.push((p.depth, p.content_type, p.file_name, p.in_alternative));
        }
        out
    }

    const NESTED: &[u8] = b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
preamble\r\n--outer\r\n\
Content-Type: multipart/alternative; boundary=alt\r\n\r\n\
--alt\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
--alt\r\nContent-Type: text/html; name=\"in-alt.html\"\r\n\r\n<p>hello</p>\r\n--alt--\r\n\
--outer\r\n\
Content-Type: application/octet-stream\r\n\
Content-Disposition: attachment;\r\n filename*=UTF-8''r%C3%A9sum%C3%A9.PDF\r\n\
Content-Transfer-Encoding: base64\r\n\r\n\
aGVsbG8gd29y\r\nbGQ=\r\n\
--outer--\r\nepilogue\r\n--outer\r\nnot a part\r\n";

    #[test]
    fn walks_nested_multiparts() {
        assert_eq!(
            parts(NESTED),
            vec![
                (0, "multipart/mixed".into(), None, false),
                (1, "multipart/alternative".into(), None, true),
                (2, "text/plain".into(), None, true),
                (2, "text/html".into(), Some("in-alt.html".into()), true),
                (
                    1,
                    "application/octet-stream".into(),
                    Some("résumé.PDF".into()),
                    false
                ),
            ]
        );
    }

    #[test]
    fn decodes_a_base64_body() {
        let message = Message::from_bytes(NESTED);
        let mut walker = Walker::new(&message).unwrap();
        let mut body = Vec::new();
        while let Some(p) = walker.next_part().unwrap() {
            if p.file_name.as_deref() == Some("résumé.PDF") {
                walker.copy_body(p.encoding == "base64", &mut body).unwrap();
            }
        }
        assert_eq!(body, b"hello world");
    }

    #[test]
    fn a_part_cut_short_has_no_body() {
        let text = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
Content-Type: application/zip; name=a.zip\r\n--b\r\nContent-Type: text/plain; name=next.txt\r\n\r\nnext body\r\n--b--\r\n";
        let message = Message::from_bytes(text);
        let mut walker = Walker::new(&message).unwrap();
        let mut names = Vec::new();
        while let Some(p) = walker.next_part().unwrap() {
            let mut body = Vec::new();
            walker.copy_body(false, &mut body).unwrap();
            names.push((p.file_name, String::from_utf8(body).unwrap()));
        }
        assert_eq!(
            names,
            vec![
                (None, String::new()),
                (Some("a.zip".into()), String::new()),
                (Some("next.txt".into()), "next body".into()),
            ]
        );
    }

    #[test]
    fn a_plain_message_is_one_part() {
        let text = b"Content-Type: application/pdf; name=a.pdf\r\n\r\n%PDF\r\n--not-a-boundary\r\n";
        assert_eq!(
            parts(text),
            vec![(0, "application/pdf".into(), Some("a.pdf".into()), false)]
        );
        assert_eq!(
            parts(b"Subject: x\r\n\r\nbody"),
            vec![(0, "text/plain".into(), None, false)]
        );
    }

    #[test]
    fn long_lines_and_truncated_messages_are_walked() {
        let mut text = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n".to_vec();
        // A line far longer than MAX_LINE that contains the delimiter after a piece boundary.
        text.extend(std::iter::repeat_n(b'x', MAX_LINE as usize - 1));
        text.extend_from_slice(b"--b\r\n--b\r\nContent-Type: text/x-last; name=last\r\n");
        let walked = parts(&text);
        assert_eq!(walked.len(), 3, "{walked:?}");
        assert_eq!(walked[2].2.as_deref(), Some("last"));
    }
}
