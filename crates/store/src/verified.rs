//! Logins verified recently: a cache in front of the deliberately slow argon2 check, in the
//! manner of Dovecot's auth cache.
//!
//! A mail client logs in every few minutes with the same password; checking argon2id each time
//! costs tens of milliseconds of CPU per login. After one successful check the cache remembers,
//! for that user and that stored hash, a keyed BLAKE2b MAC of the password under a key drawn at
//! start-up and never stored. A later login with the same password is then verified by one MAC
//! instead of argon2. The password itself is never kept, the MAC is worthless outside this
//! process, an entry only counts while the user's stored hash is the one it was made for (a
//! changed password invalidates it at once, also when changed by another process), and
//! entries expire after a time to live. The cache is bounded.
//!
//! Only as many argon2 checks run at once as there are CPUs, for every protocol together (an
//! argon2id check costs tens of milliseconds of CPU and 19 MiB of memory: a flood of failing
//! logins queues for a slot rather than fill the blocking pool and the memory). A cached login
//! takes no slot, so a correct login that was verified before is never queued behind a
//! guesser's checks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blake2::digest::{KeyInit, Mac};
use blake2::Blake2bMac512;
use tokio::sync::Semaphore;

use crate::password::{self, Verified};
use crate::{Result, User, UsersRepository};

/// Checks passwords against a users repository, remembering the logins it verified.
pub struct VerifiedLogins {
    /// Where users and their password hashes live.
    users: Arc<dyn UsersRepository>,
    /// The MAC key: random per process, so that a leaked entry cannot be attacked offline.
    key: [u8; 32],
    /// How long a verified login is trusted without argon2.
    ttl: Duration,
    /// The most entries kept.
    capacity: usize,
    /// By lower-cased user name.
    entries: Mutex<HashMap<String, Entry>>,
    /// Argon2 checks running at once: one slot per CPU. Taken only around argon2, never for a
    /// cached login.
    checks: Semaphore,
}

/// One verified login.
struct Entry {
    /// The stored hash the password was verified against: the entry only counts while the user
    /// still has this hash.
    password_hash: String,
    /// The keyed MAC of the password.
    mac: [u8; 64],
    /// When argon2 verified it.
    verified_at: Instant,
}

impl std::fmt::Debug for VerifiedLogins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedLogins")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl VerifiedLogins {
    /// A cache in front of `users` trusting a verified login for `ttl`, with at most
    /// `capacity` entries (0 disables the cache).
    pub fn new(users: Arc<dyn UsersRepository>, ttl: Duration, capacity: usize) -> Self {
        let mut key = [0u8; 32];
        // Without randomness the cache would be predictable: run without it rather than fail.
        let capacity = match getrandom::fill(&mut key) {
            Ok(()) => capacity,
            Err(e) => {
                tracing::warn!(error = %e, "no random key; login cache disabled");
                0
            }
        };
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        VerifiedLogins {
            users,
            key,
            ttl,
            capacity,
            entries: Mutex::default(),
            checks: Semaphore::new(cpus),
        }
    }

    /// The users repository behind the cache.
    pub fn users(&self) -> &Arc<dyn UsersRepository> {
        &self.users
    }

    /// Checks `password` for the user called `name` (case-insensitively) and returns the user
    /// when it is right. A cached login costs one MAC; otherwise argon2 runs on the blocking
    /// pool (tens of milliseconds), once a check slot is free. A hash in an older scheme is
    /// upgraded to argon2id on the way, as [`UsersRepository::verify_password`] does.
    pub async fn login(&self, name: &str, password: &str) -> Result<Option<User>> {
        let Some(mut user) = self.users.get(name).await? else {
            // Spend the time a real check takes so that timing does not reveal user names.
            let password = password.to_string();
            let _slot = self.checks.acquire().await;
            password::in_pool(move || password::verify(password::DUMMY_HASH, &password)).await?;
            return Ok(None);
        };
        let key = user.name.to_lowercase();
        let mac = self.mac(password);
        if self.is_cached(&key, &user.password_hash, &mac) {
            return Ok(Some(user));
        }
        let (hash, password) = (user.password_hash.clone(), password.to_string());
        // The semaphore is never closed; an error would only mean no bound.
        let slot = self.checks.acquire().await;
        let upgraded = password::in_pool(move || match password::verify(&hash, &password) {
            Verified::No => None,
            Verified::Yes => Some(None),
            Verified::YesButUpgrade => Some(Some(password::hash(&password))),
        })
        .await?;
        drop(slot);
        match upgraded {
            None => return Ok(None),
            Some(None) => {}
            Some(Some(upgraded)) => {
                if self
                    .users
                    .replace_password_hash(name, &user.password_hash, upgraded.clone())
                    .await?
                {
                    user.password_hash = upgraded;
                }
            }
        }
        self.remember(key, &user.password_hash, mac);
        Ok(Some(user))
    }

    fn mac(&self, password: &str) -> [u8; 64] {
        let mut mac =
            <Blake2bMac512 as KeyInit>::new_from_slice(&self.key).expect("a 32-octet key fits");
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_cached(&self, key: &str, password_hash: &str, mac: &[u8; 64]) -> bool {
        let entries = self.lock();
        entries.get(key).is_some_and(|e| {
            e.password_hash == password_hash
                && e.verified_at.elapsed() < self.ttl
                && password::constant_time_eq(&e.mac, mac)
        })
    }

    fn remember(&self, key: String, password_hash: &str, mac: [u8; 64]) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, e| e.verified_at.elapsed() < self.ttl);
            if entries.len() >= self.capacity {
                // Still full of live entries: drop the oldest. Rare, and linear only then.
                if let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.verified_at)
                    .map(|(k, _)| k.clone())
                {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(
            key,
            Entry {
                password_hash: password_hash.to_string(),
                mac,
                verified_at: Instant::now(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::FileUsersRepository;
    use crate::Blocking;

    async fn setup(capacity: usize) -> (tempfile::TempDir, VerifiedLogins) {
        let dir = tempfile::tempdir().unwrap();
        let users = Arc::new(Blocking::new(
            FileUsersRepository::open(dir.path()).unwrap(),
        ));
        users.add(&User::new("Alice", "pass word")).await.unwrap();
        users.add(&User::new("bob", "secret")).await.unwrap();
        let logins = VerifiedLogins::new(users, Duration::from_secs(3600), capacity);
        (dir, logins)
    }

    #[tokio::test]
    async fn verifies_caches_and_forgets_a_changed_password() {
        let (_dir, logins) = setup(10).await;
        assert!(logins.login("alice", "wrong").await.unwrap().is_none());
        assert!(logins.lock().is_empty(), "a failure is not cached");
        let user = logins.login("ALICE", "pass word").await.unwrap().unwrap();
        assert_eq!(user.name, "Alice");
        assert_eq!(logins.lock().len(), 1);
        // Cached now: the right password passes, a wrong one still fails.
        assert!(logins.login("alice", "pass word").await.unwrap().is_some());
        assert!(logins.login("alice", "pass wor").await.unwrap().is_none());
        assert!(logins.login("nobody", "pass word").await.unwrap().is_none());

        // A new password (another hash) invalidates the entry: the old one fails at once.
        let mut alice = logins.users().get("alice").await.unwrap().unwrap();
        alice.set_password("new one", false);
        logins.users().update(&alice).await.unwrap();
        assert!(logins.login("alice", "pass word").await.unwrap().is_none());
        assert!(logins.login("alice", "new one").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn stays_within_its_capacity_and_ttl() {
        let (_dir, logins) = setup(1).await;
        assert!(logins.login("alice", "pass word").await.unwrap().is_some());
        assert!(logins.login("bob", "secret").await.unwrap().is_some());
        {
            let entries = logins.lock();
            assert_eq!(entries.len(), 1);
            assert!(entries.contains_key("bob"));
        }

        let (_dir, expired) = setup(10).await;
        let expired = VerifiedLogins {
            ttl: Duration::ZERO,
            ..expired
        };
        let alice = expired.users().get("alice").await.unwrap().unwrap();
        let mac = expired.mac("pass word");
        expired.remember("alice".into(), &alice.password_hash, mac);
        assert!(!expired.is_cached("alice", &alice.password_hash, &mac));
    }

    /// A login verified before takes no argon2 slot: with every slot taken by checks of
    /// wrong passwords, it is answered at once, while a login that needs argon2 waits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cached_login_does_not_queue_behind_argon2_checks() {
        let (_dir, logins) = setup(10).await;
        assert!(logins.login("alice", "pass word").await.unwrap().is_some());
        let logins = Arc::new(logins);
        let slots = logins.checks.available_permits() as u32;
        let held = logins.checks.acquire_many(slots).await.unwrap();
        let quick =
            tokio::time::timeout(Duration::from_secs(5), logins.login("alice", "pass word"));
        assert!(quick.await.expect("not queued").unwrap().is_some());
        let queued = tokio::spawn({
            let logins = logins.clone();
            async move { logins.login("bob", "secret").await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!queued.is_finished(), "argon2 checks are bounded");
        drop(held);
        assert!(queued.await.unwrap().unwrap().is_some());
    }

    #[tokio::test]
    async fn upgrades_a_james_hash() {
        let (_dir, logins) = setup(10).await;
        let mut legacy = User::new("legacy", "unused");
        legacy.password_hash = "5en6G6MezRroT3XKqkdPOmY/BfQ=".into();
        logins.users().add(&legacy).await.unwrap();
        assert!(logins.login("legacy", "secret").await.unwrap().is_some());
        let stored = logins
            .users()
            .get("legacy")
            .await
            .unwrap()
            .unwrap()
            .password_hash;
        assert!(stored.starts_with("$argon2id$"));
        assert!(logins.login("legacy", "secret").await.unwrap().is_some());
    }
}
