//! Opens the repositories a configuration names, choosing the backend by URL.

use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use mailroom_config::{Config, RepositoryUrl};
use mailroom_store::file::{FileMailRepository, FileSpool, FileUsersRepository, Maildir};
use mailroom_store::{InboxRepository, MailRepository, SpoolRepository, UsersRepository};

/// The name of the server's own users repository in `<users-store>`.
const LOCAL_USERS: &str = "LocalUsers";

/// Only the file backend exists so far; database URLs are refused with a clear message.
fn file_path<'a>(url: &'a RepositoryUrl, what: &str) -> Result<&'a std::path::Path> {
    match url {
        RepositoryUrl::File(path) => Ok(path),
        other => bail!(
            "{what}: database repositories ({other:?}) are not available in this build; use a file:// URL"
        ),
    }
}

/// The `LocalUsers` users repository.
pub fn users(config: &Config) -> Result<Arc<dyn UsersRepository>> {
    let repo = config
        .users_repositories
        .iter()
        .find(|r| r.name == LOCAL_USERS)
        .ok_or_else(|| anyhow!("<users-store> has no repository named {LOCAL_USERS}"))?;
    let path = file_path(&repo.target, "users repository")?;
    Ok(Arc::new(FileUsersRepository::open(path)?))
}

/// The inbox repository (`<inboxRepository>`).
pub fn inbox(config: &Config) -> Result<Arc<dyn InboxRepository>> {
    let path = file_path(&config.james.inbox_repository.target, "inbox repository")?;
    Ok(Arc::new(Maildir::open(path)?))
}

/// The spool (`<spoolrepository>`).
pub fn spool(config: &Config) -> Result<Arc<dyn SpoolRepository>> {
    let path = file_path(&config.spool_repository.target, "spool repository")?;
    Ok(Arc::new(FileSpool::open(path)?))
}

/// Opens the mail repository at a URL, for mailets such as ToRepository.
pub fn mail_repository(config: &Config, url: &str) -> Result<Arc<dyn MailRepository>, String> {
    let target = RepositoryUrl::parse(url, &config.home)?;
    let path = file_path(&target, "mail repository").map_err(|e| e.to_string())?;
    Ok(Arc::new(
        FileMailRepository::open(path).map_err(|e| e.to_string())?,
    ))
}
