//! What the server checks and adds to an article received by POST or IHAVE, with no I/O.
//!
//! The article arrives unstuffed (the dot codec has run). It is refused when it has a NUL, a
//! bare CR or LF, a header section that is not UTF-8, a header line that is no field, a
//! missing or empty From, Newsgroups or Subject, a newsgroup name that is not valid, a
//! malformed Message-ID (or, for IHAVE, one other than announced), or a control message other
//! than `cancel`. The server removes any `Xref:` (the repository writes its own) and adds
//! Message-ID, Date, Path and Lines when absent; `Path:` gets this server's name in front.

use mailroom_store::news::valid_group_name;
use mailroom_store::NewArticle;

/// An article ready for the repository, and the control action it asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The article to store (for a cancel: what would be stored; it is not).
    pub article: NewArticle,
    /// `Control: cancel <id>`: the Message-ID to cancel.
    pub cancel: Option<String>,
}

/// Why an article is refused; the text goes into the 441/437 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(pub String);

fn refused<T>(why: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(why.into()))
}

/// What the server adds.
#[derive(Debug)]
pub struct Injection<'a> {
    /// This server's name in `Path:`.
    pub path_host: &'a str,
    /// The Message-ID to use when the article has none (generated for POST, announced by IHAVE).
    pub message_id: String,
    /// IHAVE's Message-ID, which the article's own must equal.
    pub announced: Option<&'a str>,
    /// The `Date:` to add when absent (RFC 5322 form).
    pub date: String,
}

/// Checks `raw` (CRLF lines, unstuffed) and returns it prepared for storing.
pub fn prepare(raw: &[u8], injection: &Injection<'_>) -> Result<Prepared, Refused> {
    if raw.contains(&0) {
        return refused("NUL octet in article");
    }
    for (i, &b) in raw.iter().enumerate() {
        let bare_cr = b == b'\r' && raw.get(i + 1) != Some(&b'\n');
        let bare_lf = b == b'\n' && (i == 0 || raw[i - 1] != b'\r');
        if bare_cr || bare_lf {
            return refused("bare CR or LF in article");
        }
    }
    let (head, body) = match raw.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => (&raw[..at + 2], &raw[at + 4..]),
        None if raw.starts_with(b"\r\n") => (&raw[..0], &raw[2..]),
        None => (raw, &raw[raw.len()..]),
    };
    let head =
        std::str::from_utf8(head).map_err(|_| Refused("header section is not UTF-8".into()))?;
    // Fields as (name, full text of its lines).
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in head.split_terminator("\r\n") {
        if line.starts_with([' ', '\t']) {
            match fields.last_mut() {
                Some((_, text)) => {
                    text.push_str("\r\n");
                    text.push_str(line);
                }
                None => return refused("header section starts with a continuation line"),
            }
            continue;
        }
        let Some((name, _)) = line.split_once(':') else {
            return refused(format!("not a header field: {}", shorten(line)));
        };
        if name.is_empty() || !name.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return refused(format!("bad header field name: {}", shorten(name)));
        }
        fields.push((name.to_string(), line.to_string()));
    }
    let value = |name: &str| -> Option<String> {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(n, text)| text[n.len() + 1..].replace("\r\n", "").trim().to_string())
    };
    for required in ["From", "Newsgroups", "Subject"] {
        if value(required).is_none_or(|v| v.is_empty()) {
            return refused(format!("missing {required} header"));
        }
    }
    let mut groups: Vec<String> = Vec::new();
    for g in value("Newsgroups").unwrap_or_default().split(',') {
        let g = g.trim();
        if !valid_group_name(g) {
            return refused(format!("bad newsgroup name {:?}", shorten(g)));
        }
        if !groups.iter().any(|x| x == g) {
            groups.push(g.to_string());
        }
    }
    let message_id = match value("Message-ID") {
        Some(id) => crate::codec::message_id(&id)
            .map_err(|_| Refused(format!("bad Message-ID {}", shorten(&id))))?,
        None => injection.message_id.clone(),
    };
    if let Some(announced) = injection.announced {
        if message_id != announced {
            return refused("Message-ID differs from the one announced by IHAVE");
        }
    }
    let cancel = match value("Control") {
        None => None,
        Some(control) => {
            let mut words = control.split_ascii_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(verb), Some(target), None) if verb.eq_ignore_ascii_case("cancel") => Some(
                    crate::codec::message_id(target)
                        .map_err(|_| Refused("bad cancel target".into()))?,
                ),
                _ => return refused("only cancel control messages are accepted"),
            }
        }
    };

    let mut out = Vec::with_capacity(raw.len() + 256);
    for (name, text) in &fields {
        if name.eq_ignore_ascii_case("Xref") || name.eq_ignore_ascii_case("Path") {
            continue;
        }
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let path = match value("Path") {
        Some(p) if !p.is_empty() => format!("{}!{p}", injection.path_host),
        _ => format!("{}!not-for-mail", injection.path_host),
    };
    let mut add = |name: &str, v: &str| {
        out.extend_from_slice(format!("{name}: {v}\r\n").as_bytes());
    };
    add("Path", &path);
    if value("Message-ID").is_none() {
        add("Message-ID", &message_id);
    }
    if value("Date").is_none() {
        add("Date", &injection.date);
    }
    if value("Lines").is_none() {
        let lines = body.split(|&b| b == b'\n').count() - usize::from(body.ends_with(b"\n"));
        add("Lines", &lines.to_string());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Ok(Prepared {
        article: NewArticle {
            message_id,
            groups,
            octets: out,
            poster: None,
        },
        cancel,
    })
}

fn shorten(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn injection() -> Injection<'static> {
        Injection {
            path_host: "news.test",
            message_id: "<gen@news.test>".into(),
            announced: None,
            date: "Tue, 01 Jul 2025 12:00:00 +0000".into(),
        }
    }

    #[test]
    fn adds_what_is_missing() {
        let raw = b"From: a@b\r\nNewsgroups: x.y, x.z,x.y\r\nSubject: hi\r\n there\r\nXref: forged x.y:99\r\n\r\nbody\r\n.dot\r\n";
        let p = prepare(raw, &injection()).unwrap();
        assert_eq!(p.article.message_id, "<gen@news.test>");
        assert_eq!(p.article.groups, ["x.y", "x.z"]);
        let text = String::from_utf8(p.article.octets).unwrap();
        assert_eq!(
            text,
            "From: a@b\r\nNewsgroups: x.y, x.z,x.y\r\nSubject: hi\r\n there\r\nPath: news.test!not-for-mail\r\n\
             Message-ID: <gen@news.test>\r\nDate: Tue, 01 Jul 2025 12:00:00 +0000\r\nLines: 2\r\n\r\nbody\r\n.dot\r\n"
        );
        assert_eq!(p.cancel, None);
    }

    #[test]
    fn keeps_what_is_there_and_extends_the_path() {
        let raw = b"From: a@b\r\nNewsgroups: x.y\r\nSubject: s\r\nMessage-ID: <m@x>\r\nDate: d\r\nLines: 9\r\nPath: far!away\r\n\r\nb\r\n";
        let mut inj = injection();
        inj.announced = Some("<m@x>");
        let p = prepare(raw, &inj).unwrap();
        assert_eq!(p.article.message_id, "<m@x>");
        let text = String::from_utf8(p.article.octets).unwrap();
        assert!(text.contains("Path: news.test!far!away\r\n"));
        assert!(!text.contains("<gen@"));
        assert_eq!(text.matches("Lines:").count(), 1);
        inj.announced = Some("<other@x>");
        assert!(prepare(raw, &inj).is_err());
    }

    #[test]
    fn refuses_garbage() {
        let ok = b"From: a@b\r\nNewsgroups: x.y\r\nSubject: s\r\n\r\nbody\r\n";
        assert!(prepare(ok, &injection()).is_ok());
        for bad in [
            &b"Newsgroups: x.y\r\nSubject: s\r\n\r\nb\r\n"[..],
            b"From: a@b\r\nSubject: s\r\n\r\nb\r\n",
            b"From: a@b\r\nNewsgroups: x.y\r\nSubject:\r\n\r\nb\r\n",
            b"From: a@b\r\nNewsgroups: X..y\r\nSubject: s\r\n\r\nb\r\n",
            b"From: a@b\r\nNewsgroups: x.y\r\nSubject: s\r\ngarbage line\r\n\r\nb\r\n",
            b" cont\r\nFrom: a@b\r\nNewsgroups: x.y\r\nSubject: s\r\n\r\nb\r\n",
            b"From: a@b\r\nNewsgroups: x.y\r\nSubject: s\xff\r\n\r\nb\r\n",
            b"From: a@b\r\nNewsgroups: x.y\r\nSubject: s\r\n\r\nb\0\r\n",
            b"From: a@b\r\nNewsgroups: x.y\r\nSubject: s\r\n\r\nbare\nlf\r\n",
            b"From: a@b\r\nNewsgroups: x.y\r\nSubject: s\r\nMessage-ID: nobrackets\r\n\r\nb\r\n",
            b"From: a@b\r\nNewsgroups: x.y\r\nSubject: s\r\nControl: newgroup x.z\r\n\r\nb\r\n",
            b"",
        ] {
            assert!(
                prepare(bad, &injection()).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // 8-bit UTF-8 headers are fine.
        assert!(prepare(
            "From: ä@b\r\nNewsgroups: x.y\r\nSubject: ü\r\n\r\nb\r\n".as_bytes(),
            &injection()
        )
        .is_ok());
    }

    #[test]
    fn cancel() {
        let raw = b"From: Me <A@B>\r\nNewsgroups: x.y\r\nSubject: cmsg cancel <m@x>\r\nControl: cancel <m@x>\r\n\r\n";
        let p = prepare(raw, &injection()).unwrap();
        assert_eq!(p.cancel.as_deref(), Some("<m@x>"));
    }
}
