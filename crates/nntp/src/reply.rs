//! NNTP replies: a three-digit status line (RFC 3977 §3.2), and the multi-line data blocks that
//! follow some of them, dot-stuffed and ended by `.`. This module knows nothing of sessions.

/// Appends `code text` as one status line; CR and LF in the text (which may quote the client)
/// become spaces, so that the framing holds.
pub fn status(out: &mut Vec<u8>, code: u16, text: &str) {
    out.extend_from_slice(code.to_string().as_bytes());
    if !text.is_empty() {
        out.push(b' ');
        out.extend(text.bytes().map(|b| match b {
            b'\r' | b'\n' | 0 => b' ',
            b => b,
        }));
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one line of a multi-line block: a leading `.` is doubled, CR and LF become spaces.
pub fn data_line(out: &mut Vec<u8>, line: &str) {
    if line.starts_with('.') {
        out.push(b'.');
    }
    out.extend(line.bytes().map(|b| match b {
        b'\r' | b'\n' | 0 => b' ',
        b => b,
    }));
    out.extend_from_slice(b"\r\n");
}

/// Appends the `.` line that ends a multi-line block.
pub fn end(out: &mut Vec<u8>) {
    out.extend_from_slice(b".\r\n");
}

/// Appends stored octets (an article, its head or its body) as dot-stuffed CRLF lines and the
/// final `.` line; a last line without a line end gets one.
pub fn octets(out: &mut Vec<u8>, octets: &[u8]) {
    let mut encoder = mailroom_net::dot::DotEncoder::whole();
    encoder.encode(octets, out);
    encoder.finish(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms() {
        let mut out = Vec::new();
        status(&mut out, 200, "ready\r\nQUIT");
        data_line(&mut out, ".hidden");
        octets(&mut out, b"a\n.b\r\nc");
        assert_eq!(
            out,
            b"200 ready  QUIT\r\n..hidden\r\na\r\n..b\r\nc\r\n.\r\n"
        );
    }
}
