//! Bytes → SMTP command lines and DATA content, with every input bounded.
//!
//! Three resumable pieces, none of which does I/O or keeps more than one line:
//!
//! * [`LineReader`] (from `mailroom-net`) splits command input into lines of at most [`MAX_LINE`] octets. A longer
//!   line is discarded up to its end and reported once as [`LineEvent::TooLong`], so that the
//!   next command starts clean. Command lines end in CRLF; a bare LF is accepted as the end of
//!   a *command* line for lenient clients.
//! * [`parse_command`] turns one line into a typed [`Command`] or a [`CommandError`] whose
//!   [`CommandError::reply`] is the one place where parse errors meet reply codes.
//! * [`DotDecoder`] (from `mailroom-net`) reads DATA content: it removes dot-stuffing, finds
//!   the end of data, which is *only* `CRLF.CRLF`, and reports any bare CR or LF, so that
//!   `\n.\n`, `\r.\r`, `\n.\r\n` and `\r\n.\n` never end the data and what follows them never
//!   runs as a command. Refusing a message with a bare line end (SMTP smuggling) is the
//!   session's rule.

use mailroom_mailet::{AddressError, MailAddress};

use crate::reply::Reply;

pub use mailroom_net::dot::DotDecoder;
pub use mailroom_net::lines::{LineEvent, LineReader, MAX_LINE};

/// A parsed SMTP command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `EHLO <domain>`.
    Ehlo(String),
    /// `HELO <domain>`.
    Helo(String),
    /// `MAIL FROM:<path> [params]`; `sender` is `None` for the null path `<>`.
    Mail {
        /// The reverse-path.
        sender: Option<MailAddress>,
        /// The ESMTP parameters.
        params: MailParams,
    },
    /// `RCPT TO:<path> [params]`.
    Rcpt {
        /// The forward-path.
        recipient: Recipient,
        /// The ESMTP parameters.
        params: RcptParams,
    },
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP [text]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY <string>`.
    Vrfy,
    /// `EXPN <string>`.
    Expn,
    /// `HELP [topic]`.
    Help,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        /// The SASL mechanism, upper-cased.
        mechanism: String,
        /// The initial response as sent (base64, or `=` for an empty one).
        initial: Option<String>,
    },
    /// `STARTTLS` (RFC 3207; no arguments).
    StartTls,
}

/// The longest AUTH command line or SASL response line, CRLF included: RFC 4954 §4 lets them
/// reach 12288 octets (a large initial response). Other command lines keep [`MAX_LINE`].
pub const MAX_AUTH_LINE: usize = 12288;

/// Whether `line` (without its line end) is longer than a command line may be: [`MAX_LINE`]
/// for every command but AUTH, [`MAX_AUTH_LINE`] for AUTH (the reader's own limit).
pub fn exceeds_command_limit(line: &[u8]) -> bool {
    let is_auth = line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"AUTH ");
    // The reader's limit counts the CRLF.
    !is_auth && line.len() + 2 > MAX_LINE
}

/// A forward-path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipient {
    /// An ordinary address.
    Address(MailAddress),
    /// `<postmaster>` without a domain, which RFC 5321 §4.5.1 says must be accepted.
    Postmaster,
}

/// ESMTP parameters of MAIL FROM that Mailroom understands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870): the size the client announces.
    pub size: Option<u64>,
    /// `BODY=7BIT|8BITMIME` (RFC 6152), upper-cased.
    pub body: Option<String>,
    /// `RET=FULL|HDRS` (RFC 3461), upper-cased.
    pub ret: Option<String>,
    /// `ENVID=xtext` (RFC 3461), as sent.
    pub envid: Option<String>,
    /// `SMTPUTF8` (RFC 6531): UTF-8 addresses and header fields.
    pub smtputf8: bool,
}

/// ESMTP parameters of RCPT TO that Mailroom understands (RFC 3461 DSN).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// `NOTIFY=NEVER` or a list of `SUCCESS,FAILURE,DELAY`, upper-cased.
    pub notify: Option<String>,
    /// `ORCPT=addr-type;xtext`, as sent.
    pub orcpt: Option<String>,
}

/// Why a command line was refused. [`CommandError::reply`] maps each to its reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// A line longer than [`MAX_LINE`].
    TooLong,
    /// The line holds a NUL octet.
    Nul,
    /// The line holds a CR that is not part of its CRLF.
    BareCr,
    /// The line holds octets above 127 outside the address of a MAIL or RCPT, or that are
    /// not UTF-8.
    EightBit,
    /// The verb is not an SMTP command.
    Unknown,
    /// The arguments do not follow the command's syntax; the text says what was expected.
    Syntax(&'static str),
    /// A path without `<` `>` while brackets are enforced.
    MissingBrackets(&'static str),
    /// The MAIL FROM address does not parse.
    BadSender(AddressError),
    /// The RCPT TO address does not parse (or is the null path).
    BadRecipient(AddressError),
    /// An ESMTP parameter that is not supported.
    UnsupportedParameter(String),
}

impl CommandError {
    /// The reply that answers this error.
    pub fn reply(&self) -> Reply {
        match self {
            CommandError::TooLong => Reply::line_too_long(),
            CommandError::Nul => Reply::bad_characters("NUL characters are"),
            CommandError::BareCr => Reply::bad_characters("a bare CR is"),
            CommandError::EightBit => Reply::bad_characters("8-bit characters are"),
            CommandError::Unknown => Reply::unknown_command(),
            CommandError::Syntax(text) => Reply::syntax(*text),
            CommandError::MissingBrackets(usage) => Reply::syntax(format!(
                "Syntax error: the address must be enclosed in <>, as in {usage}"
            )),
            CommandError::BadSender(e) => Reply::bad_sender(&e.to_string()),
            CommandError::BadRecipient(e) => Reply::bad_recipient(&e.to_string()),
            CommandError::UnsupportedParameter(name) => Reply::unsupported_parameter(name),
        }
    }
}

/// Parses one command line (without its line ending). `require_brackets` refuses
/// `MAIL FROM:a@b` without angle brackets.
pub fn parse_command(line: &[u8], require_brackets: bool) -> Result<Command, CommandError> {
    if line.contains(&0) {
        return Err(CommandError::Nul);
    }
    if line.contains(&b'\r') {
        return Err(CommandError::BareCr);
    }
    // UTF-8 only in MAIL and RCPT (RFC 6531 §3.3: their addresses); the session refuses a
    // non-ASCII address unless the transaction has SMTPUTF8.
    let utf8_allowed = line.len() >= 4
        && (line[..4].eq_ignore_ascii_case(b"MAIL") || line[..4].eq_ignore_ascii_case(b"RCPT"));
    if !line.is_ascii() && !utf8_allowed {
        return Err(CommandError::EightBit);
    }
    let line = std::str::from_utf8(line).map_err(|_| CommandError::EightBit)?;
    let (verb, args) = match line.find(' ') {
        Some(i) => (&line[..i], line[i + 1..].trim()),
        None => (line.trim_end(), ""),
    };
    let no_args = |cmd: Command, usage: &'static str| {
        if args.is_empty() {
            Ok(cmd)
        } else {
            Err(CommandError::Syntax(usage))
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" | "HELO" => {
            let name = args.split_whitespace().next().ok_or(CommandError::Syntax(
                if verb.eq_ignore_ascii_case("EHLO") {
                    "Syntax: EHLO hostname"
                } else {
                    "Syntax: HELO hostname"
                },
            ))?;
            let name = name.to_string();
            Ok(if verb.eq_ignore_ascii_case("EHLO") {
                Command::Ehlo(name)
            } else {
                Command::Helo(name)
            })
        }
        "MAIL" => parse_mail(args, require_brackets),
        "RCPT" => parse_rcpt(args, require_brackets),
        "DATA" => no_args(Command::Data, "Syntax: DATA"),
        "RSET" => no_args(Command::Rset, "Syntax: RSET"),
        "QUIT" => no_args(Command::Quit, "Syntax: QUIT"),
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_args(
            Command::StartTls,
            "Syntax: STARTTLS (no parameters allowed)",
        ),
        "VRFY" if args.is_empty() => Err(CommandError::Syntax("Syntax: VRFY address")),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" if args.is_empty() => Err(CommandError::Syntax("Syntax: EXPN list")),
        "EXPN" => Ok(Command::Expn),
        "AUTH" => {
            let mut words = args.split_whitespace();
            let mechanism = words
                .next()
                .ok_or(CommandError::Syntax(
                    "Syntax: AUTH mechanism [initial-response]",
                ))?
                .to_ascii_uppercase();
            let initial = words.next().map(str::to_string);
            if words.next().is_some() {
                return Err(CommandError::Syntax(
                    "Syntax: AUTH mechanism [initial-response]",
                ));
            }
            Ok(Command::Auth { mechanism, initial })
        }
        _ => Err(CommandError::Unknown),
    }
}

const MAIL_USAGE: &str = "MAIL FROM:<user@domain>";
const RCPT_USAGE: &str = "RCPT TO:<user@domain>";

fn parse_mail(args: &str, require_brackets: bool) -> Result<Command, CommandError> {
    let rest = strip_keyword(args, "FROM:").ok_or(CommandError::Syntax(
        "Syntax: MAIL FROM:<address> [parameters]",
    ))?;
    let (path, params) = split_path(rest, require_brackets, MAIL_USAGE)?;
    // RFC 6531 extends the path alone: 8-bit octets in the parameters are refused as in
    // any other command (`500 5.5.2`), and never echoed back in a reply.
    if !params.is_ascii() {
        return Err(CommandError::EightBit);
    }
    let sender = MailAddress::parse_path(&path).map_err(CommandError::BadSender)?;
    let mut parsed = MailParams::default();
    for (key, value) in parse_params(params)? {
        let dup = || CommandError::Syntax("Syntax error: duplicate parameter");
        match key.to_ascii_uppercase().as_str() {
            "SIZE" => {
                let size = value
                    .filter(|v| {
                        !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or(CommandError::Syntax(
                        "Syntax error: SIZE needs a number of octets",
                    ))?;
                if parsed.size.replace(size).is_some() {
                    return Err(dup());
                }
            }
            "BODY" => {
                let body = value
                    .map(str::to_ascii_uppercase)
                    .filter(|v| v == "7BIT" || v == "8BITMIME")
                    .ok_or(CommandError::Syntax(
                        "Syntax error: BODY must be 7BIT or 8BITMIME",
                    ))?;
                if parsed.body.replace(body).is_some() {
                    return Err(dup());
                }
            }
            "RET" => {
                let ret = value
                    .map(str::to_ascii_uppercase)
                    .filter(|v| v == "FULL" || v == "HDRS")
                    .ok_or(CommandError::Syntax(
                        "Syntax error: RET must be FULL or HDRS",
                    ))?;
                if parsed.ret.replace(ret).is_some() {
                    return Err(dup());
                }
            }
            "ENVID" => {
                let envid = value
                    .filter(|v| !v.is_empty() && v.len() <= 100 && is_xtext(v))
                    .ok_or(CommandError::Syntax(
                        "Syntax error: ENVID needs an xtext value (RFC 3461) of at most 100 characters",
                    ))?;
                if parsed.envid.replace(envid.to_string()).is_some() {
                    return Err(dup());
                }
            }
            "SMTPUTF8" => {
                if value.is_some() {
                    return Err(CommandError::Syntax(
                        "Syntax error: SMTPUTF8 takes no value",
                    ));
                }
                if std::mem::replace(&mut parsed.smtputf8, true) {
                    return Err(dup());
                }
            }
            _ => return Err(CommandError::UnsupportedParameter(key.to_string())),
        }
    }
    Ok(Command::Mail {
        sender,
        params: parsed,
    })
}

fn parse_rcpt(args: &str, require_brackets: bool) -> Result<Command, CommandError> {
    let rest = strip_keyword(args, "TO:").ok_or(CommandError::Syntax(
        "Syntax: RCPT TO:<address> [parameters]",
    ))?;
    let (path, params) = split_path(rest, require_brackets, RCPT_USAGE)?;
    // RFC 6531 extends the path alone: 8-bit octets in the parameters are refused as in
    // any other command (`500 5.5.2`), and never echoed back in a reply.
    if !params.is_ascii() {
        return Err(CommandError::EightBit);
    }
    let inner = &path[1..path.len() - 1];
    let recipient = if inner.eq_ignore_ascii_case("postmaster") {
        Recipient::Postmaster
    } else {
        match MailAddress::parse_path(&path).map_err(CommandError::BadRecipient)? {
            Some(address) => Recipient::Address(address),
            None => return Err(CommandError::BadRecipient(AddressError::Empty)),
        }
    };
    let mut parsed = RcptParams::default();
    for (key, value) in parse_params(params)? {
        let dup = || CommandError::Syntax("Syntax error: duplicate parameter");
        match key.to_ascii_uppercase().as_str() {
            "NOTIFY" => {
                let notify = value.map(str::to_ascii_uppercase).filter(|v| {
                    v == "NEVER"
                        || v.split(',')
                            .all(|w| matches!(w, "SUCCESS" | "FAILURE" | "DELAY"))
                });
                let notify = notify.ok_or(CommandError::Syntax(
                    "Syntax error: NOTIFY must be NEVER or a list of SUCCESS,FAILURE,DELAY",
                ))?;
                if parsed.notify.replace(notify).is_some() {
                    return Err(dup());
                }
            }
            "ORCPT" => {
                let orcpt = value
                    .filter(|v| v.len() <= 500)
                    .and_then(|v| v.split_once(';').map(|(kind, xtext)| (v, kind, xtext)))
                    .filter(|(_, kind, xtext)| {
                        !kind.is_empty()
                            && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                            && !xtext.is_empty()
                            && is_xtext(xtext)
                    })
                    .map(|(v, _, _)| v)
                    .ok_or(CommandError::Syntax(
                        "Syntax error: ORCPT must be addr-type;xtext (RFC 3461)",
                    ))?;
                if parsed.orcpt.replace(orcpt.to_string()).is_some() {
                    return Err(dup());
                }
            }
            _ => return Err(CommandError::UnsupportedParameter(key.to_string())),
        }
    }
    Ok(Command::Rcpt {
        recipient,
        params: parsed,
    })
}

/// Whether `text` is xtext (RFC 3461 §4): printable US-ASCII but `+` and `=`, and `+`
/// followed by two upper-case hexadecimal digits for any other octet.
fn is_xtext(text: &str) -> bool {
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => {
                let hex = |b: Option<u8>| b.is_some_and(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'));
                if !hex(bytes.next()) || !hex(bytes.next()) {
                    return false;
                }
            }
            b'=' => return false,
            b'!'..=b'~' => {}
            _ => return false,
        }
    }
    true
}

/// Strips `FROM:` / `TO:` (any case) and the spaces lenient clients put after the colon.
fn strip_keyword<'a>(args: &'a str, keyword: &str) -> Option<&'a str> {
    let head = args.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| args[keyword.len()..].trim_start())
}

/// Splits `<path> params` into the bracketed path and the parameter text. Without brackets
/// (when allowed) the path is the first word and is returned with brackets added.
fn split_path<'a>(
    rest: &'a str,
    require_brackets: bool,
    usage: &'static str,
) -> Result<(String, &'a str), CommandError> {
    if rest.starts_with('<') {
        let end = closing_bracket(rest).ok_or(CommandError::Syntax(
            "Syntax error: unbalanced angle brackets in the address",
        ))?;
        let params = &rest[end + 1..];
        if !params.is_empty() && !params.starts_with(' ') {
            return Err(CommandError::Syntax(
                "Syntax error: a space must separate the address from the parameters",
            ));
        }
        Ok((rest[..=end].to_string(), params))
    } else if rest.is_empty() {
        Err(CommandError::Syntax(if usage == MAIL_USAGE {
            "Syntax: MAIL FROM:<address> [parameters]"
        } else {
            "Syntax: RCPT TO:<address> [parameters]"
        }))
    } else if require_brackets {
        Err(CommandError::MissingBrackets(usage))
    } else {
        let end = rest.find(' ').unwrap_or(rest.len());
        let word = &rest[..end];
        if word.contains(['<', '>']) {
            return Err(CommandError::Syntax(
                "Syntax error: unbalanced angle brackets in the address",
            ));
        }
        Ok((format!("<{word}>"), &rest[end..]))
    }
}

/// The index of the `>` closing a path that starts with `<`, skipping quoted strings.
fn closing_bracket(text: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// `KEY[=VALUE]` words.
fn parse_params(text: &str) -> Result<Vec<(&str, Option<&str>)>, CommandError> {
    text.split_whitespace()
        .map(|word| {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word, None),
            };
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(CommandError::Syntax("Syntax error: bad parameter"));
            }
            Ok((key, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        let p = |s: &str| parse_command(s.as_bytes(), true);
        assert_eq!(
            p("ehlo client.example"),
            Ok(Command::Ehlo("client.example".into()))
        );
        assert_eq!(
            p("EHLO"),
            Err(CommandError::Syntax("Syntax: EHLO hostname"))
        );
        assert_eq!(p("NOOP hello"), Ok(Command::Noop));
        assert_eq!(p("DATA x"), Err(CommandError::Syntax("Syntax: DATA")));
        assert_eq!(p("FOO"), Err(CommandError::Unknown));
        match p("MAIL FROM:<a@b.example> SIZE=100 BODY=8bitmime RET=HDRS ENVID=x+2B1") {
            Ok(Command::Mail { sender, params }) => {
                assert_eq!(sender.unwrap().to_string(), "a@b.example");
                assert_eq!(params.size, Some(100));
                assert_eq!(params.body.as_deref(), Some("8BITMIME"));
                assert_eq!(params.ret.as_deref(), Some("HDRS"));
                assert_eq!(params.envid.as_deref(), Some("x+2B1"));
            }
            other => panic!("{other:?}"),
        }
        for bad in ["x+2b", "x+2", "a=b", "a\u{1b}[31m", "+ZZ"] {
            assert!(
                matches!(
                    p(&format!("MAIL FROM:<a@b.example> ENVID={bad}")),
                    Err(CommandError::Syntax(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            p("RCPT TO:<c@d.example> ORCPT=rfc822;c+2Bx@d.example"),
            Ok(Command::Rcpt { .. })
        ));
        for bad in ["rfc822", "rfc822;", ";c@d", "rfc822;a=b", "rfc822;a+4"] {
            assert!(
                matches!(
                    p(&format!("RCPT TO:<c@d.example> ORCPT={bad}")),
                    Err(CommandError::Syntax(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            p("mail from: <>"),
            Ok(Command::Mail { sender: None, .. })
        ));
        assert!(matches!(
            p("MAIL FROM:<\"a b\"@c.example> SIZE=1"),
            Ok(Command::Mail {
                sender: Some(_),
                params: MailParams { size: Some(1), .. }
            })
        ));
        assert_eq!(
            p("MAIL FROM:a@b.example"),
            Err(CommandError::MissingBrackets(MAIL_USAGE))
        );
        assert!(matches!(
            parse_command(b"MAIL FROM:a@b.example SIZE=5", false),
            Ok(Command::Mail {
                sender: Some(_),
                params: MailParams { size: Some(5), .. }
            })
        ));
        assert_eq!(
            p("MAIL FROM:<a@b.example> FOO=1"),
            Err(CommandError::UnsupportedParameter("FOO".into()))
        );
        assert!(matches!(
            p("MAIL FROM:<a@b.example> SIZE=x"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            p("MAIL FROM:<a@@b>"),
            Err(CommandError::BadSender(_))
        ));
        assert!(matches!(
            p("MAIL FROM:<a@b.example"),
            Err(CommandError::Syntax(_))
        ));
        assert_eq!(
            p("RCPT TO:<Postmaster>"),
            Ok(Command::Rcpt {
                recipient: Recipient::Postmaster,
                params: RcptParams::default()
            })
        );
        assert!(matches!(
            p("RCPT TO:<>"),
            Err(CommandError::BadRecipient(_))
        ));
        match p("RCPT TO:<c@d.example> NOTIFY=success,failure ORCPT=rfc822;c@d.example") {
            Ok(Command::Rcpt { params, .. }) => {
                assert_eq!(params.notify.as_deref(), Some("SUCCESS,FAILURE"));
                assert_eq!(params.orcpt.as_deref(), Some("rfc822;c@d.example"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_command(b"NO\0OP", true), Err(CommandError::Nul));
        assert_eq!(parse_command(b"NOOP\r", true), Err(CommandError::BareCr));
        assert_eq!(
            parse_command("NOOP é".as_bytes(), true),
            Err(CommandError::EightBit)
        );
    }

    /// RFC 6531: UTF-8 in the addresses of MAIL and RCPT, `SMTPUTF8` without a value; 8-bit
    /// octets anywhere else, or that are not UTF-8, are refused.
    #[test]
    fn utf8_addresses_and_smtputf8() {
        let p = |s: &str| parse_command(s.as_bytes(), true);
        match p("MAIL FROM:<jörg@bücher.example> SMTPUTF8 SIZE=10") {
            Ok(Command::Mail { sender, params }) => {
                assert_eq!(sender.unwrap().to_string(), "jörg@bücher.example");
                assert!(params.smtputf8);
                assert_eq!(params.size, Some(10));
            }
            other => panic!("{other:?}"),
        }
        match p("RCPT TO:<用户@例子.example>") {
            Ok(Command::Rcpt {
                recipient: Recipient::Address(address),
                ..
            }) => assert_eq!(address.local_part(), "用户"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            p("MAIL FROM:<a@b.example>"),
            Ok(Command::Mail { params, .. }) if !params.smtputf8
        ));
        assert!(matches!(
            p("MAIL FROM:<a@b.example> SMTPUTF8=yes"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            p("MAIL FROM:<a@b.example> SMTPUTF8 SMTPUTF8"),
            Err(CommandError::Syntax(_))
        ));
        assert_eq!(p("EHLO bücher.example"), Err(CommandError::EightBit));
        // In the parameters too: only the path may be UTF-8.
        assert_eq!(
            p("MAIL FROM:<a@b.example> SMTPUTF8 X-Ü=1"),
            Err(CommandError::EightBit)
        );
        assert_eq!(
            p("MAIL FROM:<jörg@b.example> SMTPUTF8 ENVID=ü"),
            Err(CommandError::EightBit)
        );
        assert_eq!(
            p("RCPT TO:<a@b.example> NOTIFY=ÜBER"),
            Err(CommandError::EightBit)
        );
        assert_eq!(
            parse_command(b"MAIL FROM:<j\xf6rg@b.example> SMTPUTF8", true),
            Err(CommandError::EightBit)
        );
    }
}
