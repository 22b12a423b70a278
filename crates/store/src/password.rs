//! Password hashing: argon2id for every new hash; James 2.3's SHA-1 hashes are accepted so that
//! an imported users repository keeps working, and are upgraded at the next login.
//!
//! Every argon2 computation of a running server goes through [`in_pool`]: a few threads of
//! their own (one per CPU, at most four), started at the first use and kept. An argon2id check
//! takes 19 MiB; run on tokio's blocking pool, each of its many threads kept such blocks in
//! its own malloc arena, and a flood of failing logins grew the process by hundreds of MiB
//! that were never given back. On a fixed set of threads the memory is one block per thread,
//! reused from one check to the next, whatever the load.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::PasswordHasher;
use argon2::Argon2;
use base64::Engine;
use sha1::{Digest, Sha1};

/// A valid argon2id hash of a random password, verified against when a user does not exist so
/// that both cases take the same time.
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2VrYwhO0yFMsVgrGEmSbUaEH5PrVgF8Pu3bR9oXMNbw";

/// The outcome of checking a password.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    /// Wrong password, or an unreadable hash.
    No,
    /// Right password.
    Yes,
    /// Right password, stored in an old scheme: store [`hash`] of it instead.
    YesButUpgrade,
}

/// Hashes a password with argon2id (default parameters) and a random salt, as a PHC string,
/// in this thread's reused argon2 memory.
pub fn hash(password: &str) -> String {
    let mut salt = [0u8; 16];
    if getrandom::fill(&mut salt).is_err() {
        // No randomness here: the library's own salt source says why, the hard way.
        return Argon2::default()
            .hash_password(password.as_bytes())
            .expect("argon2 with default parameters cannot fail")
            .to_string();
    }
    hash_with_salt(password.as_bytes(), &salt).expect("argon2 with default parameters cannot fail")
}

/// The argon2id PHC string of `password` with `salt`, in this thread's reused memory.
fn hash_with_salt(password: &[u8], salt: &[u8]) -> Option<String> {
    use argon2::password_hash::phc::{Output, ParamsString, Salt};
    let params = argon2::Params::default();
    let blocks = params.block_count();
    let output_len = params
        .output_len()
        .unwrap_or(argon2::Params::DEFAULT_OUTPUT_LEN);
    let argon = Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params.clone(),
    );
    let mut out = vec![0u8; output_len];
    MEMORY
        .with(|memory| {
            let mut memory = memory.borrow_mut();
            if memory.len() < blocks {
                memory.resize(blocks, argon2::Block::default());
            }
            argon.hash_password_into_with_memory(password, salt, &mut out, &mut memory[..blocks])
        })
        .ok()?;
    let phc = PasswordHash {
        algorithm: argon2::Algorithm::Argon2id.ident(),
        version: Some(argon2::Version::V0x13.into()),
        params: ParamsString::try_from(&params).ok()?,
        salt: Some(Salt::new(salt).ok()?),
        hash: Some(Output::new(&out).ok()?),
    };
    Some(phc.to_string())
}

/// Checks `password` against a stored hash: an argon2 PHC string, `{SHA}base64` or James 2.3's
/// bare base64 SHA-1.
pub fn verify(stored: &str, password: &str) -> Verified {
    if stored.starts_with("$argon2") {
        return if verify_argon2(stored, password.as_bytes()) {
            Verified::Yes
        } else {
            Verified::No
        };
    }
    let sha = stored.strip_prefix("{SHA}").unwrap_or(stored);
    let digest = base64::engine::general_purpose::STANDARD.encode(Sha1::digest(password));
    if !sha.is_empty() && constant_time_eq(sha.as_bytes(), digest.as_bytes()) {
        Verified::YesButUpgrade
    } else {
        Verified::No
    }
}

/// A job for the hashing threads.
type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads' queue, started at the first [`in_pool`].
fn pool() -> &'static std::sync::Mutex<std::sync::mpsc::Sender<Job>> {
    static POOL: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        for n in 0..threads {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || loop {
                    let job = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(poisoned) => poisoned.into_inner().recv(),
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        std::sync::Mutex::new(jobs)
    })
}

/// Runs `work` (argon2: [`hash`], [`verify`]) on the hashing threads and waits for it without
/// blocking the caller's runtime thread. Jobs queue when every thread is busy. A panic in
/// `work` is returned as an error.
pub async fn in_pool<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        let _ = done.send(outcome);
    });
    let sent = match pool().lock() {
        Ok(jobs) => jobs.send(job),
        Err(poisoned) => poisoned.into_inner().send(job),
    };
    if sent.is_err() {
        return Err(std::io::Error::other("no password hashing thread"));
    }
    match result.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_panic)) => Err(std::io::Error::other("password hashing panicked")),
        Err(_) => Err(std::io::Error::other("no password hashing thread")),
    }
}

/// The most argon2 memory a stored hash may ask for, in 1 KiB blocks (256 MiB): a hash asking
/// for more is refused rather than allocated.
const MAX_BLOCKS: usize = 256 * 1024;

std::thread_local! {
    /// This thread's argon2 memory, kept from one check to the next: reused, not allocated
    /// (19 MiB) and freed for every check.
    static MEMORY: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Checks `password` against an argon2 PHC string, in this thread's reused memory.
fn verify_argon2(stored: &str, password: &[u8]) -> bool {
    let Ok(h) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&h.salt, &h.hash) else {
        return false;
    };
    let Ok(algorithm) = argon2::Algorithm::try_from(h.algorithm.as_str()) else {
        return false;
    };
    let version = match h.version.map(argon2::Version::try_from) {
        None => argon2::Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let Ok(params) = argon2::Params::try_from(&h) else {
        return false;
    };
    let blocks = params.block_count();
    if blocks > MAX_BLOCKS {
        tracing::warn!(blocks, "an argon2 hash asks for too much memory; refused");
        return false;
    }
    let argon = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    let hashed = MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        if memory.len() < blocks {
            memory.resize(blocks, argon2::Block::default());
        }
        argon.hash_password_into_with_memory(
            password,
            salt.as_ref(),
            &mut out,
            &mut memory[..blocks],
        )
    });
    hashed.is_ok() && constant_time_eq(&out, expected.as_bytes())
}

/// Compares two secrets in time that does not depend on where they differ (only on their
/// lengths). The one such comparison of the workspace: passwords, APOP digests, MACs.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early exit.
    a.len() == b.len() && std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"Secret"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret", b""));
    }

    #[test]
    fn argon2id_round_trip() {
        let h = hash("correct horse battery staple");
        assert!(h.starts_with("$argon2id$"));
        assert_eq!(verify(&h, "correct horse battery staple"), Verified::Yes);
        assert_eq!(verify(&h, "wrong"), Verified::No);
        assert_eq!(verify(DUMMY_HASH, "anything"), Verified::No);
        // The library itself accepts the hashes made in reused memory.
        let parsed = PasswordHash::new(&h).unwrap();
        use argon2::password_hash::PasswordVerifier;
        assert!(Argon2::default()
            .verify_password(b"correct horse battery staple", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"wrong", &parsed)
            .is_err());
        assert_ne!(hash("same"), hash("same"), "a salt of its own each time");
    }

    #[test]
    fn james_sha1_is_accepted_and_flagged() {
        // base64(SHA-1("secret")), the form James 2.3 wrote.
        let james = "5en6G6MezRroT3XKqkdPOmY/BfQ=";
        assert_eq!(verify(james, "secret"), Verified::YesButUpgrade);
        assert_eq!(
            verify(&format!("{{SHA}}{james}"), "secret"),
            Verified::YesButUpgrade
        );
        assert_eq!(verify(james, "Secret"), Verified::No);
        assert_eq!(verify("", ""), Verified::No);
    }
}

#[cfg(test)]
mod dummy_hash_tests {
    #[test]
    fn dummy_hash_is_a_real_argon2id_hash() {
        assert!(argon2::password_hash::phc::PasswordHash::new(super::DUMMY_HASH).is_ok());
    }
}
