//! Reading a body's MIME structure in one streamed pass: where each part's header and
//! content are (offsets into the body), with each part's header kept (bounded), so that
//! AddFooter can change a text part without reading the message into memory.

use std::io::{self, BufRead, BufReader, Read};

use mail_parser::MimeHeaders;
use mailroom_mailet::BodySource;

/// The longest part header kept; a part with a longer one is left alone.
const MAX_PART_HEADER: usize = 64 * 1024;
/// The most of a line kept to recognise a boundary (RFC 2046 boundaries are at most 70
/// characters) or a header line.
const MAX_LINE: usize = MAX_PART_HEADER;
/// The deepest multipart nesting followed.
const MAX_DEPTH: usize = 32;

/// One MIME part of the body. Offsets are into the body; the top-level part's header is the
/// message's header section (not in the body: `header_start == content_start == 0`).
#[derive(Clone, Debug, Default)]
pub(super) struct PartInfo {
    /// The header section of the part, up to and including its empty line; `None` when it
    /// was too long to keep.
    pub(super) header: Option<Vec<u8>>,
    pub(super) header_start: u64,
    pub(super) content_start: u64,
    pub(super) content_end: u64,
    /// `type/subtype`, lower case (`text/plain` when the header has none).
    pub(super) content_type: String,
    pub(super) boundary: Option<String>,
    pub(super) charset: Option<String>,
    /// `Content-Transfer-Encoding`, lower case (`7bit` when absent).
    pub(super) encoding: String,
    pub(super) children: Vec<usize>,
}

impl PartInfo {
    fn describe(&mut self, header: &[u8]) {
        let parsed = mail_parser::MessageParser::new().parse_headers(header);
        let ct = parsed.as_ref().and_then(|m| m.content_type());
        self.content_type = match ct {
            Some(ct) => {
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default()).to_ascii_lowercase()
            }
            None => "text/plain".to_string(),
        };
        self.boundary = ct
            .and_then(|ct| ct.attribute("boundary"))
            .map(str::to_string)
            .filter(|b| !b.is_empty());
        self.charset = ct
            .and_then(|ct| ct.attribute("charset"))
            .map(|c| c.trim().to_ascii_lowercase());
        let message = mailroom_mailet::Message::from_bytes(header);
        self.encoding = message
            .header("Content-Transfer-Encoding")
            .map(|e| e.trim().to_ascii_lowercase())
            .unwrap_or_else(|| "7bit".to_string());
    }
}

/// The parts of a message with header section `header` and body `body`: index 0 is the
/// top-level part.
pub(super) fn structure(header: &[u8], body: &dyn BodySource) -> io::Result<Vec<PartInfo>> {
    let len = body.len();
    let mut top = PartInfo {
        header: Some(header.to_vec()),
        content_end: len,
        ..PartInfo::default()
    };
    top.describe(header);
    let mut parts = vec![top];
    // Open multiparts: (part index, boundary, the child being read).
    let mut stack: Vec<(usize, String, Option<usize>)> = Vec::new();
    if let Some(b) = parts[0].boundary.clone() {
        stack.push((0, b, None));
    }
    // The part whose header is being read, and the header so far.
    let mut in_header: Option<(usize, Vec<u8>, bool)> = None;
    let mut reader = BufReader::with_capacity(64 * 1024, body.open()?);
    let mut pos = 0u64;
    let mut prev_eol = 0u64;
    let mut line = Vec::new();
    loop {
        let (line_len, eol) = read_line(&mut reader, &mut line)?;
        if line_len == 0 {
            break;
        }
        let start = pos;
        pos += line_len;
        if let Some((idx, header, overflow)) = in_header.as_mut() {
            let full = line.len() as u64 == line_len;
            if !*overflow && full && header.len() + line.len() <= MAX_PART_HEADER {
                header.extend_from_slice(&line);
            } else {
                *overflow = true;
            }
            let blank = line == b"\r\n" || line == b"\n";
            if blank {
                let idx = *idx;
                let (header, overflow) = (std::mem::take(header), *overflow);
                in_header = None;
                let part = &mut parts[idx];
                part.content_start = pos;
                part.content_end = pos;
                if !overflow {
                    part.describe(&header);
                    part.header = Some(header);
                } else {
                    part.content_type = "application/octet-stream".into();
                }
                if let Some(b) = parts[idx].boundary.clone() {
                    if stack.len() < MAX_DEPTH {
                        stack.push((idx, b, None));
                    }
                }
            }
            prev_eol = eol;
            continue;
        }
        if let Some((level, closing)) = boundary_level(&line, &stack) {
            // The line break before a boundary belongs to the boundary.
            let end = start.saturating_sub(prev_eol);
            // Parts open deeper than this level end here too (a malformed message).
            while stack.len() > level + 1 {
                let (idx, _, child) = stack.pop().expect("deeper level");
                if let Some(c) = child {
                    parts[c].content_end = end.max(parts[c].content_start);
                }
                parts[idx].content_end = end.max(parts[idx].content_start);
            }
            let (parent, _, child) = &mut stack[level];
            if let Some(c) = child.take() {
                parts[c].content_end = end.max(parts[c].content_start);
            }
            if closing {
                stack.pop();
            } else {
                let idx = parts.len();
                parts.push(PartInfo {
                    header_start: pos,
                    content_start: pos,
                    content_end: pos,
                    content_type: "text/plain".into(),
                    encoding: "7bit".into(),
                    ..PartInfo::default()
                });
                let parent = *parent;
                parts[parent].children.push(idx);
                stack[level].2 = Some(idx);
                in_header = Some((idx, Vec::new(), false));
            }
        }
        prev_eol = eol;
    }
    // Whatever is still open ends with the body.
    for (idx, _, child) in stack {
        if let Some(c) = child {
            parts[c].content_end = pos;
        }
        if idx != 0 {
            parts[idx].content_end = pos;
        }
    }
    if let Some((idx, _, _)) = in_header {
        // A part header never ended: the part has no content to change.
        parts[idx].header = None;
        parts[idx].content_type = "application/octet-stream".into();
        parts[idx].content_start = pos;
        parts[idx].content_end = pos;
    }
    Ok(parts)
}

/// Reads one line (through `\n`, or to the end) keeping at most [`MAX_LINE`] octets of it in
/// `line`; returns its full length and the length of its line end (0, 1 or 2).
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<(u64, u64)> {
    line.clear();
    let mut total = 0u64;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok((total, 0));
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let n = chunk.len();
        total += n as u64;
        reader.consume(n);
        if done {
            let eol = if line.ends_with(b"\r\n") { 2 } else { 1 };
            return Ok((total, eol));
        }
    }
}

/// Which open multipart `line` is a boundary of (the innermost that matches) and whether it
/// is the closing one.
fn boundary_level(line: &[u8], stack: &[(usize, String, Option<usize>)]) -> Option<(usize, bool)> {
    let rest = line.strip_prefix(b"--")?;
    let rest = trim_end(rest);
    for (level, (_, boundary, _)) in stack.iter().enumerate().rev() {
        let b = boundary.as_bytes();
        if let Some(after) = rest.strip_prefix(b) {
            match after {
                b"" => return Some((level, false)),
                b"--" => return Some((level, true)),
                _ => {}
            }
        }
    }
    None
}

fn trim_end(mut bytes: &[u8]) -> &[u8] {
    while let Some((last, rest)) = bytes.split_last() {
        if matches!(last, b'\r' | b'\n' | b' ' | b'\t') {
            bytes = rest;
        } else {
            break;
        }
    }
    bytes
}

/// What AddFooter needs to know of a text part's content, from one streamed read of it.
#[derive(Debug, Default)]
pub(super) struct ContentInfo {
    /// The last (up to) three octets of the content as stored.
    pub(super) tail: Vec<u8>,
    /// Offset of the last `</body>`, else of the last `</BODY>` (James looks for these two).
    pub(super) body_close: Option<u64>,
    /// Base64: the offsets of the last four base64 characters and the characters, and how
    /// many there are in all.
    pub(super) last_quantum: Vec<(u64, u8)>,
    pub(super) base64_chars: u64,
}

/// Reads `start..end` of the body once.
pub(super) fn content_info(
    body: &dyn BodySource,
    start: u64,
    end: u64,
    base64: bool,
) -> io::Result<ContentInfo> {
    let mut reader = body.open()?;
    io::copy(&mut (&mut reader).take(start), &mut io::sink())?;
    let mut reader = reader.take(end - start);
    let mut info = ContentInfo::default();
    let mut lower = None;
    let mut upper = None;
    let mut buf = vec![0u8; 64 * 1024];
    // The end of the previous chunk, so that a tag split between reads is found.
    let mut carry: Vec<u8> = Vec::new();
    let mut offset = start;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        let mut window = std::mem::take(&mut carry);
        let window_start = offset - window.len() as u64;
        window.extend_from_slice(chunk);
        if let Some(i) = rfind(&window, b"</body>") {
            lower = Some(window_start + i as u64);
        }
        if let Some(i) = rfind(&window, b"</BODY>") {
            upper = Some(window_start + i as u64);
        }
        let keep = window.len().min(6);
        carry = window[window.len() - keep..].to_vec();
        if base64 {
            for (i, &b) in chunk.iter().enumerate() {
                if b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=' {
                    info.base64_chars += 1;
                    if info.last_quantum.len() == 4 {
                        info.last_quantum.remove(0);
                    }
                    info.last_quantum.push((offset + i as u64, b));
                }
            }
        }
        let mut tail = std::mem::take(&mut info.tail);
        tail.extend_from_slice(&chunk[chunk.len().saturating_sub(3)..]);
        info.tail = tail[tail.len().saturating_sub(3)..].to_vec();
        offset += n as u64;
    }
    info.body_close = lower.or(upper);
    Ok(info)
}

/// Where `needle` last occurs in `haystack`.
pub(super) fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}
