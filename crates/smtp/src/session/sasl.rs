//! SMTP AUTH (RFC 4954) inside the session: when AUTH is offered and allowed, the PLAIN
//! (RFC 4616) and LOGIN exchanges, and the answers to the driver's credential and sender
//! checks. Like the rest of the session it does no I/O and checks no password: the credentials
//! go to the driver in an [`Outcome::Authenticate`](super::Outcome::Authenticate).
//!
//! CRAM-MD5 is not offered: it needs a plaintext-equivalent secret on the server, and the
//! users repository keeps argon2id hashes only.

use std::fmt;

use base64::Engine;
use mailroom_mailet::MailAddress;

use super::{Mode, Session, MAX_AUTH_FAILURES};
use crate::codec::LineEvent;
use crate::reply::Reply;
use crate::{AuthPolicy, AuthVerdict, SenderVerdict};

/// `Username:` in base64: the first LOGIN challenge.
const USERNAME_CHALLENGE: &str = "VXNlcm5hbWU6";
/// `Password:` in base64: the second LOGIN challenge.
const PASSWORD_CHALLENGE: &str = "UGFzc3dvcmQ6";

/// A user name and password from an AUTH exchange. Its `Debug` form hides the password, so
/// that no log line ever shows one.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The login name as the client sent it.
    pub user: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Where an AUTH exchange stands: which response line comes next.
#[derive(Debug)]
pub(super) enum SaslStep {
    /// PLAIN without an initial response: `authzid NUL authcid NUL password`.
    Plain,
    /// LOGIN: the user name.
    LoginUser,
    /// LOGIN: the password of `user`.
    LoginPassword {
        /// The name given in the previous step.
        user: String,
    },
}

impl Session {
    /// Whether this listener does AUTH at all (`<authRequired>` true or announce, with an
    /// authenticator to check the passwords).
    pub(super) fn auth_enabled(&self) -> bool {
        self.settings.authenticator.is_some() && self.settings.auth != AuthPolicy::Off
    }

    /// Whether the connection is good enough for a password: TLS, or `<requireTLSForAuth>`
    /// is off.
    fn auth_transport_ok(&self) -> bool {
        self.tls.is_some() || !self.settings.require_tls_for_auth
    }

    /// Whether EHLO advertises AUTH: `announce` and submission listeners to everybody, `true`
    /// (as James 2.3) only to clients that may not relay by address; never before TLS when
    /// TLS is required for it.
    pub(super) fn auth_offered(&self) -> bool {
        self.auth_enabled()
            && self.auth_transport_ok()
            && match self.settings.auth {
                AuthPolicy::Announce => true,
                AuthPolicy::Required => {
                    self.settings.submission || !(self.settings.relay_allowed)(self.peer)
                }
                AuthPolicy::Off => false,
            }
    }

    /// The permission gate of AUTH (part of [`Session::gate`]).
    pub(super) fn auth_gate(&self) -> Result<(), Reply> {
        if !self.auth_enabled() {
            return Err(Reply::disabled("AUTH"));
        }
        if !self.helo.as_ref().is_some_and(|h| h.extended) {
            return Err(Reply::bad_sequence("send EHLO first"));
        }
        if self.auth_user.is_some() {
            return Err(Reply::bad_sequence("already authenticated"));
        }
        if self.txn.is_some() {
            return Err(Reply::bad_sequence(
                "AUTH not permitted during a mail transaction",
            ));
        }
        if !self.auth_transport_ok() {
            return Err(Reply::encryption_required());
        }
        Ok(())
    }

    /// `AUTH mechanism [initial-response]`, once the gate let it through: the first
    /// challenge, or (with an initial response) the next step at once.
    pub(super) fn start_auth(&mut self, mechanism: &str, initial: Option<String>) -> Option<Reply> {
        let step = match mechanism {
            "PLAIN" => SaslStep::Plain,
            "LOGIN" => SaslStep::LoginUser,
            _ => return Some(Reply::unknown_mechanism()),
        };
        match initial {
            Some(response) => self.sasl_step(step, response.as_bytes()),
            None => {
                let challenge = match step {
                    SaslStep::LoginUser => USERNAME_CHALLENGE,
                    _ => "",
                };
                self.mode = Mode::Sasl(step);
                Some(Reply::challenge(challenge))
            }
        }
    }

    /// A response line of the exchange (or an overlong one, which ends it).
    pub(super) fn sasl_input(&mut self, event: LineEvent) -> Option<Reply> {
        let Mode::Sasl(step) = std::mem::replace(&mut self.mode, Mode::Command) else {
            return None;
        };
        match event {
            LineEvent::TooLong => Some(Reply::line_too_long()),
            LineEvent::Line(line) => self.sasl_step(step, &line),
        }
    }

    /// One client response at `step`: the next challenge, the credentials for the driver (no
    /// reply yet), or the error that ends the exchange.
    fn sasl_step(&mut self, step: SaslStep, response: &[u8]) -> Option<Reply> {
        let decoded = match decode(response) {
            Ok(decoded) => decoded,
            Err(reply) => return Some(reply),
        };
        let credentials = match step {
            SaslStep::Plain => match plain(&decoded) {
                Ok(credentials) => credentials,
                Err(reply) => return Some(reply),
            },
            SaslStep::LoginUser => {
                return Some(match String::from_utf8(decoded) {
                    Ok(user) if valid_name(&user) => {
                        self.mode = Mode::Sasl(SaslStep::LoginPassword { user });
                        Reply::challenge(PASSWORD_CHALLENGE)
                    }
                    _ => Reply::bad_sasl_response("Malformed LOGIN user name"),
                });
            }
            SaslStep::LoginPassword { user } => match String::from_utf8(decoded) {
                Ok(password) => Credentials { user, password },
                Err(_) => return Some(Reply::bad_sasl_response("Malformed LOGIN password")),
            },
        };
        self.mode = Mode::AwaitAuth(credentials);
        None
    }

    /// Answers [`Outcome::Authenticate`](super::Outcome::Authenticate): `235` and the session
    /// is authenticated as the name the check gave, or `535`/`454`. Command input resumes.
    /// Does nothing in any other state.
    pub fn authenticated(&mut self, verdict: AuthVerdict, out: &mut Vec<u8>) {
        if !matches!(self.mode, Mode::AwaitAuth(_)) {
            return;
        }
        self.mode = Mode::Command;
        let reply = match verdict {
            AuthVerdict::Accepted(name) => {
                self.auth_user = Some(name);
                Reply::auth_ok()
            }
            AuthVerdict::Rejected => {
                self.auth_failures += 1;
                Reply::auth_failed()
            }
            AuthVerdict::Unavailable => Reply::auth_unavailable(),
        };
        self.reply(reply, out);
        if self.auth_failures >= MAX_AUTH_FAILURES && !matches!(self.mode, Mode::Closed) {
            Reply::too_many_auth_failures(&self.settings.hello_name).write_to(out);
            self.mode = Mode::Closed;
        }
    }

    /// `<verifyIdentity>` at MAIL FROM: the user and sender to ask the driver about, when an
    /// authenticated client names an address in a local domain that is not plainly the
    /// user's own. The null sender and addresses in other domains are not checked.
    pub(super) fn identity_to_check(
        &self,
        sender: Option<&MailAddress>,
    ) -> Option<(String, MailAddress)> {
        let user = self.auth_user.as_ref()?;
        let sender = sender?;
        if !self.settings.verify_identity
            || !(self.settings.is_local_domain)(sender.domain())
            || sender.local_part().eq_ignore_ascii_case(user)
        {
            return None;
        }
        Some((user.clone(), sender.clone()))
    }

    /// Answers [`Outcome::CheckSender`](super::Outcome::CheckSender): the transaction starts
    /// (`250`), or the MAIL is refused (`553 5.7.1`, or `451` when the lookup failed).
    /// Command input resumes. Does nothing in any other state.
    pub fn sender_checked(&mut self, verdict: SenderVerdict, out: &mut Vec<u8>) {
        if !matches!(self.mode, Mode::AwaitSender { .. }) {
            return;
        }
        let Mode::AwaitSender {
            user,
            sender,
            params,
        } = std::mem::replace(&mut self.mode, Mode::Command)
        else {
            return;
        };
        let reply = match verdict {
            SenderVerdict::Own => {
                self.start_transaction(Some(sender), params);
                Reply::sender_ok()
            }
            SenderVerdict::NotOwn => Reply::sender_not_owned(&sender.to_string(), &user),
            SenderVerdict::Unavailable => Reply::sender_lookup_failed(),
        };
        self.reply(reply, out);
    }
}

/// A client response: `*` cancels (RFC 4954 §4), `=` is an empty initial response, anything
/// else must be base64.
fn decode(response: &[u8]) -> Result<Vec<u8>, Reply> {
    let response = response.trim_ascii();
    match response {
        b"*" => Err(Reply::auth_cancelled()),
        b"=" => Ok(Vec::new()),
        _ => base64::engine::general_purpose::STANDARD
            .decode(response)
            .map_err(|_| Reply::bad_sasl_response("Invalid base64 data")),
    }
}

/// The PLAIN message (RFC 4616): `authzid NUL authcid NUL password`. An authorization
/// identity other than the login name is refused: nobody may act as another user.
fn plain(decoded: &[u8]) -> Result<Credentials, Reply> {
    let malformed = || Reply::bad_sasl_response("Malformed PLAIN response");
    let text = std::str::from_utf8(decoded).map_err(|_| malformed())?;
    let mut parts = text.splitn(3, '\0');
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    if !valid_name(authcid) || password.contains('\0') {
        return Err(malformed());
    }
    if !authzid.is_empty() && !authzid.eq_ignore_ascii_case(authcid) {
        return Err(Reply::auth_other_identity());
    }
    Ok(Credentials {
        user: authcid.to_string(),
        password: password.to_string(),
    })
}

/// A login name worth looking up: not empty, no control characters.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(char::is_control)
}
