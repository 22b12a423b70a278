//! A list's members in a users repository: one user per member address.
//!
//! User names cannot hold `@` (nor be longer than 64 octets), so a member's user name is its
//! address with `%` and the characters a user name refuses written `%XX`; an address whose
//! name would be longer is stored under `%h` and a digest of the address. Either way the
//! record's `forward` field holds the address as given (never enabled: this repository is not
//! the server's users), so `mailroom` tools that list users show it.

use std::sync::Arc;

use mailroom_mailet::{MailAddress, MailetError};
use mailroom_store::{StoreError, User, UsersRepository};

use super::ListStores;

/// The longest user name (as the store checks it).
const MAX_NAME: usize = 64;

/// One list's members: the repository `<repositoryName>` names, reached once it is open.
#[derive(Clone)]
pub struct Members {
    stores: Arc<ListStores>,
    repository: String,
}

impl Members {
    pub(super) fn new(stores: Arc<ListStores>, repository: &str) -> Self {
        Members {
            stores,
            repository: repository.to_string(),
        }
    }

    /// Runs a repository call on the server's runtime.
    fn call<T, F>(&self, op: impl FnOnce(Arc<dyn UsersRepository>) -> F) -> Result<T, MailetError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        let (Some(repositories), Some(runtime)) =
            (self.stores.repositories.get(), &self.stores.runtime)
        else {
            return Err(MailetError::temporary(
                "the list repositories are not open yet",
            ));
        };
        let Some(repository) = repositories.get(&self.repository) else {
            return Err(MailetError::permanent(format!(
                "users repository {} is not open",
                self.repository
            )));
        };
        runtime.block_on(op(repository.clone())).map_err(|e| {
            let temporary = matches!(e, StoreError::Io(_) | StoreError::InUse(_));
            let base = if temporary {
                MailetError::temporary(format!("list repository {}", self.repository))
            } else {
                MailetError::permanent(format!("list repository {}", self.repository))
            };
            base.with_cause(e)
        })
    }

    /// Every member, in the repository's order. A record whose address does not parse is
    /// logged and skipped (as James does).
    pub fn list(&self) -> Result<Vec<MailAddress>, MailetError> {
        let names = self.call(|r| async move { r.list().await })?;
        let mut members = Vec::with_capacity(names.len());
        for name in names {
            let address = match decode(&name) {
                Some(address) => Some(address),
                // A digest name: the address is in the record.
                None => self
                    .call(|r| async move { r.get(&name).await })?
                    .and_then(|u| u.forward),
            };
            match address.as_deref().map(MailAddress::parse) {
                Some(Ok(a)) => members.push(a),
                _ => tracing::warn!(
                    repository = %self.repository,
                    member = ?address,
                    "invalid subscriber address skipped"
                ),
            }
        }
        Ok(members)
    }

    /// Whether `address` is a member.
    pub fn contains(&self, address: &MailAddress) -> Result<bool, MailetError> {
        let name = key(address);
        Ok(self.call(|r| async move { r.get(&name).await })?.is_some())
    }

    /// Adds `address`; `false` when it was a member already.
    pub fn add(&self, address: &MailAddress) -> Result<bool, MailetError> {
        let user = User {
            name: key(address),
            // No password: a member is not an account.
            password_hash: String::new(),
            alias: None,
            alias_enabled: false,
            forward: Some(address.to_string()),
            forward_enabled: false,
            apop_secret: None,
        };
        match self.call(|r| async move { r.add(&user).await }) {
            Ok(()) => Ok(true),
            Err(e) if already_there(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes `address`; `false` when it was not a member.
    pub fn remove(&self, address: &MailAddress) -> Result<bool, MailetError> {
        let name = key(address);
        self.call(|r| async move { r.remove(&name).await })
    }
}

fn already_there(e: &MailetError) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(StoreError::AlreadyExists(_)) = s.downcast_ref::<StoreError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Whether a character is written as is in a member's user name.
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$&'*+-=?^_`{|}~.".contains(c)
}

/// The user name of a member.
pub(super) fn key(address: &MailAddress) -> String {
    let text = address.to_string();
    let mut name = String::with_capacity(text.len() + 8);
    let mut previous = None;
    for (i, c) in text.chars().enumerate() {
        // `.` first or after another `.` would be refused (`..`, a hidden file).
        let dot_refused = c == '.' && (i == 0 || previous == Some('.'));
        if plain(c) && !dot_refused {
            name.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                name.push_str(&format!("%{b:02X}"));
            }
        }
        previous = Some(c);
    }
    if name.len() <= MAX_NAME {
        name
    } else {
        format!(
            "%h{:016x}{:016x}",
            fnv1a(&text, 0xcbf2_9ce4_8422_2325),
            fnv1a(&text, 0x6c62_272e_07bb_0142)
        )
    }
}

/// The address a user name holds; `None` for a digest name (or a name that is not a member's).
pub(super) fn decode(name: &str) -> Option<String> {
    if name.starts_with("%h") {
        return None;
    }
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = name.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// FNV-1a, 64 bits, from `basis`: stable across builds (unlike the standard hasher).
fn fnv1a(text: &str, basis: u64) -> u64 {
    text.bytes().fold(basis, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
