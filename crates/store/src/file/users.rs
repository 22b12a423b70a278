//! Users in a directory: one JSON file per user, named after the lower-cased user name so that
//! names are case-insensitive (`Bob` and `bob` are one account) while keeping the case they
//! were created with.
//!
//! Every lookup checks the user's file on disk, so a change made by another process
//! (`mailroom user add` while the server runs) is seen at once; a record is parsed again only
//! when its file changed (another inode, size or modification time).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::fsutil::{create_dir_durable, sync_dir, unique_suffix, write_atomic};
use crate::blocking::UsersRepository;
use crate::{validate_user_name, Result, StoreError, User};

/// The file users repository.
#[derive(Debug)]
pub struct FileUsersRepository {
    dir: PathBuf,
    tmp: PathBuf,
    /// Parsed records by file, with the identity of the file version they came from.
    cache: Mutex<HashMap<PathBuf, (FileVersion, User)>>,
}

/// What tells one version of a user file from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileVersion {
    inode: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileVersion {
    fn of(meta: &fs::Metadata) -> Self {
        FileVersion {
            inode: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

impl FileUsersRepository {
    /// Opens (creating if needed) the repository in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let tmp = dir.join("tmp");
        create_dir_durable(&tmp)?;
        Ok(FileUsersRepository {
            dir: dir.to_path_buf(),
            tmp,
            cache: Mutex::default(),
        })
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        validate_user_name(name)?;
        Ok(self.dir.join(format!("{}.user", name.to_lowercase())))
    }

    fn write(&self, user: &User) -> Result<()> {
        let json = serde_json::to_vec_pretty(user).map_err(io::Error::other)?;
        write_atomic(&self.tmp, &self.path(&user.name)?, &json)?;
        sync_dir(&self.dir)?;
        Ok(())
    }
}

impl UsersRepository for FileUsersRepository {
    fn add(&self, user: &User) -> Result<()> {
        let path = self.path(&user.name)?;
        let json = serde_json::to_vec_pretty(user).map_err(io::Error::other)?;
        // Written aside, then linked into place: link() fails if the name exists, so two
        // concurrent adds (the CLI and the server, say) cannot overwrite each other.
        let tmp = self.tmp.join(format!(
            "{}.{}.new",
            user.name.to_lowercase(),
            unique_suffix()
        ));
        let result = (|| -> io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            io::Write::write_all(&mut file, &json)?;
            file.sync_all()?;
            fs::hard_link(&tmp, &path)
        })();
        let _ = fs::remove_file(&tmp);
        match result {
            Ok(()) => {
                sync_dir(&self.dir)?;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(StoreError::AlreadyExists(format!("user {}", user.name)))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn get(&self, name: &str) -> Result<Option<User>> {
        let path = match self.path(name) {
            Ok(path) => path,
            // A name that cannot exist is simply not a user.
            Err(StoreError::InvalidName(..)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let version = match fs::metadata(&path) {
            Ok(meta) => FileVersion::of(&meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cached, user)) = cache.get(&path) {
            if *cached == version {
                return Ok(Some(user.clone()));
            }
        }
        let json = match fs::read(&path) {
            Ok(json) => json,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let user: User = serde_json::from_slice(&json)
            .map_err(|e| StoreError::Corrupt(format!("user {name}"), e.to_string()))?;
        // The version read may be newer than the one stat'd; record it only if unchanged.
        if fs::metadata(&path).is_ok_and(|m| FileVersion::of(&m) == version) {
            cache.insert(path, (version, user.clone()));
        }
        Ok(Some(user))
    }

    fn update(&self, user: &User) -> Result<()> {
        if !self.path(&user.name)?.exists() {
            return Err(StoreError::NotFound(format!("user {}", user.name)));
        }
        self.write(user)
    }

    fn remove(&self, name: &str) -> Result<bool> {
        let path = match self.path(name) {
            Ok(path) => path,
            Err(StoreError::InvalidName(..)) => return Ok(false),
            Err(e) => return Err(e),
        };
        match fs::remove_file(path) {
            Ok(()) => {
                sync_dir(&self.dir)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn list(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "user") {
                let json = fs::read(&path)?;
                let user: User = serde_json::from_slice(&json)
                    .map_err(|e| StoreError::Corrupt(path.display().to_string(), e.to_string()))?;
                names.push(user.name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn count(&self) -> Result<usize> {
        let mut n = 0;
        for entry in fs::read_dir(&self.dir)? {
            n += usize::from(entry?.path().extension().is_some_and(|e| e == "user"));
        }
        Ok(n)
    }
}
