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
        }
    }
}
