//! [`Secret`]: a password or other credential that `Debug` never prints.
//!
//! Configurations and settings are logged with `{:?}`; a field of this type shows as
//! `Secret(***)` there, so a struct holding one can simply derive `Debug`. The value is read
//! only through [`Secret::expose`], which makes every use easy to find.

use std::fmt;

/// A secret text (a password, a shared secret). No `Display`; `Debug` prints `Secret(***)`.
///
/// Equality is for comparing configurations; check a credential a client offers with a
/// constant-time comparison (`mailroom_store::password::constant_time_eq`) of `expose()`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret text itself: for checking or sending it, never for logging it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_hides_the_value_and_expose_gives_it() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(Secret(***))");
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(s, Secret::new(String::from("hunter2")));
        assert!(Secret::default().is_empty() && !s.is_empty());
    }
}
