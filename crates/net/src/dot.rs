//! The dot codec of the line-based mail protocols (SMTP DATA, POP3 RETR/TOP, NNTP ARTICLE and
//! POST): a message travels as lines ending in CRLF, a line that begins with `.` gets a second
//! one, and a line holding only `.` ends the message.
//!
//! * [`DotEncoder`] turns stored message octets into that wire form, chunk by chunk: every
//!   line end becomes CRLF, leading dots are doubled, [`DotEncoder::top`] stops after the header
//!   section and a number of body lines (POP3 TOP), and [`DotEncoder::finish`] writes the final
//!   `.` line.
//! * [`DotDecoder`] reads the wire form back: it removes the stuffed dots and finds the end,
//!   which is *only* `CRLF.CRLF` (the start of the data counts as following a CRLF). A CR not
//!   followed by LF and an LF not preceded by CR never end a line and are reported as bare, so
//!   that `\n.\n`, `\r.\r`, `\n.\r\n` and `\r\n.\n` never end the data; what a protocol does
//!   about bare line ends (SMTP refuses the message, against SMTP smuggling) is its own rule.
//!
//! Both are resumable at any octet and do no I/O.

/// Where the [`DotDecoder`] is within the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum DecodeState {
    /// Just after a CRLF (or at the very start of the data).
    #[default]
    LineStart,
    /// Inside a line.
    Text,
    /// After a CR that may start a CRLF.
    Cr,
    /// After a `.` at the start of a line.
    Dot,
    /// After `CRLF.CR`.
    DotCr,
}

/// What one [`DotDecoder::decode`] call found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Octets of the input consumed (up to and including the final `CRLF.CRLF` if `ended`).
    pub consumed: usize,
    /// The end of data was reached.
    pub ended: bool,
    /// A bare CR or bare LF was seen in the consumed part.
    pub bare: bool,
}

/// Reads dot-stuffed data: removes the stuffing and finds the end of data, which is only
/// `CRLF.CRLF`. A CR not followed by LF and an LF not preceded by CR are reported as bare and
/// never end a line.
#[derive(Clone, Debug, Default)]
pub struct DotDecoder {
    state: DecodeState,
}

impl DotDecoder {
    /// A decoder at the start of the data.
    pub fn new() -> DotDecoder {
        DotDecoder::default()
    }

    /// Decodes `input`, appending the unstuffed message octets to `body` when given (a
    /// discarding caller passes `None`). Stops right after the end of data.
    pub fn decode(&mut self, input: &[u8], mut body: Option<&mut Vec<u8>>) -> Decoded {
        fn emit(body: &mut Option<&mut Vec<u8>>, bytes: &[u8]) {
            if let Some(body) = body.as_deref_mut() {
                body.extend_from_slice(bytes);
            }
        }
        use DecodeState::*;
        let mut bare = false;
        let mut i = 0;
        while i < input.len() {
            if self.state == Text {
                // Fast path: copy up to the next CR or LF in one go.
                let rest = &input[i..];
                let n = rest
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .unwrap_or(rest.len());
                emit(&mut body, &rest[..n]);
                i += n;
                if i == input.len() {
                    break;
                }
            }
            let b = input[i];
            i += 1;
            self.state = match (self.state, b) {
                (Text | LineStart, b'\r') => {
                    emit(&mut body, b"\r");
                    Cr
                }
                (Text | LineStart, b'\n') => {
                    bare = true;
                    emit(&mut body, b"\n");
                    Text
                }
                (LineStart, b'.') => Dot,
                (Text | LineStart, b) => {
                    emit(&mut body, &[b]);
                    Text
                }
                (Cr, b'\n') => {
                    emit(&mut body, b"\n");
                    LineStart
                }
                (Cr, b'\r') => {
                    bare = true;
                    emit(&mut body, b"\r");
                    Cr
                }
                (Cr, b) => {
                    bare = true;
                    emit(&mut body, &[b]);
                    Text
                }
                (Dot, b'\r') => DotCr,
                (Dot, b'\n') => {
                    // `CRLF.LF`: not an end of data.
                    bare = true;
                    emit(&mut body, b".\n");
                    Text
                }
                (Dot, b) => {
                    // A stuffed dot: drop it, keep the rest of the line.
                    emit(&mut body, &[b]);
                    Text
                }
                (DotCr, b'\n') => {
                    self.state = LineStart;
                    return Decoded {
                        consumed: i,
                        ended: true,
                        bare,
                    };
                }
                (DotCr, b) => {
                    // `CRLF.CR` then something else: that CR was bare.
                    bare = true;
                    emit(&mut body, &[b'\r', b]);
                    if b == b'\r' {
                        Cr
                    } else {
                        Text
                    }
                }
            };
        }
        Decoded {
            consumed: input.len(),
            ended: false,
            bare,
        }
    }
}

/// Encodes stored message octets as dot-stuffed CRLF lines, chunk by chunk, so that a message
/// of any size passes through in bounded memory.
#[derive(Debug)]
pub struct DotEncoder {
    /// The next octet starts a line.
    line_start: bool,
    /// Octets of the current line so far (before its LF).
    line_len: u64,
    /// The last octet seen was CR.
    after_cr: bool,
    /// Still in the header section (only tracked by [`DotEncoder::top`]).
    in_header: bool,
    /// Body lines still to send; `None`: everything.
    lines_left: Option<u64>,
    /// All that must be sent has been sent; the rest of the message is skipped.
    done: bool,
}

impl Default for DotEncoder {
    fn default() -> Self {
        DotEncoder::new(None)
    }
}

impl DotEncoder {
    /// An encoder for the whole message (`body_lines: None`), or for its header section and
    /// that many body lines (as [`DotEncoder::top`]).
    pub fn new(body_lines: Option<u64>) -> Self {
        DotEncoder {
            line_start: true,
            line_len: 0,
            after_cr: false,
            in_header: body_lines.is_some(),
            lines_left: body_lines,
            done: false,
        }
    }

    /// An encoder for the whole message.
    pub fn whole() -> Self {
        DotEncoder::new(None)
    }

    /// An encoder for the header section, the empty line after it and `body_lines` lines of
    /// the body (POP3 TOP).
    pub fn top(body_lines: u64) -> Self {
        DotEncoder::new(Some(body_lines))
    }

    /// Whether everything to send has been sent (TOP): the caller may stop reading.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Appends the wire form of the next `input` octets of the message to `out`.
    pub fn encode(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 32);
        while !input.is_empty() && !self.done {
            if self.line_start {
                if !self.in_header && self.lines_left == Some(0) {
                    self.done = true;
                    return;
                }
                if input[0] == b'.' {
                    out.push(b'.');
                }
                self.line_start = false;
                self.line_len = 0;
            }
            match input.iter().position(|&b| b == b'\n') {
                None => {
                    out.extend_from_slice(input);
                    self.line_len += input.len() as u64;
                    self.after_cr = input.last() == Some(&b'\r');
                    return;
                }
                Some(lf) => {
                    let text = &input[..lf];
                    out.extend_from_slice(text);
                    self.line_len += lf as u64;
                    let cr = if lf > 0 {
                        text[lf - 1] == b'\r'
                    } else {
                        self.after_cr
                    };
                    if !cr {
                        out.push(b'\r');
                    }
                    out.push(b'\n');
                    let empty = self.line_len == u64::from(cr);
                    self.end_of_line(empty);
                    input = &input[lf + 1..];
                }
            }
        }
    }

    fn end_of_line(&mut self, empty: bool) {
        self.line_start = true;
        self.after_cr = false;
        if self.in_header {
            self.in_header = !empty;
        } else if let Some(left) = &mut self.lines_left {
            *left = left.saturating_sub(1);
        }
    }

    /// Ends the message: a CRLF if it did not end with one, then the `.` line.
    pub fn finish(self, out: &mut Vec<u8>) {
        if !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` in one go: the body, where the data ended (if it did) and `bare`.
    fn decode_all(input: &[u8]) -> (Vec<u8>, Option<usize>, bool) {
        let mut d = DotDecoder::new();
        let mut body = Vec::new();
        let r = d.decode(input, Some(&mut body));
        (body, r.ended.then_some(r.consumed), r.bare)
    }

    /// Decodes `input` split into two chunks at every boundary (and octet by octet), and
    /// checks that each way gives what decoding it whole gives.
    fn decode_split(input: &[u8]) -> (Vec<u8>, Option<usize>, bool) {
        let whole = decode_all(input);
        let mut chunkings: Vec<Vec<&[u8]>> = (0..=input.len())
            .map(|at| vec![&input[..at], &input[at..]])
            .collect();
        chunkings.push(input.chunks(1).collect());
        for chunks in chunkings {
            let mut d = DotDecoder::new();
            let mut body = Vec::new();
            let (mut offset, mut end, mut bare) = (0, None, false);
            for chunk in &chunks {
                if end.is_some() {
                    break;
                }
                let r = d.decode(chunk, Some(&mut body));
                bare |= r.bare;
                if r.ended {
                    end = Some(offset + r.consumed);
                }
                offset += r.consumed;
            }
            let lens: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
            assert_eq!((&body, end, bare), (&whole.0, whole.1, whole.2), "{lens:?}");
        }
        whole
    }

    #[test]
    fn decoder_table() {
        // (wire input, body, where the data ends, bare line end seen)
        type Case = (&'static [u8], &'static [u8], Option<usize>, bool);
        let cases: &[Case] = &[
            (b".\r\n", b"", Some(3), false),
            (b"a\r\n.\r\n", b"a\r\n", Some(6), false),
            (b"a\r\n..b\r\n.\r\nNOOP", b"a\r\n.b\r\n", Some(11), false),
            (b"..\r\n.\r\n", b".\r\n", Some(7), false),
            (b"...\r\n.\r\n", b"..\r\n", Some(8), false),
            (b"x.\r\n.y\r\n.\r\n", b"x.\r\ny\r\n", Some(11), false),
            (b"\r\n\r\n.\r\n", b"\r\n\r\n", Some(7), false),
            (b"a\r\n", b"a\r\n", None, false),
            (b"a\r\n.", b"a\r\n", None, false),
            (b"a\r\n.\r", b"a\r\n", None, false),
            // LF-only data never ends, and every LF is reported.
            (b"a\n.\nb", b"a\n.\nb", None, true),
            (b"a\n..b\n", b"a\n..b\n", None, true),
            // Smuggling tricks: none ends the data.
            (b"a\r.\rb", b"a\r.\rb", None, true),
            (b"a\n.\r\nb", b"a\n.\r\nb", None, true),
            (b"a\r\n.\nb", b"a\r\n.\nb", None, true),
            (b"a\r\n.\rb", b"a\r\n\rb", None, true),
            (b"a\r\n.\r\rb", b"a\r\n\r\rb", None, true),
        ];
        for &(input, body, end, bare) in cases {
            let got = decode_split(input);
            assert_eq!(
                (got.0.as_slice(), got.1, got.2),
                (body, end, bare),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn decoder_without_body_only_finds_the_end() {
        let mut d = DotDecoder::new();
        let r = d.decode(b"big\r\n..x\r\n.\r\nQUIT\r\n", None);
        assert_eq!(
            r,
            Decoded {
                consumed: 13,
                ended: true,
                bare: false
            }
        );
        // After the end the decoder is at a line start again.
        assert!(d.decode(b".\r\n", None).ended);
    }

    /// Encodes `message` split at every octet boundary (and octet by octet) and checks each
    /// way gives `expected`.
    fn encodes(message: &[u8], lines: Option<u64>, expected: &[u8]) {
        let mut chunkings: Vec<Vec<&[u8]>> = (0..=message.len())
            .map(|at| vec![&message[..at], &message[at..]])
            .collect();
        chunkings.push(message.chunks(1).collect());
        for chunks in chunkings {
            let mut encoder = DotEncoder::new(lines);
            let mut out = Vec::new();
            for chunk in &chunks {
                encoder.encode(chunk, &mut out);
            }
            encoder.finish(&mut out);
            let lens: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(expected),
                "{lens:?}"
            );
        }
    }

    #[test]
    fn encoder_table() {
        // (stored message, wire form of the whole message)
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b".", b"..\r\n.\r\n"),
            (
                b"A: b\r\n\r\n.one\r\n..two\r\n.\r\nx.\r\n",
                b"A: b\r\n\r\n..one\r\n...two\r\n..\r\nx.\r\n.\r\n",
            ),
            (
                b"A: b\n\n.lf\nbare\rcr\nlast",
                b"A: b\r\n\r\n..lf\r\nbare\rcr\r\nlast\r\n.\r\n",
            ),
            (b"\n.\n.\n", b"\r\n..\r\n..\r\n.\r\n"),
            (b"x\r\n.", b"x\r\n..\r\n.\r\n"),
        ];
        for &(message, wire) in cases {
            encodes(message, None, wire);
            // What the encoder writes, the decoder reads back, with CRLF line ends (a bare
            // CR stays bare and is reported by the decoder).
            let (body, end, bare) = decode_all(wire);
            assert_eq!(end, Some(wire.len()));
            let text = String::from_utf8_lossy(message).replace("\r\n", "\n");
            assert_eq!(bare, text.contains('\r'));
            let mut expected = text.replace('\n', "\r\n");
            if !expected.is_empty() && !expected.ends_with('\n') {
                expected.push_str("\r\n");
            }
            assert_eq!(String::from_utf8_lossy(&body), expected);
        }
    }

    #[test]
    fn top_sends_the_header_and_n_body_lines() {
        let message = b"A: b\r\nC: d\r\n\r\n1\r\n.2\r\n3\r\n";
        encodes(message, Some(0), b"A: b\r\nC: d\r\n\r\n.\r\n");
        encodes(message, Some(2), b"A: b\r\nC: d\r\n\r\n1\r\n..2\r\n.\r\n");
        encodes(
            message,
            Some(9),
            b"A: b\r\nC: d\r\n\r\n1\r\n..2\r\n3\r\n.\r\n",
        );
        encodes(b"A: b\n\nx\ny\n", Some(1), b"A: b\r\n\r\nx\r\n.\r\n");
        // No body at all.
        encodes(b"A: b\r\n", Some(1), b"A: b\r\n.\r\n");
        let mut encoder = DotEncoder::top(0);
        encoder.encode(message, &mut Vec::new());
        assert!(encoder.is_done());
        assert!(!DotEncoder::whole().is_done());
    }
}
