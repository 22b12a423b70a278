//! A directory of mails: `<name>.eml` (the message) and `<name>.env` (the envelope, JSON).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use mailroom_mailet::{Envelope, Mail};

use super::fsutil::{self, create_dir_durable, sync_dir, write_atomic};
use crate::{validate_mail_name, IncomingMessage, MailRepository, Result, StoreError};

/// Called with the mail's name once an incoming mail is durable (the spool queues it).
pub(crate) type OnCommit = Box<dyn FnOnce(&str) + Send>;

/// A mail repository in a directory. See the [module docs](super).
#[derive(Debug, Clone)]
pub struct FileMailRepository {
    dir: PathBuf,
    tmp: PathBuf,
}

impl FileMailRepository {
    /// Opens (creating if needed) the repository in `dir`. Leftovers of writes that a crash cut
    /// short — temporary files, and messages whose envelope was never written — are removed.
    pub fn open(dir: &Path) -> Result<Self> {
        let tmp = dir.join("tmp");
        create_dir_durable(&tmp)?;
        for entry in fs::read_dir(&tmp)? {
            let _ = fs::remove_file(entry?.path());
        }
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "eml") && !path.with_extension("env").exists()
            {
                tracing::info!(path = %path.display(), "removing message without envelope");
                fs::remove_file(&path)?;
            }
        }
        Ok(FileMailRepository {
            dir: dir.to_path_buf(),
            tmp,
        })
    }

    /// The directory of the repository.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{name}.{ext}"))
    }

    /// Starts a new mail; `on_commit` runs after the mail became durable.
    pub(crate) fn incoming_with(
        &self,
        on_commit: Option<OnCommit>,
    ) -> Result<FileIncoming> {
        let name = crate::new_mail_name();
        let tmp_path = self.tmp.join(format!("{name}.eml"));
        let file = File::create(&tmp_path)?;
        Ok(FileIncoming {
            repo: self.clone(),
            name,
            tmp_path,
            file: Some(BufWriter::with_capacity(64 * 1024, file)),
            written: 0,
            on_commit,
        })
    }

    /// Writes the envelope file of a mail whose message file is in place.
    fn write_envelope(&self, envelope: &Envelope) -> Result<()> {
        let json = serde_json::to_vec(envelope).map_err(io::Error::other)?;
        write_atomic(&self.tmp, &self.path(&envelope.name, "env"), &json)?;
        Ok(())
    }
}

impl MailRepository for FileMailRepository {
    fn store(&self, mail: &Mail) -> Result<()> {
        validate_mail_name(mail.name())?;
        let eml = self.path(mail.name(), "eml");
        if mail.message.is_modified() || !eml.exists() {
            let tmp = self
                .tmp
                .join(format!("{}.{}.eml", mail.name(), fsutil::unique_suffix()));
            let result = (|| -> io::Result<()> {
                let mut out = BufWriter::with_capacity(64 * 1024, File::create(&tmp)?);
                io::copy(&mut mail.message.reader()?, &mut out)?;
                out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                fs::rename(&tmp, &eml)
            })();
            if let Err(e) = result {
                let _ = fs::remove_file(&tmp);
                return Err(e.into());
            }
        }
        let mut envelope = mail.envelope.clone();
        envelope.size = mail.message.size();
        self.write_envelope(&envelope)?;
        sync_dir(&self.dir)?;
        Ok(())
    }

    fn retrieve(&self, name: &str) -> Result<Option<Mail>> {
        validate_mail_name(name)?;
        let json = match fs::read(self.path(name, "env")) {
            Ok(json) => json,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let envelope: Envelope = serde_json::from_slice(&json)
            .map_err(|e| StoreError::Corrupt(name.to_string(), e.to_string()))?;
        let message = fsutil::open_message(&self.path(name, "eml"))
            .map_err(|e| StoreError::Corrupt(name.to_string(), format!("message file: {e}")))?;
        Ok(Some(Mail { envelope, message }))
    }

    fn remove(&self, name: &str) -> Result<bool> {
        validate_mail_name(name)?;
        match fs::remove_file(self.path(name, "env")) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        match fs::remove_file(self.path(name, "eml")) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        sync_dir(&self.dir)?;
        Ok(true)
    }

    fn list(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let file_name = entry?.file_name();
            let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".env")) else {
                continue;
            };
            names.push(name.to_string());
        }
        names.sort();
        Ok(names)
    }

    fn incoming(&self) -> Result<Box<dyn IncomingMessage>> {
        Ok(Box::new(self.incoming_with(None)?))
    }
}

/// A message being written into a [`FileMailRepository`].
pub struct FileIncoming {
    repo: FileMailRepository,
    name: String,
    tmp_path: PathBuf,
    file: Option<BufWriter<File>>,
    written: u64,
    on_commit: Option<OnCommit>,
}

impl Write for FileIncoming {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self.file.as_mut().ok_or(io::ErrorKind::BrokenPipe)?;
        let n = file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), |f| f.flush())
    }
}

impl IncomingMessage for FileIncoming {
    fn name(&self) -> &str {
        &self.name
    }

    fn commit(mut self: Box<Self>, mut envelope: Envelope) -> Result<()> {
        let file = self
            .file
            .take()
            .ok_or(io::Error::from(io::ErrorKind::BrokenPipe))?;
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        let eml = self.repo.path(&self.name, "eml");
        fs::rename(&self.tmp_path, &eml)?;
        envelope.name = self.name.clone();
        envelope.size = self.written;
        envelope.touch();
        self.repo.write_envelope(&envelope)?;
        sync_dir(&self.repo.dir)?;
        if let Some(on_commit) = self.on_commit.take() {
            on_commit(&self.name);
        }
        Ok(())
    }
}

impl Drop for FileIncoming {
    fn drop(&mut self) {
        if self.file.is_some() {
            // Never committed: the client went away or the message was refused.
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}
