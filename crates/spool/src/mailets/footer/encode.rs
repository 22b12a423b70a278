//! Turning the footer text into a part's octets: its charset, then its transfer encoding.

use base64::Engine;

/// The footer's octets in `charset` (`None`: the part says none, which is US-ASCII), or
/// `None` when that charset cannot carry them. Returns also whether the part must be
/// relabelled UTF-8 (a US-ASCII part given non-ASCII text: ASCII is a subset of UTF-8, so
/// the part's existing octets stay valid).
pub(super) fn charset_bytes(text: &str, charset: Option<&str>) -> Option<(Vec<u8>, bool)> {
    let charset = charset.unwrap_or("us-ascii").trim_matches('"');
    match charset {
        "utf-8" | "utf8" => Some((text.as_bytes().to_vec(), false)),
        "us-ascii" | "ascii" | "ansi_x3.4-1968" => {
            Some((text.as_bytes().to_vec(), !text.is_ascii()))
        }
        "iso-8859-1" | "iso8859-1" | "latin1" | "l1" | "iso_8859-1" => text
            .chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect::<Option<Vec<u8>>>()
            .map(|b| (b, false)),
        // Windows-1252 agrees with ISO-8859-1 but in 0x80..0x9F, where it has the euro sign
        // and typographic marks; those are mapped, the C1 controls are not written.
        "windows-1252" | "cp1252" => text
            .chars()
            .map(|c| match u32::from(c) {
                n @ (0..=0x7f | 0xa0..=0xff) => Some(n as u8),
                _ => CP1252_HIGH
                    .iter()
                    .position(|&h| h == c)
                    .map(|i| 0x80 + i as u8),
            })
            .collect::<Option<Vec<u8>>>()
            .map(|b| (b, false)),
        // Charsets that are not ASCII-compatible.
        c if c.starts_with("utf-16") || c.starts_with("utf-32") || c.starts_with("ucs") => None,
        // Any other charset this build cannot convert to: only ASCII text is safe (those
        // charsets agree with ASCII on it).
        _ => text.is_ascii().then(|| (text.as_bytes().to_vec(), false)),
    }
}

/// Windows-1252 octets 0x80..=0x9F (`\0`: unassigned).
const CP1252_HIGH: [char; 32] = [
    '€', '\0', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\0', 'Ž', '\0', '\0', '‘',
    '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\0', 'ž', 'Ÿ',
];

/// Quoted-printable (RFC 2045 §6.7): `\n` in the input is a hard line break, lines are wrapped
/// with soft breaks before 76 characters.
pub(super) fn quoted_printable(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 3 / 2);
    let text = bytes.split(|&b| b == b'\n');
    let lines: Vec<&[u8]> = text.collect();
    for (n, line) in lines.iter().enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut width = 0;
        for (i, &b) in line.iter().enumerate() {
            let last = i + 1 == line.len();
            let literal =
                (b == b' ' || b == b'\t') && !last || (33..=126).contains(&b) && b != b'=';
            let piece: Vec<u8> = if literal {
                vec![b]
            } else {
                format!("={b:02X}").into_bytes()
            };
            if width + piece.len() > 75 {
                out.extend_from_slice(b"=\r\n");
                width = 0;
            }
            width += piece.len();
            out.extend_from_slice(&piece);
        }
        if n + 1 < lines.len() {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// Base64 in lines of 76 characters, each ended with CRLF.
pub(super) fn base64_lines(bytes: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / 38 + 2);
    for chunk in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Decodes base64, ignoring everything outside its alphabet (line breaks).
pub(super) fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    let clean: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/' || *b == b'=')
        .collect();
    base64::engine::general_purpose::STANDARD.decode(clean).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charsets() {
        assert_eq!(
            charset_bytes("é", Some("utf-8")),
            Some(("é".as_bytes().to_vec(), false))
        );
        assert_eq!(
            charset_bytes("é", Some("iso-8859-1")),
            Some((vec![0xe9], false))
        );
        assert_eq!(
            charset_bytes("é", None),
            Some(("é".as_bytes().to_vec(), true))
        );
        assert_eq!(charset_bytes("a", None), Some((b"a".to_vec(), false)));
        assert_eq!(charset_bytes("€", Some("iso-8859-1")), None);
        assert_eq!(charset_bytes("é", Some("koi8-r")), None);
        assert_eq!(
            charset_bytes("a", Some("koi8-r")),
            Some((b"a".to_vec(), false))
        );
        assert_eq!(charset_bytes("a", Some("utf-16")), None);
        assert_eq!(
            charset_bytes("é €—", Some("windows-1252")),
            Some((vec![0xe9, b' ', 0x80, 0x97], false))
        );
        assert_eq!(charset_bytes("\u{81}", Some("windows-1252")), None);
    }

    #[test]
    fn quoted_printable_round_trips_through_mail_parser() {
        let text = format!("caf\u{e9} = ok \n{}\ttrailing \n", "x".repeat(100));
        let qp = quoted_printable(text.as_bytes());
        assert!(qp.split(|&b| b == b'\n').all(|l| l.len() <= 77));
        let msg = [
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n".as_slice(),
            &qp,
        ]
        .concat();
        let parsed = mail_parser::MessageParser::new().parse(&msg).unwrap();
        assert_eq!(parsed.body_text(0).unwrap(), text.replace('\n', "\r\n"));
    }

    #[test]
    fn base64_round_trips() {
        let data: Vec<u8> = (0..=255).collect();
        let lines = base64_lines(&data);
        assert!(lines.split(|&b| b == b'\n').all(|l| l.len() <= 78));
        assert_eq!(base64_decode(&lines).unwrap(), data);
    }
}
