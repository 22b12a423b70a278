//! Room for an announced message (`MAIL FROM ... SIZE=`, [`SpoolRepository::room_for`]) on the
//! file systems this node writes a database spool's mail to: the SQLite file's and DBFile's
//! body files'. PostgreSQL's room is on its server, which a node cannot see: a full one is
//! answered at the end of the data.

use std::path::Path;

use super::*;
use crate::file::fsutil;

impl DbMailRepository {
    /// See [`SpoolRepository::room_for`].
    pub(super) async fn room(&self, size: u64) -> Result<()> {
        let mut dirs = Vec::new();
        if let Pool::Sqlite(p) = self.pool() {
            dirs.push(p.connect_options().get_filename().to_path_buf());
        }
        if self.bodies().write_files {
            dirs.push(self.bodies().files.root().to_path_buf());
        }
        if dirs.is_empty() {
            return Ok(());
        }
        crate::on_blocking_pool(move || {
            for dir in dirs.iter().filter_map(|d| existing_ancestor(d)) {
                match fsutil::check_room(dir, 0, size) {
                    Err(e) if e.kind() == io::ErrorKind::StorageFull => return Err(e.into()),
                    // Cannot tell: the message is tried, and refused at its end if need be.
                    _ => {}
                }
            }
            Ok(())
        })
        .await?
    }
}

/// The nearest directory at or above `path` that exists (the body files' directory is made
/// at the first body).
fn existing_ancestor(path: &Path) -> Option<&Path> {
    path.ancestors()
        .find(|p| !p.as_os_str().is_empty() && p.is_dir())
}
