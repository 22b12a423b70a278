//! The file news repository: one directory per group under the root, nothing to install.
//!
//! ```text
//! <root>/.lock                     flock: one server at a time
//! <root>/<group>/.meta             {"created": secs, "high": n}: written at creation and
//!                                  whenever articles are removed, so numbers are never reused
//! <root>/<group>/.overview         one line per article: number TAB arrival TAB the overview
//!                                  fields; appended (and fsync'd) at each post
//! <root>/<group>/<number>          the article; a cross-post is one file hard-linked into
//!                                  each of its groups
//! ```
//!
//! A post writes the article to a temporary file in the temp directory and waits for a
//! `syncfs` that covers it, renames it into its first group, links it into the others, appends
//! the overview lines and waits for a second `syncfs` (which covers the directories and the
//! overview) before it returns: an acknowledged article survives a crash. Both `syncfs` are
//! group commits: concurrent posts share them, and the repository lock is never held across
//! one, so posts in parallel cost about two `syncfs` per batch rather than four fsyncs each.
//! Parallel posts may append their overview lines out of number order; the reader sorts.
//!
//! At open, every group's overview file is read into memory as offsets (number, arrival,
//! Message-ID, where its line is): `OVER` reads only the lines it needs, with one `pread`,
//! and never an article. The message-id index is rebuilt from the overview lines, which hold
//! the Message-ID and so need no file of their own. The highest number is the larger of the
//! `.meta` high, the overview's numbers and the article files' names; an article file above
//! the last overview line (a crash between the rename and the overview line; its content was
//! durable before the rename) is indexed then, so its number is never given again.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
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
    /// Group commit of `syncfs`: posts in parallel share one.
    syncs: GroupCommit<()>,
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
            let group = load_group(&entry.path())?;
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
            syncs: GroupCommit::new((), "news syncfs"),
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
    /// `syncfs` shared by the callers that arrive meanwhile).
    fn sync(&self) -> Result<()> {
        let ticket = self.syncs.add(|()| ());
        self.syncs.wait(
            ticket,
            Duration::ZERO,
            |()| (),
            |()| {
                rustix::fs::syncfs(&self.root_dir).map_err(io::Error::from)?;
                Ok(())
            },
        )?;
        Ok(())
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

        let tmp = self.tmp.join(format!("news.{}.tmp", unique_suffix()));
        let written = File::create(&tmp)
            .and_then(|mut f| f.write_all(&octets))
            .map_err(StoreError::from)
            .and_then(|()| self.sync());
        let first = dirs[0].join(targets[0].1.to_string());
        if let Err(e) = written.and_then(|()| Ok(fs::rename(&tmp, &first)?)) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        for (dir, (_, n)) in dirs.iter().zip(targets).skip(1) {
            fs::hard_link(&first, dir.join(n.to_string()))?;
        }
        {
            let mut state = self.state();
            let arrived = now_secs();
            for (g, n) in targets {
                // A group removed meanwhile just does not get the line.
                if let Some(group) = state.groups.get_mut(g) {
                    append_overview(group, &Overview::of_article(*n, &octets), arrived)?;
                }
            }
            state
                .ids
                .insert(Arc::from(article.message_id.as_str()), targets.to_vec());
        }
        // The renames, the links and the overview lines.
        self.sync()
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

/// Reads a group directory: meta, overview (a torn last line is cut off), and articles a crash
/// left without an overview line.
fn load_group(dir: &Path) -> Result<Group> {
    let meta_path = dir.join(META);
    let meta = match fs::read(&meta_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| corrupt(&meta_path, e))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let meta = Meta {
                created: now_secs(),
                high: 0,
            };
            write_meta(dir, &meta)?;
            meta
        }
        Err(e) => return Err(e.into()),
    };
    let path = dir.join(OVERVIEW);
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)?;
    let contents = fs::read(&path)?;
    let mut entries = Vec::new();
    let mut offset = 0u64;
    let mut good = 0u64;
    for line in contents.split_inclusive(|&b| b == b'\n') {
        let len = line.len() as u64;
        if line.ends_with(b"\n") {
            if let Some(entry) = parse_line(line, offset) {
                entries.push(entry);
            }
            good = offset + len;
        }
        offset += len;
    }
    if good < contents.len() as u64 {
        file.set_len(good)?;
        file.sync_all()?;
    }
    // Parallel posts append out of order; a number twice keeps its first line.
    entries.sort_by_key(|e| e.number);
    entries.dedup_by_key(|e| e.number);
    let mut group = Group {
        dir: dir.to_path_buf(),
        created: meta.created,
        high: meta.high.max(entries.last().map_or(0, |e| e.number)),
        entries,
        overview: Arc::new(file),
        overview_len: good,
    };
    // Articles renamed into place whose overview line a crash prevented (their contents were
    // durable before the rename): indexed now, above the last overview line.
    let last = group.entries.last().map_or(0, |e| e.number);
    let mut unindexed: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .filter(|&n| n > last)
        .collect();
    unindexed.sort_unstable();
    for number in unindexed {
        let octets = fs::read(dir.join(number.to_string()))?;
        append_overview(
            &mut group,
            &Overview::of_article(number, &octets),
            now_secs(),
        )?;
        group.overview.sync_data()?;
        group.high = group.high.max(number);
    }
    Ok(group)
}

fn parse_line(line: &[u8], offset: u64) -> Option<Entry> {
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.trim_end_matches('\n').split('\t');
    let number = parts.next()?.parse().ok()?;
    let arrived = parts.next()?.parse().ok()?;
    let id = parts.nth(3)?;
    Some(Entry {
        number,
        arrived,
        id: Arc::from(id),
        offset,
        len: line.len() as u32,
    })
}

fn overview_line(overview: &Overview, arrived: u64) -> String {
    let mut line = format!("{}\t{arrived}", overview.number);
    for field in &overview.fields {
        line.push('\t');
        line.push_str(field);
    }
    line.push('\n');
    line
}

fn append_overview(group: &mut Group, overview: &Overview, arrived: u64) -> Result<()> {
    let line = overview_line(overview, arrived);
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

/// Removes `numbers` (ascending) from a group: files, entries, then the rewritten index.
fn remove_from_group(group: &mut Group, numbers: &[u64]) -> Result<()> {
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
        let group = load_group(&dir)?;
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
mod tests {
    use super::*;
    use crate::Blocking;

    fn open(dir: &Path) -> FileNewsRepository {
        FileNewsRepository::open(&dir.join("groups"), &dir.join("temp"), "news.test").unwrap()
    }

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        crate::conformance::news_repository(&move || {
            std::sync::Arc::new(Blocking::new(open(&path))) as Arc<dyn crate::NewsRepository>
        })
        .await;
    }

    #[test]
    fn parallel_posts_get_distinct_numbers_that_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let repo = Arc::new(open(dir.path()));
            repo.create_group("a").unwrap();
            repo.create_group("b").unwrap();
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let repo = repo.clone();
                    std::thread::spawn(move || {
                        for i in 0..25 {
                            let id = format!("<{t}.{i}@x>");
                            let groups = if i % 2 == 0 {
                                vec!["a".into(), "b".into()]
                            } else {
                                vec!["a".into()]
                            };
                            repo.post(&NewArticle {
                                message_id: id.clone(),
                                groups,
                                octets: format!("Subject: {id}\r\nMessage-ID: {id}\r\n\r\nb\r\n")
                                    .into_bytes(),
                            })
                            .unwrap();
                            // The same Message-ID again, at once: refused.
                            assert!(matches!(
                                repo.post(&NewArticle {
                                    message_id: id.clone(),
                                    groups: vec!["a".into()],
                                    octets: b"x\r\n\r\n".to_vec()
                                }),
                                Err(StoreError::AlreadyExists(_))
                            ));
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        }

        let repo = open(dir.path());
        // Every sub-range, whatever the order of the lines in the file.
        for low in 1..=200 {
            let some = repo.overview("a", low, low + 7).unwrap();
            let expected: Vec<u64> = (low..=(low + 7).min(200)).collect();
            assert_eq!(some.iter().map(|o| o.number).collect::<Vec<_>>(), expected);
        }
        let a = repo.overview("a", 1, u64::MAX).unwrap();
        assert_eq!(
            a.iter().map(|o| o.number).collect::<Vec<_>>(),
            (1..=200).collect::<Vec<_>>()
        );
        assert_eq!(repo.group("b").unwrap().unwrap().count, 104);
        for o in &a {
            let article = repo.article("a", o.number).unwrap().unwrap();
            assert_eq!(article.message_id, o.message_id());
            let places = repo.locate(o.message_id()).unwrap().unwrap();
            assert!(places.contains(&("a".to_string(), o.number)));
        }
    }

    #[test]
    fn a_second_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path());
        assert!(matches!(
            FileNewsRepository::open(&dir.path().join("groups"), &dir.path().join("temp"), "h"),
            Err(StoreError::InUse(_))
        ));
    }

    #[test]
    fn a_torn_overview_line_and_an_unindexed_article_are_repaired() {
        let dir = tempfile::tempdir().unwrap();
        {
            let repo = open(dir.path());
            repo.create_group("a.b").unwrap();
            for i in 1..=2 {
                repo.post(&NewArticle {
                    message_id: format!("<{i}@x>"),
                    groups: vec!["a.b".into()],
                    octets: format!("Subject: {i}\r\nMessage-ID: <{i}@x>\r\n\r\nbody\r\n")
                        .into_bytes(),
                })
                .unwrap();
            }
        }
        let group = dir.path().join("groups/a.b");
        // A crash after the rename of article 3, and in the middle of an overview line.
        fs::write(
            group.join("3"),
            "Subject: 3\r\nMessage-ID: <3@x>\r\n\r\nbody\r\n",
        )
        .unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(group.join(OVERVIEW))
            .unwrap();
        f.write_all(b"4\t123\tto").unwrap();
        let repo = open(dir.path());
        let info = repo.group("a.b").unwrap().unwrap();
        assert_eq!((info.count, info.low, info.high), (3, 1, 3));
        assert_eq!(repo.locate("<3@x>").unwrap(), Some(vec![("a.b".into(), 3)]));
        let over = repo.overview("a.b", 1, 10).unwrap();
        assert_eq!(over.iter().map(|o| o.number).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn overview_of_the_last_100_of_100000_reads_no_article() {
        let dir = tempfile::tempdir().unwrap();
        {
            let repo = open(dir.path());
            repo.create_group("big").unwrap();
        }
        // Written directly: posting 100,000 articles with an fsync each takes too long here.
        let group = dir.path().join("groups/big");
        let mut lines = String::new();
        for n in 1..=100_000u64 {
            let o = Overview {
                number: n,
                fields: vec![
                    format!("subject {n}"),
                    "a@b".into(),
                    "date".into(),
                    format!("<{n}@big>"),
                    String::new(),
                    "100".into(),
                    "3".into(),
                    format!("news.test big:{n}"),
                ],
            };
            lines.push_str(&overview_line(&o, 1));
        }
        fs::write(group.join(OVERVIEW), lines).unwrap();
        let repo = open(dir.path());
        // No article file exists: the overview comes from the index alone.
        let started = std::time::Instant::now();
        let over = repo.overview("big", 99_901, 100_000).unwrap();
        assert_eq!(over.len(), 100);
        assert_eq!(over[0].fields[0], "subject 99901");
        assert_eq!(over[99].message_id(), "<100000@big>");
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(repo.group("big").unwrap().unwrap().high, 100_000);
    }
}
