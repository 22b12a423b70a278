//! POP3 wire formats, with no I/O: client bytes → bounded lines → typed commands.
//!
//! * [`LineReader`] splits client input into lines of at most [`MAX_LINE`] octets. A longer
//!   line (say 10 MB) is discarded up to its end and reported once as [`LineEvent::TooLong`],
//!   so that the next command starts clean. Lines end in CRLF; a bare LF is accepted too.
//! * [`parse_command`] turns one line into a [`Command`] or a [`CommandError`] whose text is
//!   the `-ERR` the client gets.
//!
//! A message travels to the client through `mailroom-net`'s [`DotEncoder`]: every line end
//! becomes CRLF, a line beginning with `.` gets a second one (RFC 1939 §3), TOP stops after the
//! header section and the requested number of body lines, and the `.` line ends it.

pub use mailroom_net::dot::DotEncoder;
pub use mailroom_net::lines::{LineEvent, LineReader, MAX_LINE};

/// A POP3 command (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `USER name`.
    User(String),
    /// `PASS password`: everything after `PASS `, spaces included.
    Pass(String),
    /// `APOP name digest`.
    Apop {
        /// The user name.
        name: String,
        /// MD5 of the banner's timestamp and the shared secret, in hex.
        digest: String,
    },
    /// `AUTH [mechanism [initial-response]]`.
    Auth {
        /// The SASL mechanism, upper-cased; `None` asks for the list.
        mechanism: Option<String>,
        /// The initial response (base64, or `=` for an empty one).
        initial: Option<String>,
    },
    /// `CAPA`.
    Capa,
    /// `STLS`.
    Stls,
    /// `STAT`.
    Stat,
    /// `LIST [msg]`.
    List(Option<u64>),
    /// `RETR msg`.
    Retr(u64),
    /// `DELE msg`.
    Dele(u64),
    /// `NOOP`.
    Noop,
    /// `RSET`.
    Rset,
    /// `QUIT`.
    Quit,
    /// `TOP msg n`.
    Top {
        /// The message number.
        msg: u64,
        /// Body lines wanted.
        lines: u64,
    },
    /// `UIDL [msg]`.
    Uidl(Option<u64>),
}

/// Why a line is not a valid command; its [`Display`](std::fmt::Display) is the `-ERR` text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// An empty line.
    Empty,
    /// A keyword POP3 does not have.
    Unknown(String),
    /// Arguments missing, extra, or not numbers; the usage of the command.
    Usage(&'static str),
    /// A number too large for any maildrop (above 2^64 - 1), quoted (shortened).
    TooLarge(String),
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::Empty => f.write_str("empty command"),
            CommandError::Unknown(keyword) => write!(f, "unknown command {keyword}"),
            CommandError::Usage(usage) => write!(f, "syntax: {usage}"),
            CommandError::TooLarge(number) => write!(f, "number out of range: {number}"),
        }
    }
}

/// Parses one command line (without its CRLF). Keywords are case-insensitive; arguments are
/// separated by spaces, except PASS, whose argument is the rest of the line as sent.
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let line = String::from_utf8_lossy(line);
    let (keyword, rest) = match line.split_once(' ') {
        Some((k, r)) => (k, r),
        None => (&*line, ""),
    };
    if keyword.is_empty() && rest.trim().is_empty() {
        return Err(CommandError::Empty);
    }
    let keyword = keyword.to_ascii_uppercase();
    let args: Vec<&str> = rest.split_ascii_whitespace().collect();
    let none = |cmd: Command, u: &'static str| if args.is_empty() { Ok(cmd) } else { usage(u) };
    let optional_number = |u: &'static str| match args[..] {
        [] => Ok(None),
        [n] => number(n, u).map(Some),
        _ => usage(u),
    };
    let one_number = |u: &'static str| match args[..] {
        [n] => number(n, u),
        _ => usage(u),
    };
    match keyword.as_str() {
        "USER" => match args[..] {
            [name] => Ok(Command::User(name.to_string())),
            _ => usage("USER name"),
        },
        // A password may contain (and begin or end with) spaces.
        "PASS" if !rest.is_empty() => Ok(Command::Pass(rest.to_string())),
        "PASS" => usage("PASS password"),
        "APOP" => match args[..] {
            [name, digest] => Ok(Command::Apop {
                name: name.to_string(),
                digest: digest.to_string(),
            }),
            _ => usage("APOP name digest"),
        },
        "AUTH" => match args[..] {
            [] => Ok(Command::Auth {
                mechanism: None,
                initial: None,
            }),
            [mechanism] => Ok(Command::Auth {
                mechanism: Some(mechanism.to_ascii_uppercase()),
                initial: None,
            }),
            [mechanism, initial] => Ok(Command::Auth {
                mechanism: Some(mechanism.to_ascii_uppercase()),
                initial: Some(initial.to_string()),
            }),
            _ => usage("AUTH mechanism [initial-response]"),
        },
        "CAPA" => none(Command::Capa, "CAPA"),
        "STLS" => none(Command::Stls, "STLS"),
        "STAT" => none(Command::Stat, "STAT"),
        "NOOP" => none(Command::Noop, "NOOP"),
        "RSET" => none(Command::Rset, "RSET"),
        "QUIT" => none(Command::Quit, "QUIT"),
        "LIST" => optional_number("LIST [message-number]").map(Command::List),
        "UIDL" => optional_number("UIDL [message-number]").map(Command::Uidl),
        "RETR" => one_number("RETR message-number").map(Command::Retr),
        "DELE" => one_number("DELE message-number").map(Command::Dele),
        "TOP" => match args[..] {
            [msg, lines] => {
                let u = "TOP message-number lines";
                Ok(Command::Top {
                    msg: number(msg, u)?,
                    lines: number(lines, u)?,
                })
            }
            _ => usage("TOP message-number lines"),
        },
        _ => Err(CommandError::Unknown(printable(&keyword))),
    }
}

fn usage<T>(usage: &'static str) -> Result<T, CommandError> {
    Err(CommandError::Usage(usage))
}

/// A non-negative decimal number: anything else is a syntax error (`usage`), and one too
/// large to represent is said to be out of range, never clamped to another number.
fn number(arg: &str, usage: &'static str) -> Result<u64, CommandError> {
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandError::Usage(usage));
    }
    arg.parse()
        .map_err(|_| CommandError::TooLarge(printable(arg)))
}

/// What the client sent, safe to quote in a reply: at most 40 characters, controls replaced.
fn printable(text: &str) -> String {
    text.chars()
        .take(40)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        let ok = |line: &str, cmd: Command| assert_eq!(parse_command(line.as_bytes()), Ok(cmd));
        ok("user alice", Command::User("alice".into()));
        ok("PASS  two  spaces ", Command::Pass(" two  spaces ".into()));
        ok(
            "APOP bob c4c9334bac560ecc979e58001b3e22fb",
            Command::Apop {
                name: "bob".into(),
                digest: "c4c9334bac560ecc979e58001b3e22fb".into(),
            },
        );
        ok(
            "auth plain AGEAYg==",
            Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial: Some("AGEAYg==".into()),
            },
        );
        ok("Stat", Command::Stat);
        ok("LIST", Command::List(None));
        ok("LIST 2", Command::List(Some(2)));
        ok("UIDL 18446744073709551615", Command::Uidl(Some(u64::MAX)));
        ok("TOP 1 0", Command::Top { msg: 1, lines: 0 });
        ok("RETR 1", Command::Retr(1));
        ok("DELE 3", Command::Dele(3));
        ok("QUIT", Command::Quit);

        let err = |line: &str| parse_command(line.as_bytes()).unwrap_err().to_string();
        assert_eq!(err(""), "empty command");
        assert_eq!(err("XYZZY 1"), "unknown command XYZZY");
        assert_eq!(err("RETR"), "syntax: RETR message-number");
        assert_eq!(err("RETR one"), "syntax: RETR message-number");
        assert_eq!(err("RETR -1"), "syntax: RETR message-number");
        assert_eq!(
            err("RETR 18446744073709551616"),
            "number out of range: 18446744073709551616"
        );
        assert_eq!(
            err("TOP 1 99999999999999999999999"),
            "number out of range: 99999999999999999999999"
        );
        assert_eq!(
            err("UIDL 018446744073709551616"),
            "number out of range: 018446744073709551616"
        );
        assert_eq!(err("TOP 1"), "syntax: TOP message-number lines");
        assert_eq!(err("STAT 1"), "syntax: STAT");
        assert_eq!(err("PASS"), "syntax: PASS password");
        assert_eq!(err("USER a b"), "syntax: USER name");
    }
}
