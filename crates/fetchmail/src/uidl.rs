//! The durable record, per remote account, of the messages already handled: a text file of
//! `D uid` (delivered to the spool) and `S uid` (rejected and marked seen) lines under the
//! home (`var/fetchmail/<task>/<account>.uidl`).
//!
//! A mark of a message kept on the server is appended and fsync'd as soon as it is true (right
//! after the spool commit), so a crash at any later point re-fetches nothing kept. A mark of a
//! message being deleted is appended at once but fsync'd with the others before QUIT
//! ([`UidStore::sync`]): DELE takes effect only at QUIT, so until then a lost mark can only
//! make the next session fetch that message again (the one duplicate the design allows, for a
//! crash before QUIT), and one fsync per session instead of one per message is what lets a
//! large mailbox drain quickly; at the end of a session the file is
//! rewritten (tmp → fsync → rename → fsync of the directory) with only the UIDs the server
//! still lists, so vanished messages are forgotten and the file stays small.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What the record says about a UID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// The message is durable in the spool: never fetch it again (delete it if it should be).
    Delivered,
    /// The message was rejected and marked seen: fetch it again only with `<fetchall>`.
    Seen,
}

/// The record of one remote account.
#[derive(Debug)]
pub struct UidStore {
    path: PathBuf,
    marks: HashMap<String, Mark>,
    journal: Option<File>,
    /// Marks written to `journal` since its last fsync.
    unsynced: bool,
}

impl UidStore {
    /// Opens (or starts) the record at `path`, creating its directory.
    pub fn open(path: &Path) -> io::Result<UidStore> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut marks = HashMap::new();
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        // A last line without its newline is torn (a crash mid-append): cut off, since its UID
        // may be cut short into another message's UID, and later appends must not complete it.
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            let file = OpenOptions::new().write(true).open(path)?;
            file.set_len(whole as u64)?;
            file.sync_all()?;
        }
        for line in bytes[..whole].split(|&b| b == b'\n') {
            let Ok(line) = std::str::from_utf8(line) else {
                continue;
            };
            match line.split_once(' ') {
                Some(("D", uid)) if !uid.is_empty() => {
                    marks.insert(uid.to_string(), Mark::Delivered);
                }
                Some(("S", uid)) if !uid.is_empty() => {
                    marks.entry(uid.to_string()).or_insert(Mark::Seen);
                }
                _ => {}
            }
        }
        Ok(UidStore {
            path: path.to_path_buf(),
            marks,
            journal: None,
            unsynced: false,
        })
    }

    /// The mark of `uid`.
    pub fn get(&self, uid: &str) -> Option<Mark> {
        self.marks.get(uid).copied()
    }

    /// How many UIDs are recorded.
    pub fn len(&self) -> usize {
        self.marks.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }

    /// Records `mark` for `uid` durably before returning.
    pub fn record(&mut self, uid: &str, mark: Mark) -> io::Result<()> {
        self.record_lazily(uid, mark)?;
        self.sync()
    }

    /// Makes every mark recorded so far durable.
    pub fn sync(&mut self) -> io::Result<()> {
        match &self.journal {
            Some(journal) if self.unsynced => {
                journal.sync_data()?;
                self.unsynced = false;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Records `mark` for `uid`; durable at the next [`UidStore::sync`] (or
    /// [`UidStore::compact`]). Written to the file at once: a killed process loses nothing,
    /// only a crash of the machine may.
    pub fn record_lazily(&mut self, uid: &str, mark: Mark) -> io::Result<()> {
        if !valid_uid(uid) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a UID must be 1 to 70 printable characters without spaces",
            ));
        }
        if self.journal.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.journal = Some(file);
        }
        let journal = self.journal.as_mut().expect("opened above");
        let tag = match mark {
            Mark::Delivered => "D",
            Mark::Seen => "S",
        };
        journal.write_all(format!("{tag} {uid}\n").as_bytes())?;
        self.unsynced = true;
        self.marks.insert(uid.to_string(), mark);
        Ok(())
    }

    /// Keeps only the UIDs in `present` and rewrites the file atomically.
    pub fn compact(&mut self, present: &HashSet<&str>) -> io::Result<()> {
        self.marks.retain(|uid, _| present.contains(uid.as_str()));
        self.journal = None;
        self.unsynced = false;
        let tmp = self.path.with_extension("uidl.tmp");
        {
            let mut file = File::create(&tmp)?;
            let mut text = String::new();
            for (uid, mark) in &self.marks {
                let tag = if *mark == Mark::Delivered { "D" } else { "S" };
                text.push_str(&format!("{tag} {uid}\n"));
            }
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// RFC 1939: a UID is 1 to 70 characters from 0x21 to 0x7E.
pub fn valid_uid(uid: &str) -> bool {
    (1..=70).contains(&uid.len()) && uid.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// A file-name-safe form of a task or account name (`/`, `..` and the like cannot escape),
/// one to one: other bytes, and a leading dot, are written `%XX`, so that two accounts
/// (`a/b` and `a_b`, say) never share a UID record, whose UIDs could then delete one's
/// unread mail as the other's delivered mail.
pub fn file_name(name: &str) -> String {
    if name.is_empty() {
        return "%".to_string();
    }
    let mut safe = String::with_capacity(name.len());
    for (i, byte) in name.bytes().enumerate() {
        let plain =
            byte.is_ascii_alphanumeric() || b"@-_+=".contains(&byte) || (byte == b'.' && i > 0);
        if plain {
            safe.push(char::from(byte));
        } else {
            safe.push_str(&format!("%{byte:02X}"));
        }
    }
    safe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_survive_reopen_and_compaction_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t/acct.uidl");
        let mut s = UidStore::open(&path).unwrap();
        s.record("a1", Mark::Delivered).unwrap();
        s.record("b2", Mark::Seen).unwrap();
        s.record("c3", Mark::Delivered).unwrap();
        assert!(s.record("bad uid", Mark::Seen).is_err());
        // A torn append from a crash.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"D half")
            .unwrap();
        let mut s = UidStore::open(&path).unwrap();
        assert_eq!(s.get("a1"), Some(Mark::Delivered));
        assert_eq!(s.get("b2"), Some(Mark::Seen));
        s.record("d4", Mark::Delivered).unwrap();
        let s2 = UidStore::open(&path).unwrap();
        assert_eq!(s2.get("d4"), Some(Mark::Delivered));
        assert_eq!(s2.get("half"), None, "a torn line is never read as a UID");
        s.compact(&["a1", "d4"].into_iter().collect()).unwrap();
        let s = UidStore::open(&path).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.get("c3"), None);
        assert_eq!(s.get("b2"), None);
    }

    #[test]
    fn file_names_cannot_escape() {
        assert_eq!(file_name("../x"), "%2E.%2Fx");
        assert_eq!(file_name("a/b"), "a%2Fb");
        assert_eq!(file_name("alice@example.net"), "alice@example.net");
        assert_eq!(file_name(""), "%");
        // One to one: names that differ never share a record.
        let names = ["a/b", "a_b", "a%2Fb", "", "%", ".x", "%2Ex", "é", "%C3%A9"];
        let files: std::collections::HashSet<String> = names.iter().map(|n| file_name(n)).collect();
        assert_eq!(files.len(), names.len());
    }
}
