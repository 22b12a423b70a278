//! Inboxes as Maildirs: `<root>/<user>/{tmp,new,cur}`.
//!
//! Delivery follows the Maildir protocol — a message is written to `tmp/<unique>`, made durable,
//! and only then renamed into `new/<unique>` — with a group commit in the middle:
//! [`InboxRepository::deliver`] writes the file to `tmp/`, and [`InboxRepository::sync`] makes a
//! whole batch durable at once (one `syncfs` for all the files, the renames into `new/`, then
//! the directories). A reader never sees a message in `new/` that is not whole and durable. The
//! unique name is `<secs>.M<usecs>P<pid>Q<n>.<host>,S=<size>` (the `,S=` size field is the one
//! Dovecot writes and reads).

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use mailroom_mailet::Message;

use super::fsutil::{create_dir_durable, sync_dir};
use crate::{validate_user_name, InboxRepository, Result};

/// The inbox repository of Maildirs under one root.
#[derive(Debug)]
pub struct Maildir {
    root: PathBuf,
    /// The root, kept open for `syncfs`.
    root_dir: File,
    host: String,
    /// Users whose Maildir is known to exist.
    known_users: Mutex<HashSet<String>>,
    /// Deliveries written to `tmp/` and waiting for the next group commit.
    commits: Mutex<Commits>,
    committed: Condvar,
}

/// The group commit's state.
#[derive(Debug, Default)]
struct Commits {
    /// Sequence number of the last delivery written.
    written: u64,
    /// Every delivery up to this number is durable and in `new/`.
    done: u64,
    /// Whether a caller is committing a batch now.
    running: bool,
    /// Deliveries not yet in a batch.
    pending: Vec<Pending>,
    /// Set for good by the first failure: after a failed sync nothing more is trusted.
    poisoned: Option<io::ErrorKind>,
}

/// One delivery waiting for the group commit.
#[derive(Debug)]
struct Pending {
    tmp: PathBuf,
    new: PathBuf,
}

impl Maildir {
    /// Opens (creating if needed) the root directory.
    pub fn open(root: &Path) -> Result<Self> {
        create_dir_durable(root)?;
        Ok(Maildir {
            root_dir: File::open(root)?,
            root: root.to_path_buf(),
            host: host_name(),
            known_users: Mutex::default(),
            commits: Mutex::default(),
            committed: Condvar::new(),
        })
    }

    /// The Maildir of `user`, created on first use.
    pub fn user_dir(&self, user: &str) -> Result<PathBuf> {
        validate_user_name(user)?;
        let dir = self.root.join(user);
        for sub in ["tmp", "new", "cur"] {
            create_dir_durable(&dir.join(sub))?;
        }
        Ok(dir)
    }

    /// `user`'s Maildir, created on first use (and again if it was removed).
    fn maildir_of(&self, user: &str, again: bool) -> Result<PathBuf> {
        let mut known = self.known_users.lock().unwrap_or_else(|p| p.into_inner());
        if !again && known.contains(user) {
            return Ok(self.root.join(user));
        }
        let dir = self.user_dir(user)?;
        known.insert(user.to_string());
        Ok(dir)
    }

    fn unique_name(&self) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "{}.M{}P{}Q{}.{}",
            now.as_secs(),
            now.subsec_micros(),
            crate::names::pid(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            self.host
        )
    }

    fn lock(&self) -> MutexGuard<'_, Commits> {
        self.commits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes a batch durable and visible: one `syncfs` for the files' contents, the renames
    /// into `new/`, then an fsync of each `new/` touched.
    fn commit(&self, batch: Vec<Pending>) -> io::Result<()> {
        // SAFETY: the descriptor is open for the lifetime of `self`.
        if unsafe { libc::syncfs(self.root_dir.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut dirs = BTreeSet::new();
        for pending in &batch {
            fs::rename(&pending.tmp, &pending.new)?;
            if let Some(dir) = pending.new.parent() {
                dirs.insert(dir.to_path_buf());
            }
        }
        for dir in dirs {
            sync_dir(&dir)?;
        }
        Ok(())
    }
}

impl InboxRepository for Maildir {
    fn deliver(&self, user: &str, trace_header: &[u8], message: &Message) -> Result<()> {
        validate_user_name(user)?;
        let mut dir = self.maildir_of(user, false)?;
        let unique = self.unique_name();
        let mut tmp = dir.join("tmp").join(&unique);
        let file = match File::create(&tmp) {
            // The Maildir was removed while the server ran: make it again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                dir = self.maildir_of(user, true)?;
                tmp = dir.join("tmp").join(&unique);
                File::create(&tmp)?
            }
            other => other?,
        };
        let written = (|| -> io::Result<()> {
            let mut out = BufWriter::with_capacity(64 * 1024, file);
            out.write_all(trace_header)?;
            io::copy(&mut message.reader()?, &mut out)?;
            out.flush()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        let size = trace_header.len() as u64 + message.size();
        let new = dir.join("new").join(format!("{unique},S={size}"));
        let mut commits = self.lock();
        commits.written += 1;
        commits.pending.push(Pending { tmp, new });
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        let mut commits = self.lock();
        let target = commits.written;
        loop {
            if let Some(kind) = commits.poisoned {
                return Err(io::Error::new(kind, "an earlier Maildir commit failed").into());
            }
            if commits.done >= target {
                return Ok(());
            }
            if commits.running {
                commits = self
                    .committed
                    .wait(commits)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            commits.running = true;
            let covers = commits.written;
            let batch = std::mem::take(&mut commits.pending);
            drop(commits);
            let result = self.commit(batch);
            commits = self.lock();
            commits.running = false;
            match result {
                Ok(()) => commits.done = covers,
                Err(e) => {
                    tracing::error!(error = %e, "Maildir commit failed; refusing further deliveries");
                    commits.poisoned = Some(e.kind());
                }
            }
            self.committed.notify_all();
        }
    }
}

/// This host's name for unique file names, with the characters Maildir reserves (`/`, `:`)
/// escaped as its specification asks.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and we stop at the first NUL either way.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let raw = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let name = if raw.is_empty() {
        "localhost".to_string()
    } else {
        raw
    };
    name.replace('/', "\\057").replace(':', "\\072")
}
