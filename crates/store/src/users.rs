//! The user record every users repository stores.

use serde::{Deserialize, Serialize};

/// A user account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The login name, with the case it was created with.
    pub name: String,
    /// The password hash: an argon2id PHC string (older schemes are upgraded at login).
    pub password_hash: String,
    /// Another local user that receives this user's mail.
    #[serde(default)]
    pub alias: Option<String>,
    /// Whether `alias` is in force.
    #[serde(default)]
    pub alias_enabled: bool,
    /// An address this user's mail is forwarded to.
    #[serde(default)]
    pub forward: Option<String>,
    /// Whether `forward` is in force.
    #[serde(default)]
    pub forward_enabled: bool,
    /// The shared secret for POP3 APOP (RFC 1939 §7), which must be kept readable. Set with the
    /// password only where APOP is enabled (`<enableAPOP>`); `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apop_secret: Option<String>,
}

impl User {
    /// A user with a password (hashed here with argon2id) and no alias or forward.
    pub fn new(name: &str, password: &str) -> Self {
        User {
            name: name.to_string(),
            password_hash: crate::password::hash(password),
            alias: None,
            alias_enabled: false,
            forward: None,
            forward_enabled: false,
            apop_secret: None,
        }
    }

    /// Sets a new password: its argon2id hash, and the password itself as the APOP secret when
    /// `keep_apop_secret` (APOP is enabled); otherwise any old APOP secret is dropped.
    pub fn set_password(&mut self, password: &str, keep_apop_secret: bool) {
        self.password_hash = crate::password::hash(password);
        self.apop_secret = keep_apop_secret.then(|| password.to_string());
    }
}
