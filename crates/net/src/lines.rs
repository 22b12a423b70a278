//! Client input → bounded command lines, for every line-based protocol (SMTP, POP3, NNTP).
//!
//! [`LineReader`] splits input into lines of at most [`MAX_LINE`] octets (or another limit)
//! across any number of reads. A longer line (say 10 MB) is discarded up to its end and
//! reported once as [`LineEvent::TooLong`], so that the next command starts clean and memory
//! stays bounded.
//! Lines end in CRLF; a bare LF is accepted as the end of a command line for lenient clients.

/// The longest command line, CRLF included. RFC 5321 asks for at least 512 octets and RFC 2449
/// allows 255 for POP3; an AUTH PLAIN initial response with long names and passwords needs
/// more.
pub const MAX_LINE: usize = 4096;

/// What the [`LineReader`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineEvent {
    /// A complete line, without its CRLF (or bare LF).
    Line(Vec<u8>),
    /// A line longer than [`MAX_LINE`] ended; its content was discarded.
    TooLong,
}

/// Splits client input into bounded lines, across any number of reads.
#[derive(Debug)]
pub struct LineReader {
    /// The start of a line that has not ended yet; never longer than `limit - 1`.
    partial: Vec<u8>,
    /// The current line overflowed: drop its octets until its LF.
    discarding: bool,
    /// The longest line, its line end included.
    limit: usize,
}

impl Default for LineReader {
    /// A reader of lines of at most [`MAX_LINE`] octets.
    fn default() -> Self {
        LineReader::with_limit(MAX_LINE)
    }
}

impl LineReader {
    /// A reader of lines of at most `limit` octets, CRLF included (a protocol whose lines may
    /// be longer than [`MAX_LINE`], such as the RemoteManager's).
    pub fn with_limit(limit: usize) -> Self {
        LineReader {
            partial: Vec::new(),
            discarding: false,
            limit,
        }
    }

    /// Reads `input` up to and including the next LF. Returns how many octets were consumed and
    /// the event if a line ended; without an event every octet was consumed and more input is
    /// needed.
    pub fn read(&mut self, input: &[u8]) -> (usize, Option<LineEvent>) {
        match input.iter().position(|&b| b == b'\n') {
            None => {
                self.append(input);
                (input.len(), None)
            }
            Some(lf) => {
                self.append(&input[..lf]);
                let event = if std::mem::take(&mut self.discarding) {
                    LineEvent::TooLong
                } else {
                    let mut line = std::mem::take(&mut self.partial);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    LineEvent::Line(line)
                };
                (lf + 1, Some(event))
            }
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.discarding {
            return;
        }
        // The line plus its LF must fit in the limit.
        if self.partial.len() + bytes.len() >= self.limit {
            self.partial = Vec::new();
            self.discarding = true;
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bounded_and_resynchronised() {
        let mut r = LineReader::default();
        assert_eq!(r.read(b"NO"), (2, None));
        assert_eq!(
            r.read(b"OP\r\nSTAT\r\n"),
            (4, Some(LineEvent::Line(b"NOOP".to_vec())))
        );
        let long = vec![b'a'; 10 * 1024 * 1024];
        assert_eq!(r.read(&long), (long.len(), None));
        assert_eq!(r.read(b"aaa\r\nSTAT\r\n"), (5, Some(LineEvent::TooLong)));
        assert_eq!(
            r.read(b"STAT\n"),
            (5, Some(LineEvent::Line(b"STAT".to_vec())))
        );
        // Exactly at the limit with CRLF: accepted.
        let mut exact = vec![b'a'; MAX_LINE - 2];
        exact.extend_from_slice(b"\r\n");
        assert!(matches!(r.read(&exact), (n, Some(LineEvent::Line(_))) if n == MAX_LINE));
        let mut over = vec![b'a'; MAX_LINE - 1];
        over.extend_from_slice(b"\r\n");
        assert_eq!(r.read(&over).1, Some(LineEvent::TooLong));
    }

    #[test]
    fn another_limit() {
        let mut r = LineReader::with_limit(5);
        assert_eq!(
            r.read(b"abc\r\n"),
            (5, Some(LineEvent::Line(b"abc".to_vec())))
        );
        assert_eq!(r.read(b"abcd\r\n"), (6, Some(LineEvent::TooLong)));
        assert_eq!(
            r.read(b"abcd\n"),
            (5, Some(LineEvent::Line(b"abcd".to_vec())))
        );
    }
}
