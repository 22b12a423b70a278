//! The POP3 client's reading side without I/O: status lines (`+OK` / `-ERR`), the greeting's
//! APOP timestamp, and multi-line listings (CAPA, UIDL, LIST) read from bounded lines.
//!
//! [`Listing`] is fed bytes as they arrive and says when the terminating `.` line was seen, so a
//! reply split anywhere (even inside CRLF) parses the same. Message bodies (RETR) are not read
//! here: they go through `mailroom_net::dot::DotDecoder` straight to the spool.

use mailroom_net::lines::{LineEvent, LineReader};

/// The longest line the client reads (status lines and listing lines). RFC 2449 allows 512.
pub const MAX_LINE: usize = 4096;

/// A status line: `+OK text` or `-ERR text`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// `+OK` (else `-ERR`).
    pub ok: bool,
    /// The text after the indicator, without the separating space.
    pub text: String,
}

/// What is wrong with the server's reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line longer than [`MAX_LINE`].
    #[error("the server sent a line longer than {MAX_LINE} octets")]
    TooLong,
    /// A status line that starts with neither `+OK` nor `-ERR`.
    #[error("not a POP3 status line: {0:?}")]
    NotStatus(String),
    /// A listing line that is not `N token`.
    #[error("malformed listing line: {0:?}")]
    BadListing(String),
    /// Too many listing lines.
    #[error("the listing has more than {0} lines")]
    TooManyLines(usize),
}

/// Parses one status line (without its line end).
pub fn parse_status(line: &[u8]) -> Result<Status, ReplyError> {
    let text = String::from_utf8_lossy(line);
    let (ok, rest) = if let Some(rest) = strip_prefix_ci(&text, "+OK") {
        (true, rest)
    } else if let Some(rest) = strip_prefix_ci(&text, "-ERR") {
        (false, rest)
    } else {
        return Err(ReplyError::NotStatus(shorten(&text)));
    };
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return Err(ReplyError::NotStatus(shorten(&text)));
    }
    Ok(Status {
        ok,
        text: rest.trim_start_matches(' ').to_string(),
    })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    // Compared as bytes: the server's line may have a multi-byte character where the prefix
    // ends, and slicing the string there would panic. A match is ASCII, so the rest starts on
    // a character boundary.
    let n = prefix.len();
    (s.len() >= n && s.as_bytes()[..n].eq_ignore_ascii_case(prefix.as_bytes())).then(|| &s[n..])
}

/// At most 200 characters of `text`, for error messages.
fn shorten(text: &str) -> String {
    text.chars().take(200).collect()
}

/// The APOP timestamp of a greeting (`<1896.697170952@dbc.mtview.ca.us>`), if there is one.
pub fn apop_timestamp(greeting: &str) -> Option<&str> {
    let start = greeting.find('<')?;
    let end = start + greeting[start..].find('>')?;
    let stamp = &greeting[start..=end];
    (stamp.contains('@') && stamp.len() > 2 && !stamp[1..stamp.len() - 1].contains('<'))
        .then_some(stamp)
}

/// Reads the lines of a multi-line reply up to its `.` line, undoing dot-stuffing.
#[derive(Debug)]
pub struct Listing {
    reader: LineReader,
    lines: Vec<String>,
    max_lines: usize,
    /// Lines past `max_lines` are counted, not kept (else they are an error).
    capped: bool,
    skipped: usize,
}

/// The longest line of a mailbox listing (UIDL: a number and a UID of at most 70 octets).
pub const MAX_LISTING_LINE: usize = 128;

impl Listing {
    /// A reader that accepts at most `max_lines` lines.
    pub fn new(max_lines: usize) -> Self {
        Listing {
            reader: LineReader::with_limit(MAX_LINE),
            lines: Vec::new(),
            max_lines,
            capped: false,
            skipped: 0,
        }
    }

    /// A reader of a mailbox listing (UIDL, LIST): lines of at most [`MAX_LISTING_LINE`]
    /// octets; the first `max_lines` are kept and the rest only counted ([`Listing::skipped`]),
    /// so a mailbox of any size is read in bounded memory.
    pub fn capped(max_lines: usize) -> Self {
        Listing {
            reader: LineReader::with_limit(MAX_LISTING_LINE),
            capped: true,
            ..Listing::new(max_lines)
        }
    }

    /// How many lines a capped listing read past its cap.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Feeds `input`; returns how much was consumed and, once the `.` line was read, the lines.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, Option<Vec<String>>), ReplyError> {
        let mut used = 0;
        while used < input.len() {
            let (n, event) = self.reader.read(&input[used..]);
            used += n;
            match event {
                None => {}
                Some(LineEvent::TooLong) => return Err(ReplyError::TooLong),
                Some(LineEvent::Line(line)) => {
                    if line == b"." {
                        return Ok((used, Some(std::mem::take(&mut self.lines))));
                    }
                    if self.lines.len() >= self.max_lines {
                        if self.capped {
                            self.skipped += 1;
                            continue;
                        }
                        return Err(ReplyError::TooManyLines(self.max_lines));
                    }
                    let line = line.strip_prefix(b".").unwrap_or(&line);
                    self.lines.push(String::from_utf8_lossy(line).into_owned());
                }
            }
        }
        Ok((used, None))
    }
}

/// Parses `N token` listing lines (UIDL: the unique id; LIST: the size).
pub fn numbered(lines: &[String]) -> Result<Vec<(u32, String)>, ReplyError> {
    lines
        .iter()
        .map(|line| {
            let mut parts = line.split_ascii_whitespace();
            let n = parts
                .next()
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|n| *n > 0);
            match (n, parts.next()) {
                (Some(n), Some(token)) => Ok((n, token.to_string())),
                _ => Err(ReplyError::BadListing(shorten(line))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status(b"+OK ready <1.2@x>").unwrap(),
            Status {
                ok: true,
                text: "ready <1.2@x>".into()
            }
        );
        assert_eq!(
            parse_status(b"-ERR no").unwrap(),
            Status {
                ok: false,
                text: "no".into()
            }
        );
        assert_eq!(
            parse_status(b"+ok").unwrap(),
            Status {
                ok: true,
                text: String::new()
            }
        );
        assert!(parse_status(b"+OKAY").is_err());
        assert!(parse_status(b"220 smtp").is_err());
        assert!(parse_status(b"").is_err());
        // 8-bit text where the prefix would end: refused, not a panic.
        assert!(parse_status("ab\u{e9} hello".as_bytes()).is_err());
        assert!(parse_status("-ER\u{e9}".as_bytes()).is_err());
        assert!(parse_status(b"+O\xc3\xa9").is_err());
        assert_eq!(
            parse_status("+OK h\u{e9}".as_bytes()).unwrap().text,
            "h\u{e9}"
        );
    }

    #[test]
    fn apop_timestamps() {
        assert_eq!(
            apop_timestamp("POP3 server ready <1896.697170952@dbc.mtview.ca.us>"),
            Some("<1896.697170952@dbc.mtview.ca.us>")
        );
        assert_eq!(apop_timestamp("Dovecot ready."), None);
        assert_eq!(apop_timestamp("ready <nothing>"), None);
    }

    /// The same listing, fed whole and split at every octet, with CRLF and bare LF.
    #[test]
    fn listings_split_anywhere() {
        for crlf in ["\r\n", "\n"] {
            let wire = ["1 abc", "2 d.ef", "..3 stuffed", "."].join(crlf) + crlf + "+OK next";
            let wire = wire.as_bytes();
            for split in 0..=wire.len() {
                let mut l = Listing::new(10);
                let (a, done) = l.feed(&wire[..split]).unwrap();
                let (lines, used) = match done {
                    Some(lines) => (lines, a),
                    None => {
                        let (b, done) = l.feed(&wire[split..]).unwrap();
                        (done.expect("ends"), a + b)
                    }
                };
                assert_eq!(lines, ["1 abc", "2 d.ef", ".3 stuffed"], "split {split}");
                assert_eq!(&wire[used..], b"+OK next", "split {split}");
            }
        }
    }

    #[test]
    fn listing_limits() {
        let mut l = Listing::new(2);
        assert_eq!(
            l.feed(b"1 a\r\n2 b\r\n3 c\r\n.\r\n"),
            Err(ReplyError::TooManyLines(2))
        );
        let mut l = Listing::capped(2);
        let (_, done) = l.feed(b"1 a\r\n2 b\r\n3 c\r\n4 d\r\n.\r\n").unwrap();
        assert_eq!(done.unwrap(), ["1 a", "2 b"]);
        assert_eq!(l.skipped(), 2);
        let mut l = Listing::capped(2);
        let long = vec![b'x'; MAX_LISTING_LINE + 10];
        assert_eq!(l.feed(&long).map(|(_, d)| d), Ok(None));
        assert_eq!(l.feed(b"\r\n"), Err(ReplyError::TooLong));
        let mut l = Listing::new(2);
        let long = vec![b'x'; MAX_LINE + 10];
        assert_eq!(l.feed(&long).map(|(_, d)| d), Ok(None));
        assert_eq!(l.feed(b"\r\n"), Err(ReplyError::TooLong));
    }

    #[test]
    fn numbered_lines() {
        let lines = vec!["1 120".to_string(), "2  99 extra".to_string()];
        assert_eq!(
            numbered(&lines).unwrap(),
            [(1, "120".to_string()), (2, "99".to_string())]
        );
        assert!(numbered(&["x 1".to_string()]).is_err());
        assert!(numbered(&["0 1".to_string()]).is_err());
        assert!(numbered(&["1".to_string()]).is_err());
    }
}
