//! Users in a directory: one JSON file per user, named after the lower-cased user name so that
//! names are case-insensitive (`Bob` and `bob` are one account) while keeping the case they
//! were created with.
//!
//! Every call reads the disk, so a change made by another process (`mailroom user add` while
//! the server runs) is seen at once.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::fsutil::{create_dir_durable, sync_dir, write_atomic};
use crate::{validate_user_name, Result, StoreError, User, UsersRepository};

/// The file users repository.
#[derive(Debug)]
pub struct FileUsersRepository {
    dir: PathBuf,
    tmp: PathBuf,
}

impl FileUsersRepository {
    /// Opens (creating if needed) the repository in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let tmp = dir.join("tmp");
        create_dir_durable(&tmp)?;
        Ok(FileUsersRepository {
            dir: dir.to_path_buf(),
            tmp,
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
        if self.path(&user.name)?.exists() {
            return Err(StoreError::AlreadyExists(format!("user {}", user.name)));
        }
        self.write(user)
    }

    fn get(&self, name: &str) -> Result<Option<User>> {
        let path = match self.path(name) {
            Ok(path) => path,
            // A name that cannot exist is simply not a user.
            Err(StoreError::InvalidName(..)) => return Ok(None),
            Err(e) => return Err(e),
        };
        match fs::read(&path) {
            Ok(json) => serde_json::from_slice(&json)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("user {name}"), e.to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
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
