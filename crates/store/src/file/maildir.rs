//! Inboxes as Maildirs: `<root>/<user>/{tmp,new,cur}`.
//!
//! Delivery follows the Maildir protocol: write `tmp/<unique>`, fsync, rename into
//! `new/<unique>`, fsync `new/`. The unique name is `<secs>.M<usecs>P<pid>Q<n>.<host>,S=<size>`
//! (the `,S=` size field is the one Dovecot writes and reads).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use mailroom_mailet::Message;

use super::fsutil::{create_dir_durable, DirSync};
use crate::{validate_user_name, InboxRepository, Result};

/// The inbox repository of Maildirs under one root.
#[derive(Debug)]
pub struct Maildir {
    root: PathBuf,
    host: String,
    /// The `new/` syncer of every Maildir delivered to so far (which also says it exists).
    new_dirs: Mutex<HashMap<String, Arc<DirSync>>>,
    /// Maildirs with renames into `new/` that may not be durable yet: the `new/` syncer and
    /// the ticket taken after the last rename.
    unsynced: Mutex<HashMap<String, (Arc<DirSync>, u64)>>,
}

impl Maildir {
    /// Opens (creating if needed) the root directory.
    pub fn open(root: &Path) -> Result<Self> {
        create_dir_durable(root)?;
        Ok(Maildir {
            root: root.to_path_buf(),
            host: host_name(),
            new_dirs: Mutex::default(),
            unsynced: Mutex::default(),
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

    /// The `new/` syncer of `user`'s Maildir, creating the Maildir on first use.
    fn new_dir_sync(&self, user: &str) -> Result<(PathBuf, Arc<DirSync>)> {
        let mut known = self.new_dirs.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.root.join(user);
        if let Some(sync) = known.get(user) {
            return Ok((dir, sync.clone()));
        }
        let dir = self.user_dir(user)?;
        let sync = Arc::new(DirSync::open(&dir.join("new"))?);
        known.insert(user.to_string(), sync.clone());
        Ok((dir, sync))
    }

    /// Forgets what is known of `user`'s Maildir.
    fn forget(&self, user: &str) {
        self.new_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(user);
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
}

impl InboxRepository for Maildir {
    fn sync(&self) -> Result<()> {
        let pending: Vec<(String, Arc<DirSync>, u64)> = self
            .unsynced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(user, (sync, ticket))| (user.clone(), sync.clone(), *ticket))
            .collect();
        for (user, sync, ticket) in pending {
            // Another caller may be running this very fsync: waiting on the ticket covers
            // that case too.
            sync.wait(ticket)?;
            let mut unsynced = self.unsynced.lock().unwrap_or_else(|p| p.into_inner());
            if unsynced.get(&user).is_some_and(|(_, t)| *t == ticket) {
                unsynced.remove(&user);
            }
        }
        Ok(())
    }

    fn deliver(&self, user: &str, trace_header: &[u8], message: &Message) -> Result<()> {
        validate_user_name(user)?;
        let (mut dir, mut new_sync) = self.new_dir_sync(user)?;
        let unique = self.unique_name();
        let mut tmp = dir.join("tmp").join(&unique);
        let size = trace_header.len() as u64 + message.size();
        let file = match File::create(&tmp) {
            // The Maildir was removed while the server ran: make it again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.forget(user);
                (dir, new_sync) = self.new_dir_sync(user)?;
                tmp = dir.join("tmp").join(&unique);
                File::create(&tmp)?
            }
            other => other?,
        };
        let result = (|| -> io::Result<PathBuf> {
            let mut out = BufWriter::with_capacity(64 * 1024, file);
            out.write_all(trace_header)?;
            io::copy(&mut message.reader()?, &mut out)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            let new = dir.join("new").join(format!("{unique},S={size}"));
            fs::rename(&tmp, &new)?;
            Ok(new)
        })();
        match result {
            Ok(_) => {
                // The file is fsync'd; the rename becomes durable with the next `sync`.
                let ticket = new_sync.ticket();
                self.unsynced
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(user.to_string(), (new_sync, ticket));
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e.into())
            }
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
