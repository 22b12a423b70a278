//! The file news repository: one directory per group under the root, nothing to install.
//!
//! ```text
//! <root>/.lock                     flock: one server at a time
//! <root>/<group>/.meta             {"created": secs, "high": n}: written at creation and
//!                                  whenever articles are removed, so numbers are never reused
//! <root>/<group>/.overview         one line per article: number TAB arrival:crc TAB the
//!                                  overview fields (crc: CRC-32 of the article, in hex)
//! <root>/<group>/.synced           how much of .overview is durable with its articles
//! <root>/<group>/<number>          the article; a cross-post is one file hard-linked into
//!                                  each of its groups
//! ```
//!
//! A post writes the article to a temporary file in the temp directory, renames it into its
//! first group, links it into the others, appends the overview lines, and waits for one
//! `syncfs` that covers all of it before it returns: an acknowledged article survives a crash
//! or a power cut. The `syncfs` is a group commit: concurrent posts share it, and the
//! repository lock is never held across it, so posts in parallel cost one `syncfs` per batch.
//! After each sync, `.synced` records the overview length it covered; at open, the lines past
//! it are checked against their articles' checksums (see [`recover`]). Parallel posts may
//! append their overview lines out of number order; the reader sorts.
//!
//! At open, every group's overview file is read into memory as offsets (number, arrival,
//! Message-ID, where its line is): `OVER` reads only the lines it needs, with one `pread`,
//! and never an article. The message-id index is rebuilt from the overview lines, which hold
//! the Message-ID and so need no file of their own. The highest number is the larger of the
//! `.meta` high, the overview's numbers (dropped lines included) and the article files'
//! names, and is written back to `.meta` when a crash left more: numbers are never reused.

mod recover;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::fsutil::{
    create_dir_durable, sync_dir, try_lock, unique_suffix, write_atomic, FileLock,
};
use super::group_commit::GroupCommit;
use crate::blocking::NewsRepository;
use crate::news::{
    header_section, valid_group_name, Arrival, Article, GroupInfo, NewArticle, Overview,
};
use crate::{Result, StoreError};

const META: &str = ".meta";
const OVERVIEW: &str = ".overview";

/// The file news repository.
pub struct FileNewsRepository {
    root: PathBuf,
    tmp: PathBuf,
    /// The host name written in `Xref:` headers.
    xref_host: String,
    /// Held for the repository's life: a second server on the same directory would give the
    /// same numbers twice.
    _lock: FileLock,
    state: Mutex<State>,
    /// The root, kept open for `syncfs`.
    root_dir: File,
    /// Group commit of `syncfs`: posts in parallel share one. Pending: the overview lengths
    /// that the next sync makes durable, for the groups' marks.
    syncs: GroupCommit<Vec<Synced>>,
}

impl std::fmt::Debug for FileNewsRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileNewsRepository")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    groups: BTreeMap<String, Group>,
    /// Message-ID → where the article is.
    ids: HashMap<Arc<str>, Vec<(String, u64)>>,
    /// Message-IDs being posted now, so that a second post of one is refused at once.
    posting: std::collections::HashSet<String>,
}

struct Group {
    dir: PathBuf,
    created: u64,
    high: u64,
    /// Ascending by number.
    entries: Vec<Entry>,
    /// Open for reading and appending; replaced when the file is rewritten.
    overview: Arc<File>,
    overview_len: u64,
    /// `.synced`, and what it holds: the overview up to there is durable with its articles.
    mark: File,
    synced: u64,
    /// Changes whenever the overview file is replaced, so that a sync that started before
    /// leaves the new file's mark alone.
    generation: u64,
}

/// An overview length that a sync makes durable.
struct Synced {
    group: String,
    generation: u64,
    len: u64,
}

/// A fresh [`Group::generation`], unique in the process (a group removed and created again
/// gets a new one).
fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

struct Entry {
    number: u64,
    arrived: u64,
    id: Arc<str>,
    offset: u64,
    len: u32,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    created: u64,
    high: u64,
}

fn now_secs() -> u64 {
    secs(SystemTime::now())
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn corrupt(path: &Path, why: impl ToString) -> StoreError {
    StoreError::Corrupt(path.display().to_string(), why.to_string())
}

impl FileNewsRepository {
    /// Opens (creating if needed) the repository with its groups under `root` and temporary
    /// files in `tmp` (which must be on the same file system); `xref_host` names this server
    /// in `Xref:` headers. Fails with [`StoreError::InUse`] if another process has it open.
    pub fn open(root: &Path, tmp: &Path, xref_host: &str) -> Result<Self> {
        create_dir_durable(root)?;
        create_dir_durable(tmp)?;
        let lock = try_lock(&root.join(".lock"))?
            .ok_or_else(|| StoreError::InUse(root.display().to_string()))?;
        let mut state = State::default();
        for entry in fs::read_dir(root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".del.") {
                // A group whose removal a crash interrupted.
                let _ = fs::remove_dir_all(entry.path());
                continue;
            }
            if !valid_group_name(&name) || !entry.file_type()?.is_dir() {
                continue;
            }
            let group = recover::load_group(&entry.path(), next_generation())?;
            for e in &group.entries {
                state
                    .ids
                    .entry(e.id.clone())
                    .or_default()
                    .push((name.clone(), e.number));
            }
            state.groups.insert(name, group);
        }
        Ok(FileNewsRepository {
            root: root.to_path_buf(),
            tmp: tmp.to_path_buf(),
            xref_host: xref_host.to_string(),
            _lock: lock,
            state: Mutex::new(state),
            root_dir: File::open(root)?,
            syncs: GroupCommit::new(Vec::new(), "news syncfs"),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn info(name: &str, g: &Group) -> GroupInfo {
        GroupInfo {
            name: name.to_string(),
            count: g.entries.len() as u64,
            low: g.entries.first().map_or(g.high + 1, |e| e.number),
            high: g.high,
            created: UNIX_EPOCH + Duration::from_secs(g.created),
        }
    }

    /// Returns once everything written in the file system before the call is durable (one
    /// `syncfs` shared by the callers that arrive meanwhile), then advances the marks of
    /// `lengths`.
    fn sync(&self, lengths: Vec<Synced>) -> Result<()> {
        let ticket = self.syncs.add(|pending| pending.extend(lengths));
        self.syncs
            .wait(ticket, Duration::ZERO, std::mem::take, |done| {
                rustix::fs::syncfs(&self.root_dir).map_err(io::Error::from)?;
                self.advance_marks(done);
                Ok(())
            })?;
        Ok(())
    }

    /// Records overview lengths that a finished sync covered. A mark that cannot be written
    /// stays behind: more lines are checked at the next open, nothing is lost.
    fn advance_marks(&self, done: Vec<Synced>) {
        let mut state = self.state();
        for s in done {
            let Some(g) = state.groups.get_mut(&s.group) else {
                continue;
            };
            if g.generation == s.generation && s.len > g.synced {
                match recover::write_mark(&g.mark, s.len) {
                    Ok(()) => g.synced = s.len,
                    Err(error) => tracing::warn!(group = %s.group, %error, "news: .synced"),
                }
            }
        }
    }

    /// The durable part of a post, without the repository lock: the file, its links, its
    /// overview lines.
    fn store_article(
        &self,
        article: &NewArticle,
        targets: &[(String, u64)],
        dirs: &[PathBuf],
    ) -> Result<()> {
        let mut xref = format!("Xref: {}", self.xref_host);
        for (g, n) in targets {
            xref.push_str(&format!(" {g}:{n}"));
        }
        xref.push_str("\r\n");
        let head = header_section(&article.octets).len();
        let mut octets = Vec::with_capacity(article.octets.len() + xref.len());
        octets.extend_from_slice(&article.octets[..head]);
        octets.extend_from_slice(xref.as_bytes());
        octets.extend_from_slice(&article.octets[head..]);

        let crc = crc32fast::hash(&octets);

        // No sync before the rename: a crash may leave the renamed file empty or short, and
        // its overview line's checksum then says so at the next open.
        let tmp = self.tmp.join(format!("news.{}.tmp", unique_suffix()));
        let written = File::create(&tmp).and_then(|mut f| f.write_all(&octets));
        let first = dirs[0].join(targets[0].1.to_string());
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, &first)) {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        for (dir, (_, n)) in dirs.iter().zip(targets).skip(1) {
            fs::hard_link(&first, dir.join(n.to_string()))?;
        }
        let mut lengths = Vec::with_capacity(targets.len());
        {
            let mut state = self.state();
            let arrived = now_secs();
            for (g, n) in targets {
                // A group removed meanwhile just does not get the line.
                if let Some(group) = state.groups.get_mut(g) {
                    let overview = Overview::of_article(*n, &octets);
                    append_overview(group, &overview, arrived, Some(crc))?;
                    lengths.push(Synced {
                        group: g.clone(),
                        generation: group.generation,
                        len: group.overview_len,
                    });
                }
            }
            state
                .ids
                .insert(Arc::from(article.message_id.as_str()), targets.to_vec());
        }
        // The article, its renames and links, and the overview lines, at once.
        self.sync(lengths)
    }

    fn read_article(&self, dir: &Path, number: u64, id: &str) -> Result<Option<Article>> {
        match fs::read(dir.join(number.to_string())) {
            Ok(octets) => Ok(Some(Article {
                number,
                message_id: id.to_string(),
                octets,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

fn overview_line(overview: &Overview, arrived: u64, crc: Option<u32>) -> String {
    let mut line = match crc {
        Some(crc) => format!("{}\t{arrived}:{crc:08x}", overview.number),
        None => format!("{}\t{arrived}", overview.number),
    };
    for field in &overview.fields {
        line.push('\t');
        line.push_str(field);
    }
    line.push('\n');
    line
}

fn append_overview(
    group: &mut Group,
    overview: &Overview,
    arrived: u64,
    crc: Option<u32>,
) -> Result<()> {
    let line = overview_line(overview, arrived, crc);
    let offset = group.overview_len;
    let written = (&*group.overview).write_all(line.as_bytes());
    if let Err(e) = written {
        group.overview_len = group.overview.metadata().map_or(offset, |m| m.len());
        return Err(e.into());
    }
    group.overview_len += line.len() as u64;
    let at = group
        .entries
        .partition_point(|e| e.number < overview.number);
    group.entries.insert(
        at,
        Entry {
            number: overview.number,
            arrived,
            id: Arc::from(overview.message_id()),
            offset,
            len: line.len() as u32,
        },
    );
    Ok(())
}

fn write_meta(dir: &Path, meta: &Meta) -> Result<()> {
    let bytes = serde_json::to_vec(meta).map_err(io::Error::other)?;
    write_atomic(dir, &dir.join(META), &bytes)?;
    sync_dir(dir)?;
    Ok(())
}

/// Rewrites a group's overview file with only its live entries, and its meta with its high.
/// The new file's mark covers its first lines that were under the old mark; it is made durable
/// before the new file replaces the old one (for which it is smaller, so still true).
fn rewrite_group(group: &mut Group) -> Result<()> {
    let mut contents = Vec::new();
    let mut entries = Vec::with_capacity(group.entries.len());
    for e in &group.entries {
        let mut line = vec![0; e.len as usize];
        group.overview.read_exact_at(&mut line, e.offset)?;
        entries.push(Entry {
            number: e.number,
            arrived: e.arrived,
            id: e.id.clone(),
            offset: contents.len() as u64,
            len: e.len,
        });
        contents.extend_from_slice(&line);
    }
    let synced = entries
        .iter()
        .zip(&group.entries)
        .take_while(|(_, old)| old.offset + u64::from(old.len) <= group.synced)
        .last()
        .map_or(0, |(new, _)| new.offset + u64::from(new.len));
    recover::write_mark(&group.mark, synced)?;
    group.mark.sync_data()?;
    group.synced = synced;
    group.generation = next_generation();
    let path = group.dir.join(OVERVIEW);
    write_atomic(&group.dir, &path, &contents)?;
    write_meta(
        &group.dir,
        &Meta {
            created: group.created,
            high: group.high,
        },
    )?;
    group.overview = Arc::new(OpenOptions::new().read(true).append(true).open(&path)?);
    group.overview_len = contents.len() as u64;
    group.entries = entries;
    Ok(())
}

/// Removes `numbers` (ascending) from a group: the high in `.meta` first, then files,
/// entries, and the rewritten index.
fn remove_from_group(group: &mut Group, numbers: &[u64]) -> Result<()> {
    // The high is recorded durably before any line or file goes: a crash in the middle must
    // not leave the removed numbers (the highest among them) found nowhere at the next open,
    // which would give them again.
    write_meta(
        &group.dir,
        &Meta {
            created: group.created,
            high: group.high,
        },
    )?;
    for n in numbers {
        match fs::remove_file(group.dir.join(n.to_string())) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    group
        .entries
        .retain(|e| numbers.binary_search(&e.number).is_err());
    rewrite_group(group)?;
    sync_dir(&group.dir)?;
    Ok(())
}

impl NewsRepository for FileNewsRepository {
    fn groups(&self) -> Result<Vec<GroupInfo>> {
        let state = self.state();
        Ok(state.groups.iter().map(|(n, g)| Self::info(n, g)).collect())
    }

    fn group(&self, name: &str) -> Result<Option<GroupInfo>> {
        Ok(self.state().groups.get(name).map(|g| Self::info(name, g)))
    }

    fn create_group(&self, name: &str) -> Result<bool> {
        if !valid_group_name(name) {
            return Err(StoreError::InvalidName(name.into(), "not a newsgroup name"));
        }
        let mut state = self.state();
        if state.groups.contains_key(name) {
            return Ok(false);
        }
        let dir = self.root.join(name);
        create_dir_durable(&dir)?;
        write_meta(
            &dir,
            &Meta {
                created: now_secs(),
                high: 0,
            },
        )?;
        let group = recover::load_group(&dir, next_generation())?;
        sync_dir(&dir)?;
        state.groups.insert(name.to_string(), group);
        Ok(true)
    }

    fn remove_group(&self, name: &str) -> Result<bool> {
        let mut state = self.state();
        let Some(group) = state.groups.remove(name) else {
            return Ok(false);
        };
        for e in &group.entries {
            if let Some(places) = state.ids.get_mut(&e.id) {
                places.retain(|(g, _)| g != name);
                if places.is_empty() {
                    state.ids.remove(&e.id);
                }
            }
        }
        let doomed = self.root.join(format!(".del.{name}.{}", unique_suffix()));
        fs::rename(&group.dir, &doomed)?;
        sync_dir(&self.root)?;
        fs::remove_dir_all(&doomed)?;
        Ok(true)
    }

    fn post(&self, article: &NewArticle) -> Result<Vec<(String, u64)>> {
        let id = article.message_id.as_str();
        let (targets, dirs) = {
            let mut state = self.state();
            if state.ids.contains_key(id) || state.posting.contains(id) {
                return Err(StoreError::AlreadyExists(id.to_string()));
            }
            let mut targets: Vec<(String, u64)> = Vec::new();
            let mut dirs = Vec::new();
            for name in &article.groups {
                if targets.iter().any(|(t, _)| t == name) {
                    continue;
                }
                if let Some(g) = state.groups.get_mut(name) {
                    // Taken now, whatever happens next: numbers are never given twice.
                    g.high += 1;
                    targets.push((name.clone(), g.high));
                    dirs.push(g.dir.clone());
                }
            }
            if targets.is_empty() {
                return Err(StoreError::NotFound(format!(
                    "newsgroups {}",
                    article.groups.join(",")
                )));
            }
            state.posting.insert(id.to_string());
            (targets, dirs)
        };
        let stored = self.store_article(article, &targets, &dirs);
        self.state().posting.remove(id);
        stored.map(|()| targets)
    }

    fn article(&self, group: &str, number: u64) -> Result<Option<Article>> {
        let (dir, id) = {
            let state = self.state();
            let Some(g) = state.groups.get(group) else {
                return Ok(None);
            };
            let Ok(i) = g.entries.binary_search_by_key(&number, |e| e.number) else {
                return Ok(None);
            };
            (g.dir.clone(), g.entries[i].id.clone())
        };
        self.read_article(&dir, number, &id)
    }

    fn article_by_id(&self, message_id: &str) -> Result<Option<Article>> {
        let place = self
            .state()
            .ids
            .get(message_id)
            .and_then(|p| p.first().cloned());
        match place {
            Some((group, number)) => self.article(&group, number),
            None => Ok(None),
        }
    }

    fn locate(&self, message_id: &str) -> Result<Option<Vec<(String, u64)>>> {
        Ok(self.state().ids.get(message_id).cloned())
    }

    fn numbers(&self, group: &str, low: u64, high: u64) -> Result<Vec<u64>> {
        let state = self.state();
        let Some(g) = state.groups.get(group) else {
            return Ok(Vec::new());
        };
        let start = g.entries.partition_point(|e| e.number < low);
        Ok(g.entries[start..]
            .iter()
            .take_while(|e| e.number <= high)
            .map(|e| e.number)
            .collect())
    }

    fn overview(&self, group: &str, low: u64, high: u64) -> Result<Vec<Overview>> {
        let (file, from, to) = {
            let state = self.state();
            let Some(g) = state.groups.get(group) else {
                return Ok(Vec::new());
            };
            let start = g.entries.partition_point(|e| e.number < low);
            let end = g.entries.partition_point(|e| e.number <= high);
            if start >= end {
                return Ok(Vec::new());
            }
            // Lines of parallel posts may be out of number order in the file.
            let slice = &g.entries[start..end];
            let from = slice.iter().map(|e| e.offset).min().unwrap_or(0);
            let to = slice
                .iter()
                .map(|e| e.offset + u64::from(e.len))
                .max()
                .unwrap_or(0);
            (g.overview.clone(), from, to)
        };
        let mut span = vec![0; (to - from) as usize];
        file.read_exact_at(&mut span, from)?;
        let mut out = Vec::new();
        for line in span.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let text = String::from_utf8_lossy(line);
            let mut parts = text.split('\t');
            let Some(number) = parts.next().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            if number < low || number > high {
                continue;
            }
            let fields: Vec<String> = parts.skip(1).map(str::to_string).collect();
            out.push(Overview { number, fields });
        }
        out.sort_by_key(|o| o.number);
        out.dedup_by_key(|o| o.number);
        Ok(out)
    }

    fn arrived_since(&self, since: SystemTime) -> Result<Vec<Arrival>> {
        let since = secs(since);
        let state = self.state();
        let mut found: Vec<(u64, Arc<str>)> = Vec::new();
        for g in state.groups.values() {
            for e in g.entries.iter().rev().take_while(|e| e.arrived >= since) {
                found.push((e.arrived, e.id.clone()));
            }
        }
        found.sort();
        found.dedup_by(|a, b| a.1 == b.1);
        let mut seen = std::collections::HashSet::new();
        Ok(found
            .into_iter()
            .filter(|(_, id)| seen.insert(id.clone()))
            .map(|(_, id)| Arrival {
                message_id: id.to_string(),
                groups: state
                    .ids
                    .get(&id)
                    .map(|p| p.iter().map(|(g, _)| g.clone()).collect())
                    .unwrap_or_default(),
            })
            .collect())
    }

    fn remove_article(&self, message_id: &str) -> Result<bool> {
        let mut state = self.state();
        let Some(places) = state.ids.remove(message_id) else {
            return Ok(false);
        };
        for (g, n) in places {
            if let Some(group) = state.groups.get_mut(&g) {
                remove_from_group(group, &[n])?;
            }
        }
        Ok(true)
    }

    fn expire(&self, group: &str, before: SystemTime) -> Result<u64> {
        let before = secs(before);
        let mut state = self.state();
        let State { groups, ids, .. } = &mut *state;
        let Some(g) = groups.get_mut(group) else {
            return Ok(0);
        };
        let old: Vec<(u64, Arc<str>)> = g
            .entries
            .iter()
            .filter(|e| e.arrived < before)
            .map(|e| (e.number, e.id.clone()))
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        let numbers: Vec<u64> = old.iter().map(|(n, _)| *n).collect();
        remove_from_group(g, &numbers)?;
        for (n, id) in &old {
            if let Some(places) = ids.get_mut(id) {
                places.retain(|(pg, pn)| !(pg == group && pn == n));
                if places.is_empty() {
                    ids.remove(id);
                }
            }
        }
        Ok(old.len() as u64)
    }
}

#[cfg(test)]
mod tests;
