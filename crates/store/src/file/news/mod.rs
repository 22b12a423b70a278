//! The file news repository: one directory per group under the root, nothing to install.
//!
//! ```text
//! <root>/.lock                     flock: one server at a time
//! <root>/<group>/.meta             {"created": secs, "high": n}: written at creation and
//!                                  whenever articles are removed, so numbers are never reused
//! <root>/<group>/.overview         one line per article: number TAB arrival:crc[:poster] TAB
//!                                  the overview fields (crc: CRC-32 of the article, in hex;
//!                                  poster: the posting login, hex-encoded)
//! <root>/<group>/.synced           how much of .overview is durable with its articles
//! <root>/<group>/<number>          the article; a cross-post is one file hard-linked into
//!                                  each of its groups
//! ```
//!
//! Posting ([`post`]) writes the article to a temporary file, renames it into its first group,
//! links it into the others and appends the overview lines; one `syncfs`, run by the syncer
//! thread for every post queued meanwhile, makes all of it durable, and only then are the articles put in the indexes readers
//! see (overview, Message-ID, counts) and the posters told. After each sync, `.synced` records the overview length it covered; at open, the lines
//! past it are checked against their articles' checksums (see [`recover`]). Parallel posts may
//! append their overview lines out of number order; the reader sorts.
//!
//! At open, every group's overview file is read into memory as offsets (number, arrival,
//! Message-ID, where its line is): `OVER` reads only the lines it needs, with one `pread`,
//! and never an article. The message-id index is rebuilt from the overview lines, which hold
//! the Message-ID and so need no file of their own. The highest number is the larger of the
//! `.meta` high, the overview's numbers (dropped lines included) and the article files'
//! names, and is written back to `.meta` when a crash left more: numbers are never reused.

mod post;
mod recover;
mod serve;

pub use serve::FileNews;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::fsutil::{
    create_dir_durable, sync_dir, try_lock, unique_suffix, write_atomic, FileLock,
};
use crate::blocking::NewsRepository;
use crate::news::{valid_group_name, Arrival, Article, GroupInfo, NewArticle, Overview};
use crate::{Result, StoreError};

const META: &str = ".meta";
const OVERVIEW: &str = ".overview";

/// The file news repository.
pub struct FileNewsRepository {
    inner: Arc<Inner>,
    /// The syncer thread ([`post::run_syncer`]), stopped and joined on drop.
    syncer: Option<JoinHandle<()>>,
    /// Held for the repository's life: a second server on the same directory would give the
    /// same numbers twice. Released after the syncer has stopped.
    _lock: FileLock,
}

/// What the repository and its syncer thread share.
struct Inner {
    root: PathBuf,
    tmp: PathBuf,
    /// The host name written in `Xref:` headers.
    xref_host: String,
    state: Mutex<State>,
    /// Posts written and waiting for their sync.
    queue: Mutex<post::Queue>,
    /// The root, kept open for `syncfs`.
    root_dir: File,
    /// Wakes the syncer when a post is queued or the repository closes.
    queued: Condvar,
    #[cfg(test)]
    faults: tests::Faults,
}

impl std::fmt::Debug for FileNewsRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileNewsRepository")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    groups: BTreeMap<String, Group>,
    /// Message-ID → where the article is (published articles only).
    ids: HashMap<Arc<str>, Vec<(String, u64)>>,
    /// Message-IDs being posted now, so that a second post of one is refused at once.
    posting: HashSet<String>,
}

struct Group {
    dir: PathBuf,
    /// The directory, open: a post writes into the group it took its number in, even when
    /// that group is removed (and a new one created under the name) meanwhile.
    dir_fd: Arc<File>,
    /// Unique to this group's life in the process: a post taken in a group that was removed
    /// and created again does not land in the new one.
    incarnation: u64,
    created: u64,
    /// The highest number taken (posts in flight included).
    high: u64,
    /// The highest number readers may have seen: loaded at open or published. Never above a
    /// number whose article (or `.meta`) is durable, so never given again after a crash.
    shown_high: u64,
    /// Published, ascending by number.
    entries: Vec<Entry>,
    /// Posts whose lines are in the overview file but whose sync has not returned: not
    /// readable, but kept by a rewrite of the file.
    in_flight: Vec<Entry>,
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

/// A fresh number, unique in the process, for [`Group::generation`] and
/// [`Group::incarnation`].
fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

struct Entry {
    number: u64,
    arrived: u64,
    id: Arc<str>,
    /// The posting login ([`NewArticle::poster`]).
    poster: Option<Arc<str>>,
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
            let group = recover::load_group(&entry.path())?;
            for e in &group.entries {
                state
                    .ids
                    .entry(e.id.clone())
                    .or_default()
                    .push((name.clone(), e.number));
            }
            state.groups.insert(name, group);
        }
        let inner = Arc::new(Inner {
            root: root.to_path_buf(),
            tmp: tmp.to_path_buf(),
            xref_host: xref_host.to_string(),
            state: Mutex::new(state),
            root_dir: File::open(root)?,
            queue: Mutex::new(post::Queue::default()),
            queued: Condvar::new(),
            #[cfg(test)]
            faults: tests::Faults::default(),
        });
        let syncer = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("news-sync".into())
                .spawn(move || post::run_syncer(&inner))?
        };
        Ok(FileNewsRepository {
            inner,
            syncer: Some(syncer),
            _lock: lock,
        })
    }
}

impl Drop for FileNewsRepository {
    /// Lets the syncer finish the posts queued, then stops it (before the lock goes).
    fn drop(&mut self) {
        self.inner.queue().stop = true;
        self.inner.queued.notify_all();
        if let Some(syncer) = self.syncer.take() {
            let _ = syncer.join();
        }
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn queue(&self) -> MutexGuard<'_, post::Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn info(name: &str, g: &Group) -> GroupInfo {
        GroupInfo {
            name: name.to_string(),
            count: g.entries.len() as u64,
            low: g.entries.first().map_or(g.shown_high + 1, |e| e.number),
            high: g.shown_high,
            created: UNIX_EPOCH + Duration::from_secs(g.created),
        }
    }

    fn read_article(
        &self,
        dir: &Path,
        number: u64,
        entry: (Arc<str>, Option<Arc<str>>),
    ) -> Result<Option<Article>> {
        match fs::read(dir.join(number.to_string())) {
            Ok(octets) => Ok(Some(Article {
                number,
                message_id: entry.0.to_string(),
                octets,
                poster: entry.1.map(|p| p.to_string()),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

fn overview_line(
    overview: &Overview,
    arrived: u64,
    crc: Option<u32>,
    poster: Option<&str>,
) -> String {
    let mut line = match crc {
        Some(crc) => format!("{}\t{arrived}:{crc:08x}", overview.number),
        None => format!("{}\t{arrived}", overview.number),
    };
    if let (Some(poster), Some(_)) = (poster, crc) {
        line.push(':');
        for b in poster.bytes() {
            line.push_str(&format!("{b:02x}"));
        }
    }
    for field in &overview.fields {
        line.push('\t');
        line.push_str(field);
    }
    line.push('\n');
    line
}

/// Appends one line to a group's overview file; returns where it starts. A failed write is
/// cut off again, so that the next line starts clean.
fn append_line(group: &mut Group, line: &str) -> io::Result<u64> {
    let offset = group.overview_len;
    if let Err(e) = (&*group.overview).write_all(line.as_bytes()) {
        group.overview.set_len(offset)?;
        return Err(e);
    }
    group.overview_len += line.len() as u64;
    Ok(offset)
}

fn write_meta(dir: &Path, meta: &Meta) -> Result<()> {
    let bytes = serde_json::to_vec(meta).map_err(io::Error::other)?;
    write_atomic(dir, &dir.join(META), &bytes)?;
    sync_dir(dir)?;
    Ok(())
}

/// Rewrites a group's overview file with only its published and in-flight entries, and its
/// meta with its high. The lines keep their order in the file, so the ones under the old
/// mark stay a prefix: the new file's mark covers them; it is made durable before the new
/// file replaces the old one (for which it is smaller, so still true).
fn rewrite_group(group: &mut Group) -> Result<()> {
    let mut lines: Vec<(u64, u32, bool, usize)> = group
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.offset, e.len, false, i))
        .chain(
            group
                .in_flight
                .iter()
                .enumerate()
                .map(|(i, e)| (e.offset, e.len, true, i)),
        )
        .collect();
    lines.sort_unstable();
    let mut contents = Vec::new();
    let mut new_offsets = Vec::with_capacity(lines.len());
    let mut synced = 0;
    for &(offset, len, _, _) in &lines {
        let mut line = vec![0; len as usize];
        group.overview.read_exact_at(&mut line, offset)?;
        new_offsets.push(contents.len() as u64);
        contents.extend_from_slice(&line);
        if offset + u64::from(len) <= group.synced && synced == new_offsets[new_offsets.len() - 1] {
            synced = contents.len() as u64;
        }
    }
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
    for (&(_, _, in_flight, i), offset) in lines.iter().zip(new_offsets) {
        let entry = if in_flight {
            &mut group.in_flight[i]
        } else {
            &mut group.entries[i]
        };
        entry.offset = offset;
    }
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
        let state = self.inner.state();
        Ok(state
            .groups
            .iter()
            .map(|(n, g)| Inner::info(n, g))
            .collect())
    }

    fn group(&self, name: &str) -> Result<Option<GroupInfo>> {
        Ok(self
            .inner
            .state()
            .groups
            .get(name)
            .map(|g| Inner::info(name, g)))
    }

    fn create_group(&self, name: &str) -> Result<bool> {
        if !valid_group_name(name) {
            return Err(StoreError::InvalidName(name.into(), "not a newsgroup name"));
        }
        let mut state = self.inner.state();
        if state.groups.contains_key(name) {
            return Ok(false);
        }
        let dir = self.inner.root.join(name);
        create_dir_durable(&dir)?;
        write_meta(
            &dir,
            &Meta {
                created: now_secs(),
                high: 0,
            },
        )?;
        let group = recover::load_group(&dir)?;
        sync_dir(&dir)?;
        state.groups.insert(name.to_string(), group);
        Ok(true)
    }

    fn remove_group(&self, name: &str) -> Result<bool> {
        let mut state = self.inner.state();
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
        let doomed = self
            .inner
            .root
            .join(format!(".del.{name}.{}", unique_suffix()));
        fs::rename(&group.dir, &doomed)?;
        sync_dir(&self.inner.root)?;
        if let Err(error) = fs::remove_dir_all(&doomed) {
            // A post in flight may have added a file meanwhile; the next open removes the rest.
            tracing::warn!(dir = %doomed.display(), %error, "news: removing a group's files");
        }
        Ok(true)
    }

    fn post(&self, article: &NewArticle) -> Result<Vec<(String, u64)>> {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        let numbers = self.inner.begin_post(article, post::Done::Blocking(done))?;
        wait.recv()
            .map_err(|_| io::Error::other("the news syncer stopped"))??;
        Ok(numbers)
    }

    fn article(&self, group: &str, number: u64) -> Result<Option<Article>> {
        let (dir, entry) = {
            let state = self.inner.state();
            let Some(g) = state.groups.get(group) else {
                return Ok(None);
            };
            let Ok(i) = g.entries.binary_search_by_key(&number, |e| e.number) else {
                return Ok(None);
            };
            let e = &g.entries[i];
            (g.dir.clone(), (e.id.clone(), e.poster.clone()))
        };
        self.inner.read_article(&dir, number, entry)
    }

    fn article_by_id(&self, message_id: &str) -> Result<Option<Article>> {
        let place = self
            .inner
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
        Ok(self.inner.state().ids.get(message_id).cloned())
    }

    fn numbers(&self, group: &str, low: u64, high: u64) -> Result<Vec<u64>> {
        let state = self.inner.state();
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
            let state = self.inner.state();
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
        // A span may hold lines of posts still in flight, or dropped: only published ones.
        let state = self.inner.state();
        if let Some(g) = state.groups.get(group) {
            out.retain(|o| {
                g.entries
                    .binary_search_by_key(&o.number, |e| e.number)
                    .is_ok()
            });
        }
        Ok(out)
    }

    fn arrived_since(&self, since: SystemTime) -> Result<Vec<Arrival>> {
        let since = secs(since);
        let state = self.inner.state();
        let mut found: Vec<(u64, Arc<str>)> = Vec::new();
        // Every entry: arrival times are not in number order (parallel posts, clock steps).
        for g in state.groups.values() {
            for e in g.entries.iter().filter(|e| e.arrived >= since) {
                found.push((e.arrived, e.id.clone()));
            }
        }
        found.sort();
        let mut seen = HashSet::new();
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
        let mut state = self.inner.state();
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
        let mut state = self.inner.state();
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
