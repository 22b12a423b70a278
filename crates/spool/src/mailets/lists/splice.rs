//! Where a footer goes in a MIME body, found in one streaming pass (memory bounded by the
//! longest header section of a part), and a body with octets inserted at those offsets, read
//! as one stream.
//!
//! As James's `AbstractAddFooter`: a `text/plain` part gets the footer at its end, a
//! `text/html` part before its last `</body>` (at its end without one), a `multipart/mixed` or
//! `multipart/related` in its first part, a `multipart/alternative` in every part. Parts in
//! base64 (or another encoding than 7bit, 8bit, binary, quoted-printable) are left alone.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;

use mailroom_mailet::BodySource;

/// The longest line looked at whole; longer ones are read in pieces (never a delimiter).
const MAX_LINE: usize = 8 * 1024;
/// The longest part header section kept; a longer one makes the part skipped.
const MAX_PART_HEADER: usize = 64 * 1024;

/// What a leaf part is, for the footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Leaf {
    Plain { qp: bool },
    Html { qp: bool },
}

/// What a part's headers say: its media type (lower case), boundary and encoding.
pub(super) struct PartType {
    pub(super) media: String,
    pub(super) boundary: Option<String>,
    pub(super) encoding: String,
}

impl PartType {
    /// From the unfolded `Content-Type` and `Content-Transfer-Encoding` values.
    pub(super) fn new(content_type: Option<&str>, encoding: Option<&str>) -> PartType {
        let content_type = content_type.unwrap_or("text/plain");
        let mut pieces = content_type.split(';');
        let media = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
        let boundary = pieces.find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"').to_string())
        });
        PartType {
            media: if media.is_empty() {
                "text/plain".into()
            } else {
                media
            },
            boundary,
            encoding: encoding.unwrap_or("7bit").trim().to_ascii_lowercase(),
        }
    }

    fn leaf(&self) -> Option<Leaf> {
        let qp = match self.encoding.as_str() {
            "7bit" | "8bit" | "binary" => false,
            "quoted-printable" => true,
            _ => return None,
        };
        match self.media.as_str() {
            "text/plain" => Some(Leaf::Plain { qp }),
            "text/html" => Some(Leaf::Html { qp }),
            _ => None,
        }
    }
}

/// An insertion point: where, and into which kind of part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Insert {
    pub(super) at: u64,
    pub(super) leaf: Leaf,
}

/// A part being read.
enum Part {
    Headers(Vec<u8>),
    Leaf { leaf: Leaf, body_tag: Option<u64> },
    Skip,
}

/// A multipart being read.
struct Frame {
    boundary: Vec<u8>,
    /// Every part wanted (alternative), or the first only.
    every: bool,
    wanted: bool,
    index: usize,
    part: Option<Part>,
}

/// The insertion points of a body of type `top`, by reading it once.
pub(super) fn plan(top: &PartType, body: &dyn BodySource) -> io::Result<Vec<Insert>> {
    if let Some(leaf) = top.leaf() {
        return Ok(match leaf {
            Leaf::Plain { .. } => vec![Insert {
                at: body.len(),
                leaf,
            }],
            Leaf::Html { .. } => {
                let tag = last_body_tag(body.open()?)?;
                vec![Insert {
                    at: tag.unwrap_or(body.len()),
                    leaf,
                }]
            }
        });
    }
    let Some(frame) = frame_of(top, true) else {
        return Ok(Vec::new());
    };
    let mut stack = vec![frame];
    let mut inserts = Vec::new();
    let mut reader = BufReader::new(body.open()?);
    let (mut offset, mut line_start, mut prev_end) = (0u64, true, 0u64);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        let complete = line.ends_with(b"\n");
        let this_start = offset;
        offset += n as u64;
        if line_start {
            let text = trim_end(&line);
            let hit = stack.iter().rposition(|f| is_delimiter(text, &f.boundary));
            if let Some(k) = hit {
                // The CRLF before a delimiter belongs to it: a part ends where it starts.
                let end = if this_start == 0 { 0 } else { prev_end };
                stack.truncate(k + 1);
                let frame = stack.last_mut().expect("k is in the stack");
                if let Some(Part::Leaf { leaf, body_tag }) = frame.part.take() {
                    let at = match leaf {
                        Leaf::Html { .. } => body_tag.unwrap_or(end),
                        Leaf::Plain { .. } => end,
                    };
                    inserts.push(Insert { at, leaf });
                }
                if text.ends_with(b"--") && text.len() == frame.boundary.len() + 4 {
                    frame.part = None;
                } else {
                    frame.index += 1;
                    frame.part = Some(Part::Headers(Vec::new()));
                }
            } else {
                let frame = stack.last_mut().expect("the stack is never empty here");
                let wanted = frame.wanted && (frame.every || frame.index == 1);
                match &mut frame.part {
                    Some(Part::Headers(headers)) if text.is_empty() => {
                        let part = part_type(headers);
                        match (part.leaf(), frame_of(&part, wanted)) {
                            (Some(leaf), _) if wanted => {
                                frame.part = Some(Part::Leaf {
                                    leaf,
                                    body_tag: None,
                                })
                            }
                            (_, Some(inner)) => {
                                frame.part = Some(Part::Skip);
                                stack.push(inner);
                            }
                            _ => frame.part = Some(Part::Skip),
                        }
                    }
                    Some(Part::Headers(headers)) => {
                        if headers.len() + line.len() > MAX_PART_HEADER {
                            frame.part = Some(Part::Skip);
                        } else {
                            headers.extend_from_slice(&line);
                        }
                    }
                    Some(Part::Leaf {
                        body_tag,
                        leaf: Leaf::Html { .. },
                    }) => {
                        if let Some(at) = find_body_tag(&line) {
                            *body_tag = Some(this_start + at as u64);
                        }
                    }
                    _ => {}
                }
            }
        } else if let Some(Part::Leaf { body_tag, leaf }) =
            stack.last_mut().and_then(|f| f.part.as_mut())
        {
            if matches!(leaf, Leaf::Html { .. }) {
                if let Some(at) = find_body_tag(&line) {
                    *body_tag = Some(this_start + at as u64);
                }
            }
        }
        if complete {
            let terminator = if line.ends_with(b"\r\n") { 2 } else { 1 };
            prev_end = offset - terminator;
        }
        line_start = complete;
    }
    Ok(inserts)
}

fn frame_of(part: &PartType, wanted: bool) -> Option<Frame> {
    let every = match part.media.as_str() {
        "multipart/alternative" => true,
        m if m.starts_with("multipart/") => false,
        _ => return None,
    };
    Some(Frame {
        boundary: part.boundary.clone()?.into_bytes(),
        every,
        wanted,
        index: 0,
        part: None,
    })
}

/// The type of a part from its raw header section.
fn part_type(headers: &[u8]) -> PartType {
    let message = mailroom_mailet::Message::from_bytes(headers);
    PartType::new(
        message.header("Content-Type").as_deref(),
        message.header("Content-Transfer-Encoding").as_deref(),
    )
}

fn trim_end(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|b| !b" \t\r\n".contains(b))
        .map_or(0, |i| i + 1);
    &line[..end]
}

fn is_delimiter(line: &[u8], boundary: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"--") else {
        return false;
    };
    matches!(rest.strip_prefix(boundary), Some(b"") | Some(b"--"))
}

/// Where `</body` starts in `line` (the last one), case-insensitively.
fn find_body_tag(line: &[u8]) -> Option<usize> {
    const TAG: &[u8] = b"</body";
    line.windows(TAG.len())
        .rposition(|w| w.eq_ignore_ascii_case(TAG))
}

/// The offset of the last `</body` of a whole HTML body.
fn last_body_tag(reader: Box<dyn Read + Send>) -> io::Result<Option<u64>> {
    let mut reader = BufReader::new(reader);
    let (mut offset, mut found, mut line) = (0u64, None, Vec::new());
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(found);
        }
        if let Some(at) = find_body_tag(&line) {
            found = Some(offset + at as u64);
        }
        offset += n as u64;
    }
}

/// A body with octets inserted at offsets (sorted), read as one stream.
#[derive(Debug)]
pub(super) struct Spliced {
    pub(super) body: Arc<dyn BodySource>,
    pub(super) inserts: Arc<[(u64, Arc<[u8]>)]>,
}

impl BodySource for Spliced {
    fn len(&self) -> u64 {
        self.body.len()
            + self
                .inserts
                .iter()
                .map(|(_, b)| b.len() as u64)
                .sum::<u64>()
    }

    fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(SplicedReader {
            inner: self.body.open()?,
            inserts: self.inserts.clone(),
            pos: 0,
            next: 0,
            pending: None,
        }))
    }
}

struct SplicedReader {
    inner: Box<dyn Read + Send>,
    inserts: Arc<[(u64, Arc<[u8]>)]>,
    /// Octets of the original read so far.
    pos: u64,
    /// The next insertion not yet started.
    next: usize,
    /// An insertion being read, and how far.
    pending: Option<(Arc<[u8]>, usize)>,
}

impl Read for SplicedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((bytes, done)) = &mut self.pending {
                if *done < bytes.len() {
                    let n = (bytes.len() - *done).min(buf.len());
                    buf[..n].copy_from_slice(&bytes[*done..*done + n]);
                    *done += n;
                    return Ok(n);
                }
                self.pending = None;
            }
            match self.inserts.get(self.next) {
                Some((at, bytes)) if *at <= self.pos => {
                    self.pending = Some((bytes.clone(), 0));
                    self.next += 1;
                }
                Some((at, _)) => {
                    let room = ((*at - self.pos) as usize).min(buf.len());
                    let n = self.inner.read(&mut buf[..room])?;
                    if n == 0 {
                        // The body is shorter than planned: the rest goes at its end.
                        self.pos = *at;
                        continue;
                    }
                    self.pos += n as u64;
                    return Ok(n);
                }
                None => {
                    let n = self.inner.read(buf)?;
                    self.pos += n as u64;
                    return Ok(n);
                }
            }
        }
    }
}
