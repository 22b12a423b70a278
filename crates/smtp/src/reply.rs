//! SMTP replies: a typed value (code, enhanced status code, text lines) and its wire form.
//!
//! Every reply the session sends is built by one of the constructors here, so that reply
//! codes, enhanced status codes (RFC 3463, advertised as ENHANCEDSTATUSCODES, RFC 2034) and
//! texts live in one place. This module knows nothing of sessions or sockets.

use std::borrow::Cow;

/// One SMTP reply, possibly multi-line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code (RFC 5321 §4.2).
    pub code: u16,
    /// The enhanced status code (`"5.1.1"`), repeated on every line; `None` on the greeting
    /// and the HELO/EHLO reply, where RFC 2034 does not use it.
    pub status: Option<&'static str>,
    /// The text lines; never empty. They must not contain CR or LF (the writer replaces them).
    pub lines: Vec<Cow<'static, str>>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, status: &'static str, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            status: Some(status),
            lines: vec![text.into()],
        }
    }

    /// A one-line reply without an enhanced status code.
    pub fn plain(code: u16, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            status: None,
            lines: vec![text.into()],
        }
    }

    /// Whether this is a 4xx or 5xx reply.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Appends the wire form (`250-first\r\n250 last\r\n`) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            out.extend_from_slice(self.code.to_string().as_bytes());
            out.push(if i == last { b' ' } else { b'-' });
            if let Some(status) = self.status {
                out.extend_from_slice(status.as_bytes());
                out.push(b' ');
            }
            // Replies may quote what the client sent; never let it break the framing.
            out.extend(line.bytes().map(|b| match b {
                b'\r' | b'\n' => b' ',
                b => b,
            }));
            out.extend_from_slice(b"\r\n");
        }
        if self.lines.is_empty() {
            out.extend_from_slice(format!("{} \r\n", self.code).as_bytes());
        }
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }

    // ---- Connection-level replies -------------------------------------------------------

    /// `220 <host> ESMTP Mailroom ready`: the banner.
    pub fn greeting(host: &str) -> Reply {
        Reply::plain(220, format!("{host} ESMTP Mailroom ready"))
    }

    /// `221 2.0.0 <host> Bye`: answer to QUIT.
    pub fn bye(host: &str) -> Reply {
        Reply::new(
            221,
            "2.0.0",
            format!("{host} Service closing transmission channel"),
        )
    }

    /// `421 4.4.2 <host> Error: timeout exceeded`: the client was idle too long.
    pub fn timeout(host: &str) -> Reply {
        Reply::new(421, "4.4.2", format!("{host} Error: timeout exceeded"))
    }

    /// `421 4.3.2 <host> Service shutting down`: the server is stopping.
    pub fn shutting_down(host: &str) -> Reply {
        Reply::new(421, "4.3.2", format!("{host} Service shutting down"))
    }

    /// `421 4.7.0 <host> Error: too many errors`: the client made too many protocol errors.
    pub fn too_many_errors(host: &str) -> Reply {
        Reply::new(421, "4.7.0", format!("{host} Error: too many errors"))
    }

    /// `421 4.7.0`: too many failed AUTH attempts in one session; the connection closes.
    pub fn too_many_auth_failures(host: &str) -> Reply {
        Reply::new(
            421,
            "4.7.0",
            format!("{host} Error: too many failed authentications"),
        )
    }

    // ---- Positive replies ---------------------------------------------------------------

    /// `250 <host>`: answer to HELO.
    pub fn helo(host: &str) -> Reply {
        Reply::plain(250, host.to_string())
    }

    /// The multi-line answer to EHLO, advertising `extensions`.
    pub fn ehlo(host: &str, extensions: Vec<String>) -> Reply {
        let mut lines: Vec<Cow<'static, str>> = vec![host.to_string().into()];
        lines.extend(extensions.into_iter().map(Cow::Owned));
        Reply {
            code: 250,
            status: None,
            lines,
        }
    }

    /// `250 2.0.0 Ok`: NOOP, RSET.
    pub fn ok() -> Reply {
        Reply::new(250, "2.0.0", "Ok")
    }

    /// `250 2.1.0 Sender ok`.
    pub fn sender_ok() -> Reply {
        Reply::new(250, "2.1.0", "Sender ok")
    }

    /// `250 2.1.5 Recipient ok`.
    pub fn recipient_ok() -> Reply {
        Reply::new(250, "2.1.5", "Recipient ok")
    }

    /// `354 End data with <CR><LF>.<CR><LF>`.
    pub fn start_data() -> Reply {
        Reply::plain(354, "End data with <CR><LF>.<CR><LF>")
    }

    /// `250 2.0.0 Message accepted for delivery (<id>)`: only after the spool committed it.
    pub fn accepted(id: &str) -> Reply {
        Reply::new(
            250,
            "2.0.0",
            format!("Message accepted for delivery (id {id})"),
        )
    }

    /// `220 2.0.0 Ready to start TLS`: STARTTLS accepted; the handshake follows (RFC 3207).
    pub fn ready_for_tls() -> Reply {
        Reply::new(220, "2.0.0", "Ready to start TLS")
    }

    /// `252 2.5.2`: VRFY is not answered, but mail to the address is accepted.
    pub fn cannot_vrfy() -> Reply {
        Reply::new(
            252,
            "2.5.2",
            "Cannot VRFY user, but will accept message and attempt delivery",
        )
    }

    /// `214 2.0.0` with the list of commands.
    pub fn help() -> Reply {
        Reply::new(
            214,
            "2.0.0",
            "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP",
        )
    }

    // ---- Transient failures -------------------------------------------------------------

    /// `451 4.3.0 Local error in processing`: the spool failed.
    pub fn local_error() -> Reply {
        Reply::new(451, "4.3.0", "Local error in processing")
    }

    /// `452 4.3.1 Insufficient system storage`: the spool's disk is full (or below the space
    /// it keeps for the mail it has); the client tries again later.
    pub fn insufficient_storage() -> Reply {
        Reply::new(452, "4.3.1", "Insufficient system storage")
    }

    /// `451 4.3.0`: the recipient could not be looked up (the users repository or the
    /// virtual user tables failed); the client tries again later.
    pub fn recipient_lookup_failed(address: &str) -> Reply {
        Reply::new(
            451,
            "4.3.0",
            format!("<{address}>: Temporary lookup failure, try again later"),
        )
    }

    /// `452 4.5.3 Too many recipients`.
    pub fn too_many_recipients() -> Reply {
        Reply::new(452, "4.5.3", "Too many recipients")
    }

    // ---- Permanent failures -------------------------------------------------------------

    /// `334 <challenge>`: the next step of a SASL exchange (base64, or empty).
    pub fn challenge(text: &'static str) -> Reply {
        Reply::plain(334, text)
    }

    /// `235 2.7.0 Authentication successful`.
    pub fn auth_ok() -> Reply {
        Reply::new(235, "2.7.0", "Authentication successful")
    }

    /// `454 4.7.0 Temporary authentication failure`: the check could not be made.
    pub fn auth_unavailable() -> Reply {
        Reply::new(454, "4.7.0", "Temporary authentication failure")
    }

    /// `535 5.7.8 Authentication credentials invalid` (RFC 4954).
    pub fn auth_failed() -> Reply {
        Reply::new(535, "5.7.8", "Authentication credentials invalid")
    }

    /// `535 5.7.8`: a PLAIN authorization identity other than the login name.
    pub fn auth_other_identity() -> Reply {
        Reply::new(535, "5.7.8", "Cannot authorize as another user")
    }

    /// `501 5.7.0 Authentication cancelled`: the client answered `*` (RFC 4954 §4).
    pub fn auth_cancelled() -> Reply {
        Reply::new(501, "5.7.0", "Authentication cancelled")
    }

    /// `501 5.5.2`: a SASL response that is not base64, or not what the mechanism expects.
    pub fn bad_sasl_response(what: &'static str) -> Reply {
        Reply::new(501, "5.5.2", what)
    }

    /// `504 5.5.4 Unrecognized authentication type`.
    pub fn unknown_mechanism() -> Reply {
        Reply::new(504, "5.5.4", "Unrecognized authentication type")
    }

    /// `538 5.7.11 Encryption required for requested authentication mechanism` (RFC 4954).
    pub fn encryption_required() -> Reply {
        Reply::new(
            538,
            "5.7.11",
            "Encryption required for requested authentication mechanism",
        )
    }

    /// `530 5.7.0 Authentication required` (RFC 4954 §6): relaying, or any mail on a
    /// submission port, needs AUTH first.
    pub fn auth_required() -> Reply {
        Reply::new(530, "5.7.0", "Authentication required")
    }

    /// `553 5.7.1`: an authenticated user sending as a local address that is not theirs
    /// (`<verifyIdentity>`).
    pub fn sender_not_owned(sender: &str, user: &str) -> Reply {
        Reply::new(
            553,
            "5.7.1",
            format!("<{sender}>: sender address not owned by user {user}"),
        )
    }

    /// `451 4.3.0`: the sender's ownership could not be checked.
    pub fn sender_lookup_failed() -> Reply {
        Reply::new(
            451,
            "4.3.0",
            "Cannot check the sender address now, try again later",
        )
    }

    /// `500 5.5.1 Command unrecognized`.
    pub fn unknown_command() -> Reply {
        Reply::new(500, "5.5.1", "Error: command not recognized")
    }

    /// `500 5.5.2 Line too long`: a command line over the limit was discarded.
    pub fn line_too_long() -> Reply {
        Reply::new(500, "5.5.2", "Line too long")
    }

    /// `500 5.5.2`: a command line with NUL, a bare CR or non-ASCII octets.
    pub fn bad_characters(what: &'static str) -> Reply {
        Reply::new(
            500,
            "5.5.2",
            format!("Error: {what} not allowed in a command"),
        )
    }

    /// `501 5.5.4 <text>`: a syntax error in the arguments.
    pub fn syntax(text: impl Into<Cow<'static, str>>) -> Reply {
        Reply::new(501, "5.5.4", text)
    }

    /// `501 5.1.7 Bad sender address syntax`.
    /// `553 5.6.7`: a non-ASCII address in a transaction without SMTPUTF8 (RFC 6531 §3.5).
    pub fn utf8_needs_smtputf8() -> Reply {
        Reply::new(
            553,
            "5.6.7",
            "Non-ASCII addresses need MAIL FROM with SMTPUTF8 (RFC 6531)",
        )
    }

    /// `501 5.1.7 Bad sender address syntax`.
    pub fn bad_sender(why: &str) -> Reply {
        Reply::new(501, "5.1.7", format!("Bad sender address syntax: {why}"))
    }

    /// `501 5.1.3 Bad recipient address syntax`.
    pub fn bad_recipient(why: &str) -> Reply {
        Reply::new(501, "5.1.3", format!("Bad recipient address syntax: {why}"))
    }

    /// `502 5.5.1 <what> not available`: a command that is disabled (EXPN).
    pub fn disabled(what: &str) -> Reply {
        Reply::new(502, "5.5.1", format!("Error: {what} command not available"))
    }

    /// `502 5.5.1`: STARTTLS on a listener that does not offer it.
    pub fn starttls_not_offered() -> Reply {
        Reply::new(502, "5.5.1", "Error: STARTTLS is not offered here")
    }

    /// `503 5.5.1 <text>`: a command out of sequence.
    pub fn bad_sequence(text: &'static str) -> Reply {
        Reply::new(503, "5.5.1", format!("Error: {text}"))
    }

    /// `550 5.7.1 Relaying denied`.
    pub fn relay_denied() -> Reply {
        Reply::new(550, "5.7.1", "Relaying denied")
    }

    /// `550 5.1.1 <address>: no such user here`: a local recipient who is no user and no
    /// virtual-table source (`<verifyRecipients>`).
    pub fn unknown_recipient(address: &str) -> Reply {
        Reply::new(550, "5.1.1", format!("<{address}>: no such user here"))
    }

    /// A virtual-table `error:CODE text` mapping: that code and text. A text that does not
    /// start with an enhanced status code of the code's class gets `X.0.0`, since every reply
    /// carries one once ENHANCEDSTATUSCODES is announced.
    pub fn mapping_error(code: u16, text: &str) -> Reply {
        let class = code / 100;
        let has_status = text.split(' ').next().is_some_and(|word| {
            let parts: Vec<&str> = word.split('.').collect();
            parts.len() == 3
                && parts[0] == class.to_string()
                && parts[1..]
                    .iter()
                    .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
        });
        match (has_status, text.is_empty()) {
            (true, _) => Reply::plain(code, text.to_string()),
            (false, true) => Reply::plain(code, format!("{class}.0.0 Recipient refused")),
            (false, false) => Reply::plain(code, format!("{class}.0.0 {text}")),
        }
    }

    /// `550 5.6.2 Message contains bare CR or LF`: the SMTP-smuggling defence.
    pub fn bare_line_ending() -> Reply {
        Reply::new(550, "5.6.2", "Message contains bare CR or LF")
    }

    /// `552 5.3.4 Message size exceeds fixed maximum message size`.
    pub fn too_big() -> Reply {
        Reply::new(
            552,
            "5.3.4",
            "Message size exceeds fixed maximum message size",
        )
    }

    /// `554 5.5.1 No valid recipients`: DATA without an accepted RCPT.
    pub fn no_recipients() -> Reply {
        Reply::new(554, "5.5.1", "No valid recipients")
    }

    /// `555 5.5.4 Unsupported parameter <name>`.
    pub fn unsupported_parameter(name: &str) -> Reply {
        Reply::new(555, "5.5.4", format!("Unsupported parameter {name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_errors_keep_their_code_and_text_and_always_have_a_status() {
        let wire =
            |code, text| String::from_utf8(Reply::mapping_error(code, text).to_bytes()).unwrap();
        assert_eq!(wire(550, "5.1.1 gone away"), "550 5.1.1 gone away\r\n");
        assert_eq!(wire(553, "left us"), "553 5.0.0 left us\r\n");
        assert_eq!(wire(450, "4.2.1 try later"), "450 4.2.1 try later\r\n");
        // A status of the wrong class is text, not a status.
        assert_eq!(wire(450, "5.1.1 x"), "450 4.0.0 5.1.1 x\r\n");
        assert_eq!(wire(550, ""), "550 5.0.0 Recipient refused\r\n");
    }

    #[test]
    fn writes_single_and_multi_line() {
        assert_eq!(Reply::ok().to_bytes(), b"250 2.0.0 Ok\r\n");
        let ehlo = Reply::ehlo("mx", vec!["PIPELINING".into(), "8BITMIME".into()]);
        assert_eq!(
            ehlo.to_bytes(),
            b"250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
        );
        assert_eq!(
            Reply::greeting("mx").to_bytes(),
            b"220 mx ESMTP Mailroom ready\r\n"
        );
    }

    #[test]
    fn text_cannot_break_framing() {
        let r = Reply::unsupported_parameter("X\r\n250 fake");
        assert_eq!(
            r.to_bytes(),
            b"555 5.5.4 Unsupported parameter X  250 fake\r\n"
        );
    }
}
