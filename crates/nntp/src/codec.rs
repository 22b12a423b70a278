//! NNTP command lines, with no I/O: one line (without its CRLF) → a typed [`Command`] or a
//! [`CommandError`] that says which reply the client gets (500 unknown, 501 syntax).
//!
//! Lines are read by `mailroom-net`'s [`LineReader`] with [`READ_LIMIT`] (so that a long line
//! is discarded to its end and the next command starts clean); a command line above RFC 3977's
//! 512 octets ([`MAX_COMMAND`]) is answered 501 without being parsed.

pub use mailroom_net::lines::{LineEvent, LineReader};

use crate::wildmat::Wildmat;

/// The longest command line RFC 3977 §3.1 allows, CRLF included.
pub const MAX_COMMAND: usize = 512;

/// The longest line read at all; longer ones are discarded to their end. Larger than
/// [`MAX_COMMAND`] so that a client that sends a slightly longer line (a long XPAT pattern)
/// gets a 501 and the session goes on in step.
pub const READ_LIMIT: usize = 4096;

/// An article named by its number in the current group or by its Message-ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// No argument: the current article.
    Current,
    /// An article number.
    Number(u64),
    /// A Message-ID, angle brackets included.
    MessageId(String),
}

/// Articles named by a range of numbers or by Message-ID (OVER, HDR, XPAT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Range {
    /// No argument: the current article.
    Current,
    /// `low..=high` (`n`, `n-`, `n-m`).
    Numbers(u64, u64),
    /// A Message-ID.
    MessageId(String),
}

/// Which part of an article ARTICLE, HEAD, BODY and STAT send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// ARTICLE (220).
    Article,
    /// HEAD (221).
    Head,
    /// BODY (222).
    Body,
    /// STAT (223).
    Stat,
}

/// The LIST variants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListKind {
    /// `LIST` or `LIST ACTIVE [wildmat]`.
    Active(Option<Wildmat>),
    /// `LIST ACTIVE.TIMES [wildmat]`.
    ActiveTimes(Option<Wildmat>),
    /// `LIST NEWSGROUPS [wildmat]`.
    Newsgroups(Option<Wildmat>),
    /// `LIST OVERVIEW.FMT`.
    OverviewFmt,
    /// `LIST HEADERS [MSGID|RANGE]`.
    Headers,
    /// `LIST DISTRIB.PATS`.
    DistribPats,
    /// `LIST EXTENSIONS` (legacy, RFC 2980).
    Extensions,
}

/// An NNTP command (RFC 3977, RFC 4643 AUTHINFO USER/PASS, RFC 4642 STARTTLS, and the legacy
/// commands of RFC 2980 that readers still send).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `CAPABILITIES [keyword]`.
    Capabilities,
    /// `MODE READER`.
    ModeReader,
    /// `MODE STREAM` (RFC 4644), not offered.
    ModeStream,
    /// `LIST ...`.
    List(ListKind),
    /// `GROUP name`.
    Group(String),
    /// `LISTGROUP [group [range]]`.
    ListGroup(Option<String>, Option<(u64, u64)>),
    /// `NEXT`.
    Next,
    /// `LAST`.
    Last,
    /// `ARTICLE`, `HEAD`, `BODY`, `STAT`.
    Article(Part, Target),
    /// `POST`.
    Post,
    /// `IHAVE message-id`.
    Ihave(String),
    /// `DATE`.
    Date,
    /// `HELP`.
    Help,
    /// `NEWGROUPS date time [GMT]`: the two arguments, checked by the session.
    NewGroups(String, String),
    /// `NEWNEWS wildmat date time [GMT]`.
    NewNews(Wildmat, String, String),
    /// `OVER`/`XOVER [range|message-id]`.
    Over(Range),
    /// `HDR field [range|message-id]` (`legacy`: XHDR, answered 221).
    Hdr {
        /// The header name, or a metadata item (`:bytes`).
        field: String,
        /// The articles.
        range: Range,
        /// XHDR rather than HDR.
        legacy: bool,
    },
    /// `XPAT field range|message-id pattern...`.
    Xpat {
        /// The header name.
        field: String,
        /// The articles.
        range: Range,
        /// The patterns, any of which may match (joined by commas into one wildmat).
        pattern: Wildmat,
    },
    /// `AUTHINFO USER name`.
    AuthUser(String),
    /// `AUTHINFO PASS password`: the rest of the line.
    AuthPass(String),
    /// `STARTTLS`.
    StartTls,
    /// `SLAVE` (RFC 977's, obsolete).
    Slave,
    /// `QUIT`.
    Quit,
}

/// Why a line is no valid command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// 500: a keyword NNTP does not have (or an empty line).
    Unknown(String),
    /// 501: arguments missing, extra or malformed; the text says what.
    Syntax(String),
}

/// Parses one command line (without CRLF). Keywords are case-insensitive.
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    if line.len() + 2 > MAX_COMMAND {
        return Err(syntax("command line longer than 512 octets"));
    }
    if line.contains(&0) {
        return Err(syntax("NUL in command line"));
    }
    let text = std::str::from_utf8(line).map_err(|_| syntax("command line is not UTF-8"))?;
    let mut words = text.split_ascii_whitespace();
    let Some(keyword) = words.next() else {
        return Err(CommandError::Unknown(String::new()));
    };
    let keyword = keyword.to_ascii_uppercase();
    let args: Vec<&str> = words.collect();
    let arity = |min: usize, max: usize, usage: &str| {
        if args.len() < min || args.len() > max {
            Err(syntax(&format!("usage: {usage}")))
        } else {
            Ok(())
        }
    };
    match keyword.as_str() {
        "CAPABILITIES" => arity(0, 1, "CAPABILITIES [keyword]").map(|_| Command::Capabilities),
        "MODE" => match args[..] {
            [m] if m.eq_ignore_ascii_case("READER") => Ok(Command::ModeReader),
            [m] if m.eq_ignore_ascii_case("STREAM") => Ok(Command::ModeStream),
            _ => Err(syntax("usage: MODE READER")),
        },
        "LIST" => list(&args).map(Command::List),
        "GROUP" => match args[..] {
            [g] => Ok(Command::Group(g.to_string())),
            _ => Err(syntax("usage: GROUP newsgroup")),
        },
        "LISTGROUP" => match args[..] {
            [] => Ok(Command::ListGroup(None, None)),
            [g] => Ok(Command::ListGroup(Some(g.to_string()), None)),
            [g, r] => match numbers(r) {
                Some(r) => Ok(Command::ListGroup(Some(g.to_string()), Some(r))),
                None => Err(syntax("bad range")),
            },
            _ => Err(syntax("usage: LISTGROUP [newsgroup [range]]")),
        },
        "NEXT" => arity(0, 0, "NEXT").map(|_| Command::Next),
        "LAST" => arity(0, 0, "LAST").map(|_| Command::Last),
        "ARTICLE" | "HEAD" | "BODY" | "STAT" => {
            let part = match keyword.as_str() {
                "ARTICLE" => Part::Article,
                "HEAD" => Part::Head,
                "BODY" => Part::Body,
                _ => Part::Stat,
            };
            let target = match args[..] {
                [] => Target::Current,
                [a] if a.starts_with('<') => Target::MessageId(message_id(a)?),
                [a] => Target::Number(number(a).ok_or_else(|| syntax("bad article number"))?),
                _ => return Err(syntax("too many arguments")),
            };
            Ok(Command::Article(part, target))
        }
        "POST" => arity(0, 0, "POST").map(|_| Command::Post),
        "IHAVE" => match args[..] {
            [id] => Ok(Command::Ihave(message_id(id)?)),
            _ => Err(syntax("usage: IHAVE message-id")),
        },
        "DATE" => arity(0, 0, "DATE").map(|_| Command::Date),
        "HELP" => arity(0, 0, "HELP").map(|_| Command::Help),
        "NEWGROUPS" => match args[..] {
            [d, t] => Ok(Command::NewGroups(d.into(), t.into())),
            [d, t, g] if g.eq_ignore_ascii_case("GMT") => {
                Ok(Command::NewGroups(d.into(), t.into()))
            }
            _ => Err(syntax("usage: NEWGROUPS date time [GMT]")),
        },
        "NEWNEWS" => match args[..] {
            [w, d, t] | [w, d, t, "GMT" | "gmt"] => {
                Ok(Command::NewNews(wildmat(w)?, d.into(), t.into()))
            }
            _ => Err(syntax("usage: NEWNEWS wildmat date time [GMT]")),
        },
        "OVER" | "XOVER" => match args[..] {
            [] => Ok(Command::Over(Range::Current)),
            [r] => Ok(Command::Over(range(r)?)),
            _ => Err(syntax("usage: OVER [range|message-id]")),
        },
        "HDR" | "XHDR" => match args[..] {
            [f] => Ok(Command::Hdr {
                field: f.to_string(),
                range: Range::Current,
                legacy: keyword == "XHDR",
            }),
            [f, r] => Ok(Command::Hdr {
                field: f.to_string(),
                range: range(r)?,
                legacy: keyword == "XHDR",
            }),
            _ => Err(syntax("usage: HDR field [range|message-id]")),
        },
        "XPAT" => match args[..] {
            [f, r, ref patterns @ ..] if !patterns.is_empty() => Ok(Command::Xpat {
                field: f.to_string(),
                range: range(r)?,
                pattern: wildmat(&patterns.join(","))?,
            }),
            _ => Err(syntax("usage: XPAT field range|message-id pattern")),
        },
        "AUTHINFO" => {
            let rest = text.trim_start()[keyword.len()..].trim_start();
            let (sub, value) = rest.split_once(' ').unwrap_or((rest, ""));
            match sub.to_ascii_uppercase().as_str() {
                "USER" if !value.trim().is_empty() => Ok(Command::AuthUser(value.trim().into())),
                "PASS" if !value.is_empty() => Ok(Command::AuthPass(value.into())),
                "USER" | "PASS" => {
                    Err(syntax("usage: AUTHINFO USER name | AUTHINFO PASS password"))
                }
                _ => Err(syntax("only AUTHINFO USER and PASS are supported")),
            }
        }
        "STARTTLS" => arity(0, 0, "STARTTLS").map(|_| Command::StartTls),
        "SLAVE" => arity(0, 0, "SLAVE").map(|_| Command::Slave),
        "QUIT" => arity(0, 0, "QUIT").map(|_| Command::Quit),
        _ => Err(CommandError::Unknown(printable(&keyword))),
    }
}

fn syntax(text: &str) -> CommandError {
    CommandError::Syntax(text.to_string())
}

fn list(args: &[&str]) -> Result<ListKind, CommandError> {
    let pattern = |rest: &[&str]| match rest {
        [] => Ok(None),
        [w] => wildmat(w).map(Some),
        _ => Err(syntax("too many arguments")),
    };
    let Some((kind, rest)) = args.split_first() else {
        return Ok(ListKind::Active(None));
    };
    match kind.to_ascii_uppercase().as_str() {
        "ACTIVE" => pattern(rest).map(ListKind::Active),
        "ACTIVE.TIMES" => pattern(rest).map(ListKind::ActiveTimes),
        "NEWSGROUPS" => pattern(rest).map(ListKind::Newsgroups),
        "OVERVIEW.FMT" if rest.is_empty() => Ok(ListKind::OverviewFmt),
        "HEADERS" => match rest {
            [] => Ok(ListKind::Headers),
            [a] if a.eq_ignore_ascii_case("MSGID") || a.eq_ignore_ascii_case("RANGE") => {
                Ok(ListKind::Headers)
            }
            _ => Err(syntax("usage: LIST HEADERS [MSGID|RANGE]")),
        },
        "DISTRIB.PATS" if rest.is_empty() => Ok(ListKind::DistribPats),
        "EXTENSIONS" if rest.is_empty() => Ok(ListKind::Extensions),
        "OVERVIEW.FMT" | "DISTRIB.PATS" | "EXTENSIONS" => Err(syntax("too many arguments")),
        other => Err(syntax(&format!(
            "unknown LIST keyword {}",
            printable(other)
        ))),
    }
}

fn wildmat(text: &str) -> Result<Wildmat, CommandError> {
    Wildmat::parse(text).map_err(|_| syntax("malformed wildmat"))
}

/// A Message-ID argument: `<...>`, 3 to 250 octets of printable US-ASCII with no `>` inside
/// (RFC 3977 §3.6).
pub fn message_id(text: &str) -> Result<String, CommandError> {
    let ok = text.len() >= 3
        && text.len() <= 250
        && text.starts_with('<')
        && text.ends_with('>')
        && !text[1..text.len() - 1].contains('>')
        && text.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok {
        Ok(text.to_string())
    } else {
        Err(syntax("bad message-id"))
    }
}

fn number(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 16 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `n`, `n-` or `n-m` (RFC 3977 §6.1.2.2); `n-m` with `m < n` is an empty range, not an error.
fn numbers(text: &str) -> Option<(u64, u64)> {
    match text.split_once('-') {
        None => number(text).map(|n| (n, n)),
        Some((low, "")) => number(low).map(|n| (n, u64::MAX)),
        Some((low, high)) => Some((number(low)?, number(high)?)),
    }
}

fn range(text: &str) -> Result<Range, CommandError> {
    if text.starts_with('<') {
        return message_id(text).map(Range::MessageId);
    }
    numbers(text)
        .map(|(l, h)| Range::Numbers(l, h))
        .ok_or_else(|| syntax("bad range"))
}

/// What the client sent, safe to quote: at most 40 characters, controls replaced.
fn printable(text: &str) -> String {
    text.chars()
        .take(40)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        parse_command(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e:?}"))
    }

    fn err(line: &[u8]) -> CommandError {
        parse_command(line).unwrap_err()
    }

    #[test]
    fn commands_parse() {
        assert_eq!(ok("capabilities"), Command::Capabilities);
        assert_eq!(ok("mode reader"), Command::ModeReader);
        assert_eq!(ok("LIST"), Command::List(ListKind::Active(None)));
        assert!(matches!(
            ok("list active comp.*"),
            Command::List(ListKind::Active(Some(_)))
        ));
        assert_eq!(
            ok("LIST overview.fmt"),
            Command::List(ListKind::OverviewFmt)
        );
        assert_eq!(ok("LIST HEADERS MSGID"), Command::List(ListKind::Headers));
        assert_eq!(ok("GROUP a.b"), Command::Group("a.b".into()));
        assert_eq!(
            ok("LISTGROUP a.b 3-"),
            Command::ListGroup(Some("a.b".into()), Some((3, u64::MAX)))
        );
        assert_eq!(
            ok("ARTICLE 12"),
            Command::Article(Part::Article, Target::Number(12))
        );
        assert_eq!(
            ok("head <a@b>"),
            Command::Article(Part::Head, Target::MessageId("<a@b>".into()))
        );
        assert_eq!(ok("STAT"), Command::Article(Part::Stat, Target::Current));
        assert_eq!(ok("IHAVE <x@y>"), Command::Ihave("<x@y>".into()));
        assert_eq!(ok("XOVER 1-5"), Command::Over(Range::Numbers(1, 5)));
        assert_eq!(ok("OVER 5-1"), Command::Over(Range::Numbers(5, 1)));
        assert_eq!(
            ok("OVER <m@x>"),
            Command::Over(Range::MessageId("<m@x>".into()))
        );
        assert_eq!(
            ok("XHDR subject 3"),
            Command::Hdr {
                field: "subject".into(),
                range: Range::Numbers(3, 3),
                legacy: true
            }
        );
        assert!(matches!(
            ok("XPAT Subject 1- *rust* *Rust*"),
            Command::Xpat { .. }
        ));
        assert_eq!(
            ok("NEWGROUPS 20250101 000000 GMT"),
            Command::NewGroups("20250101".into(), "000000".into())
        );
        assert!(matches!(
            ok("NEWNEWS * 250101 000000"),
            Command::NewNews(..)
        ));
        assert_eq!(ok("AUTHINFO USER alice"), Command::AuthUser("alice".into()));
        assert_eq!(
            ok("authinfo pass  two words "),
            Command::AuthPass(" two words ".into())
        );
        assert_eq!(ok("quit"), Command::Quit);
    }

    #[test]
    fn bad_input() {
        assert_eq!(err(b""), CommandError::Unknown(String::new()));
        assert_eq!(err(b"XYZZY"), CommandError::Unknown("XYZZY".into()));
        for bad in [
            &b"GROUP"[..],
            b"GROUP a b",
            b"ARTICLE x",
            b"ARTICLE <>",
            b"ARTICLE <a b>",
            b"ARTICLE -1",
            b"LISTGROUP a x-y",
            b"OVER 1-x",
            b"LIST ACTIVE [a",
            b"LIST ACTIVE a,,b",
            b"LIST BOGUS",
            b"NEWNEWS !, 20250101 000000",
            b"NEWGROUPS 20250101",
            b"MODE X",
            b"AUTHINFO SASL PLAIN",
            b"AUTHINFO USER",
            b"QUIT now",
            b"GROUP a\0b",
            b"GROUP \xff",
            b"IHAVE nobrackets",
            b"XPAT Subject 1-",
        ] {
            assert!(
                matches!(err(bad), CommandError::Syntax(_)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("GROUP {}", "a".repeat(600));
        assert!(matches!(err(long.as_bytes()), CommandError::Syntax(_)));
        let fits = format!("GROUP {}", "a".repeat(500));
        assert!(parse_command(fits.as_bytes()).is_ok());
    }
}
