//! SMTP AUTH over the users repository: the [`mailroom_smtp::Authenticator`] of every SMTP
//! listener. Passwords are checked through the same [`VerifiedLogins`] cache as POP3 logins
//! (argon2 on the blocking pool, then a keyed MAC for a while), and `<verifyIdentity>` asks
//! whether an address in a local domain belongs to the authenticated user: their own, that of
//! a user whose mail goes to them (an enabled alias), or a virtual-table address mapped to
//! them in a table the processor tree reads.
//!
//! It holds no session state and does no throttling: the SMTP driver does that with the
//! shared `AuthThrottle`.

use std::sync::Arc;

use async_trait::async_trait;
use mailroom_config::James;
use mailroom_mailet::MailAddress;
use mailroom_smtp::{AuthVerdict, Authenticator, SenderVerdict};
use mailroom_store::mappings::{Source, Target};
use mailroom_store::{MappingsRepository, StoreError, VerifiedLogins};

/// Checks SMTP AUTH logins and sender ownership.
pub struct SmtpLogins {
    /// Password checks, cached after argon2 (shared with POP3).
    logins: Arc<VerifiedLogins>,
    /// The virtual user tables.
    mappings: Arc<dyn MappingsRepository>,
    /// The tables the processor tree's mapping mailets read: a mapping elsewhere delivers
    /// nothing, so it makes nobody an owner.
    tables: Vec<String>,
    /// Local domains and the `<usernames>` flags.
    james: James,
}

impl SmtpLogins {
    /// An authenticator over `logins` that reads `tables` of `mappings` for aliases.
    pub fn new(
        logins: Arc<VerifiedLogins>,
        mappings: Arc<dyn MappingsRepository>,
        tables: Vec<String>,
        james: James,
    ) -> SmtpLogins {
        SmtpLogins {
            logins,
            mappings,
            tables,
            james,
        }
    }

    /// The user name to check for a login name: `alice@` a local domain is `alice`, as mail
    /// clients often log in with the whole address.
    fn user_name<'a>(&self, login: &'a str) -> &'a str {
        match login.rsplit_once('@') {
            Some((local, domain)) if self.james.is_local_domain(domain) => local,
            _ => login,
        }
    }

    async fn owns(&self, user: &str, sender: &MailAddress) -> Result<bool, StoreError> {
        let same = |name: &str| name.eq_ignore_ascii_case(user);
        if self.james.usernames.enable_aliases {
            match self.logins.users().get(sender.local_part()).await {
                Ok(Some(other))
                    if other.alias_enabled && other.alias.as_deref().is_some_and(same) =>
                {
                    return Ok(true)
                }
                Ok(_) | Err(StoreError::InvalidName(..)) => {}
                Err(e) => return Err(e),
            }
        }
        // Only the exact address as a source: a catch-all (`*@domain`) makes nobody the owner
        // of every address in the domain.
        let Ok(source) = Source::parse(&sender.to_string()) else {
            return Ok(false);
        };
        for table in &self.tables {
            for target in self.mappings.get(table, &source).await? {
                let mine = match &target {
                    Target::User(name) => same(name),
                    Target::Address(address) => {
                        same(address.local_part()) && self.james.is_local_domain(address.domain())
                    }
                    _ => false,
                };
                if mine {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

#[async_trait]
impl Authenticator for SmtpLogins {
    async fn authenticate(&self, user: &str, password: &str) -> AuthVerdict {
        let name = self.user_name(user);
        // Argon2 checks are bounded there (shared with POP3); a cached login is not queued.
        match self.logins.login(name, password).await {
            Ok(Some(user)) => AuthVerdict::Accepted(user.name),
            Ok(None) | Err(StoreError::InvalidName(..)) => AuthVerdict::Rejected,
            Err(error) => {
                tracing::error!(user = %name, %error, "SMTP AUTH: store failure");
                AuthVerdict::Unavailable
            }
        }
    }

    async fn may_send_as(&self, user: &str, sender: &MailAddress) -> SenderVerdict {
        match self.owns(user, sender).await {
            Ok(true) => SenderVerdict::Own,
            Ok(false) => SenderVerdict::NotOwn,
            Err(error) => {
                tracing::error!(%user, %sender, %error, "verifyIdentity: store failure");
                SenderVerdict::Unavailable
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mailroom_config::Config;
    use mailroom_store::file::{FileMappingsRepository, FileUsersRepository};
    use mailroom_store::mappings::DEFAULT_TABLE;
    use mailroom_store::{Blocking, User, UsersRepository};

    use super::*;

    /// alice (password `a pw`), bob, and `sales` whose mail goes to alice; in the default
    /// table `team@localhost` maps to alice and `*@localhost` to bob.
    async fn logins(dir: &std::path::Path) -> SmtpLogins {
        let users: Arc<dyn UsersRepository> = Arc::new(Blocking::new(
            FileUsersRepository::open(&dir.join("users")).unwrap(),
        ));
        users.add(&User::new("alice", "a pw")).await.unwrap();
        users.add(&User::new("bob", "b pw")).await.unwrap();
        let mut sales = User::new("sales", "s pw");
        sales.alias = Some("Alice".into());
        sales.alias_enabled = true;
        users.add(&sales).await.unwrap();
        let mappings: Arc<dyn MappingsRepository> = Arc::new(Blocking::new(
            FileMappingsRepository::open(&dir.join("virtual")).unwrap(),
        ));
        for (source, target) in [("team@localhost", "alice"), ("*@localhost", "bob")] {
            mappings
                .add(
                    DEFAULT_TABLE,
                    &Source::parse(source).unwrap(),
                    &Target::parse(target).unwrap(),
                )
                .await
                .unwrap();
        }
        let mut james = Config::embedded_default(Some(dir)).unwrap().james;
        james.usernames.enable_aliases = true;
        let cache = Arc::new(VerifiedLogins::new(users, Duration::from_secs(60), 10));
        SmtpLogins::new(cache, mappings, vec![DEFAULT_TABLE.to_string()], james)
    }

    fn address(text: &str) -> MailAddress {
        MailAddress::parse(text).unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn logins_and_sender_ownership() {
        let dir = tempfile::tempdir().unwrap();
        let logins = logins(dir.path()).await;
        let accepted = |name: &str| AuthVerdict::Accepted(name.to_string());
        assert_eq!(
            logins.authenticate("alice", "a pw").await,
            accepted("alice")
        );
        assert_eq!(
            logins.authenticate("ALICE", "a pw").await,
            accepted("alice")
        );
        assert_eq!(
            logins.authenticate("alice@localhost", "a pw").await,
            accepted("alice")
        );
        assert_eq!(
            logins.authenticate("alice", "wrong").await,
            AuthVerdict::Rejected
        );
        assert_eq!(
            logins.authenticate("alice@elsewhere.example", "a pw").await,
            AuthVerdict::Rejected
        );
        // A name that cannot be a user is a wrong login, not a store failure.
        assert_eq!(
            logins.authenticate("../etc", "x").await,
            AuthVerdict::Rejected
        );
        assert_eq!(
            logins.authenticate("nobody", "x").await,
            AuthVerdict::Rejected
        );

        for (sender, verdict) in [
            ("sales@localhost", SenderVerdict::Own),
            ("team@localhost", SenderVerdict::Own),
            ("bob@localhost", SenderVerdict::NotOwn),
            ("a/b@localhost", SenderVerdict::NotOwn),
        ] {
            let got = logins.may_send_as("alice", &address(sender)).await;
            assert_eq!(got, verdict, "{sender}");
        }
        // The catch-all makes nobody the owner of every address.
        assert_eq!(
            logins
                .may_send_as("bob", &address("anything@localhost"))
                .await,
            SenderVerdict::NotOwn
        );
    }
}
