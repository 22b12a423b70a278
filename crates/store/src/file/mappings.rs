//! Mapping tables in a directory: one JSON file per table, `<table>.json`, holding
//! `{ "source": ["target", ...] }`. Every change rewrites the file atomically (tmp, fsync,
//! rename, directory fsync). Tables are read for every mail, so a parsed table is kept and
//! used for up to [`RECHECK`] before its file is looked at again; changes made through this
//! repository are seen at once, hand edits of the file within that time.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::fsutil::{create_dir_durable, sync_dir, write_atomic};
use crate::blocking::MappingsRepository;
use crate::mappings::{Source, Target};
use crate::{validate_user_name, Result, StoreError};

/// A table as stored: source → targets, as text.
type Table = BTreeMap<String, Vec<String>>;

/// How long a parsed table is used before its file is read again.
const RECHECK: Duration = Duration::from_secs(1);

/// The file mappings repository.
#[derive(Debug)]
pub struct FileMappingsRepository {
    dir: PathBuf,
    tmp: PathBuf,
    /// Serialises read-modify-write cycles.
    writing: Mutex<()>,
    /// Parsed tables by file, with when they were read.
    cache: Mutex<HashMap<PathBuf, (Instant, Arc<Table>)>>,
}

impl FileMappingsRepository {
    /// Opens (creating if needed) the repository in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let tmp = dir.join("tmp");
        create_dir_durable(&tmp)?;
        Ok(FileMappingsRepository {
            dir: dir.to_path_buf(),
            tmp,
            writing: Mutex::default(),
            cache: Mutex::default(),
        })
    }

    /// The file of `table`; table names follow the rules of user names.
    fn path(&self, table: &str) -> Result<PathBuf> {
        validate_user_name(table)?;
        Ok(self.dir.join(format!("{}.json", table.to_lowercase())))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, (Instant, Arc<Table>)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The table, from the cache when it was read less than [`RECHECK`] ago.
    fn read(&self, table: &str) -> Result<Arc<Table>> {
        let path = self.path(table)?;
        if let Some((at, cached)) = self.cache().get(&path) {
            if at.elapsed() < RECHECK {
                return Ok(cached.clone());
            }
        }
        let contents = Arc::new(self.read_file(&path)?);
        self.cache()
            .insert(path, (Instant::now(), contents.clone()));
        Ok(contents)
    }

    fn read_file(&self, path: &Path) -> Result<Table> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Corrupt(path.display().to_string(), e.to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Table::new()),
            Err(e) => Err(e.into()),
        }
    }

    fn write(&self, table: &str, contents: &Table) -> Result<()> {
        let path = self.path(table)?;
        let bytes = serde_json::to_vec_pretty(contents).expect("strings serialise");
        write_atomic(&self.tmp, &path, &bytes)?;
        sync_dir(&self.dir)?;
        Ok(())
    }

    /// Reads `table`, lets `change` edit it, and writes it back if `change` returns true.
    fn modify(&self, table: &str, change: impl FnOnce(&mut Table) -> bool) -> Result<bool> {
        let _guard = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.path(table)?;
        let mut contents = self.read_file(&path)?;
        let changed = change(&mut contents);
        if changed {
            self.write(table, &contents)?;
            self.cache()
                .insert(path, (Instant::now(), Arc::new(contents)));
        }
        Ok(changed)
    }
}

/// Parses stored targets; one that no longer parses is a corrupt table.
fn parse_targets(source: &str, targets: &[String]) -> Result<Vec<Target>> {
    targets
        .iter()
        .map(|t| Target::parse(t).map_err(|e| StoreError::Corrupt(source.to_string(), e)))
        .collect()
}

impl MappingsRepository for FileMappingsRepository {
    fn add(&self, table: &str, source: &Source, target: &Target) -> Result<bool> {
        let target = target.to_string();
        self.modify(table, |contents| {
            let targets = contents.entry(source.to_string()).or_default();
            if targets.contains(&target) {
                return false;
            }
            targets.push(target);
            true
        })
    }

    fn remove(&self, table: &str, source: &Source, target: &Target) -> Result<bool> {
        let target = target.to_string();
        self.modify(table, |contents| {
            let Some(targets) = contents.get_mut(source.as_str()) else {
                return false;
            };
            let before = targets.len();
            targets.retain(|t| *t != target);
            let removed = targets.len() < before;
            if targets.is_empty() {
                contents.remove(source.as_str());
            }
            removed
        })
    }

    fn get(&self, table: &str, source: &Source) -> Result<Vec<Target>> {
        match self.read(table)?.get(source.as_str()) {
            Some(targets) => parse_targets(source.as_str(), targets),
            None => Ok(Vec::new()),
        }
    }

    fn all(&self, table: &str) -> Result<Vec<(Source, Vec<Target>)>> {
        self.read(table)?
            .iter()
            .map(|(source, targets)| {
                let parsed = parse_targets(source, targets)?;
                let source =
                    Source::parse(source).map_err(|e| StoreError::Corrupt(source.clone(), e))?;
                Ok((source, parsed))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::Blocking::new(FileMappingsRepository::open(dir.path()).unwrap());
        crate::conformance::mappings_repository(&repo).await;
        // A second instance (another process) sees the same tables.
        let again = FileMappingsRepository::open(dir.path()).unwrap();
        assert_eq!(
            again.all(crate::mappings::DEFAULT_TABLE).unwrap(),
            repo.backend().all(crate::mappings::DEFAULT_TABLE).unwrap()
        );
    }

    #[test]
    fn table_names_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let repo = FileMappingsRepository::open(&dir.path().join("m")).unwrap();
        let source = Source::parse("a@example.org").unwrap();
        let target = Target::parse("b@example.org").unwrap();
        assert!(repo.add("../x", &source, &target).is_err());
        assert!(!dir.path().join("x.json").exists());
    }
}
