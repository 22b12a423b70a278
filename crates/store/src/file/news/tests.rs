//! The file news repository's own tests (the shared conformance suite runs here too).

use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

use super::*;
use crate::Blocking;

/// Faults and pauses the tests inject into a repository.
#[derive(Default)]
pub(super) struct Faults {
    /// The next sync fails.
    pub fail_sync: AtomicBool,
    /// The next overview append fails.
    pub fail_append: AtomicBool,
    /// A point to stop at once: says it was reached, then waits to go on.
    gate: Mutex<Option<Gate>>,
}

/// Where to stop, how to say it was reached, and what to wait for.
type Gate = (&'static str, mpsc::Sender<()>, mpsc::Receiver<()>);

impl Faults {
    /// Called at the named points of a post ("reserved", "syncing").
    pub fn pause(&self, point: &str) {
        let gate = {
            let mut gate = self.gate.lock().unwrap();
            match &*gate {
                Some((at, ..)) if *at == point => gate.take(),
                _ => None,
            }
        };
        if let Some((_, reached, go)) = gate {
            let _ = reached.send(());
            let _ = go.recv();
        }
    }
}

/// Stops the next post at `point`: returns (reached, go).
fn gate(repo: &FileNewsRepository, point: &'static str) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (reached_tx, reached) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    *repo.inner.faults.gate.lock().unwrap() = Some((point, reached_tx, go_rx));
    (reached, go)
}

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

/// The same suite through [`FileNews`], whose posts await their sync on the task.
#[tokio::test]
async fn conformance_of_the_async_post() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    crate::conformance::news_repository(&move || {
        std::sync::Arc::new(FileNews::new(open(&path))) as Arc<dyn crate::NewsRepository>
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
                            poster: None,
                        })
                        .unwrap();
                        // The same Message-ID again, at once: refused.
                        assert!(matches!(
                            repo.post(&NewArticle {
                                message_id: id.clone(),
                                groups: vec!["a".into()],
                                octets: b"x\r\n\r\n".to_vec(),
                                poster: None,
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

fn post(repo: &FileNewsRepository, groups: &[&str], i: u64) -> Vec<(String, u64)> {
    repo.post(&NewArticle {
        message_id: format!("<{i}@x>"),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        octets: format!("Subject: {i}\r\nMessage-ID: <{i}@x>\r\n\r\nbody {i}\r\n").into_bytes(),
        poster: None,
    })
    .unwrap()
}

fn numbers(repo: &FileNewsRepository, group: &str) -> Vec<u64> {
    let over = repo.overview(group, 1, u64::MAX).unwrap();
    over.iter().map(|o| o.number).collect()
}

fn mark(group: &Path) -> u64 {
    recover::read_mark(&File::open(group.join(recover::SYNCED)).unwrap())
}

/// Puts a group's mark back to `len`, as if the last syncs had not finished before a crash.
fn set_mark(group: &Path, len: u64) {
    let file = OpenOptions::new()
        .write(true)
        .open(group.join(recover::SYNCED))
        .unwrap();
    recover::write_mark(&file, len).unwrap();
}

#[test]
fn a_torn_overview_line_and_an_article_without_one_are_dropped_and_their_numbers_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let repo = open(dir.path());
        repo.create_group("a.b").unwrap();
        for i in 1..=2 {
            post(&repo, &["a.b"], i);
        }
    }
    let group = dir.path().join("groups/a.b");
    // A crash after the rename of article 3 (never acknowledged: its line was not written),
    // and in the middle of the overview line of article 4.
    fs::write(
        group.join("3"),
        "Subject: 3\r\nMessage-ID: <3@x>\r\n\r\nbody\r\n",
    )
    .unwrap();
    let mut f = OpenOptions::new()
        .append(true)
        .open(group.join(OVERVIEW))
        .unwrap();
    f.write_all(b"4\t123:0\tto").unwrap();
    {
        let repo = open(dir.path());
        let info = repo.group("a.b").unwrap().unwrap();
        assert_eq!((info.count, info.low, info.high), (2, 1, 3));
        assert_eq!(repo.locate("<3@x>").unwrap(), None);
        assert!(!group.join("3").exists());
        assert_eq!(numbers(&repo, "a.b"), [1, 2]);
    }
    // The number stays used across a second open, and the Message-ID can be posted again.
    let repo = open(dir.path());
    assert_eq!(post(&repo, &["a.b"], 3), [("a.b".to_string(), 4)]);
    assert_eq!(numbers(&repo, "a.b"), [1, 2, 4]);
}

#[test]
fn a_torn_article_past_the_mark_is_dropped_and_its_number_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("groups/a");
    let b = dir.path().join("groups/b");
    let synced;
    {
        let repo = open(dir.path());
        repo.create_group("a").unwrap();
        repo.create_group("b").unwrap();
        post(&repo, &["a"], 1);
        post(&repo, &["a"], 2);
        synced = mark(&a);
        assert_eq!(synced, fs::metadata(a.join(OVERVIEW)).unwrap().len());
        // A cross-post, then a post to a alone.
        post(&repo, &["a", "b"], 3);
        post(&repo, &["a"], 4);
        // Every sync advanced the mark to the end of what it covered.
        assert_eq!(mark(&a), fs::metadata(a.join(OVERVIEW)).unwrap().len());
    }
    // A power cut before the sync of 3 and 4 finished: the renames and lines reached the disk,
    // article 3's pages did not (empty file), article 4's only in part.
    set_mark(&a, synced);
    set_mark(&b, 0);
    fs::write(a.join("3"), "").unwrap(); // a hard link: b/1 is the same file
    let whole = fs::read(a.join("4")).unwrap();
    fs::write(a.join("4"), &whole[..whole.len() / 2]).unwrap();
    {
        let repo = open(dir.path());
        assert_eq!(numbers(&repo, "a"), [1, 2]);
        assert_eq!(numbers(&repo, "b"), Vec::<u64>::new());
        assert_eq!(repo.group("a").unwrap().unwrap().high, 4);
        assert_eq!(repo.group("b").unwrap().unwrap().high, 1);
        assert_eq!(repo.locate("<3@x>").unwrap(), None);
        assert_eq!(repo.locate("<4@x>").unwrap(), None);
        assert!(!a.join("3").exists() && !a.join("4").exists() && !b.join("1").exists());
        assert_eq!(repo.article("a", 1).unwrap().unwrap().message_id, "<1@x>");
        // The rewritten overview is all under the mark.
        assert_eq!(mark(&a), fs::metadata(a.join(OVERVIEW)).unwrap().len());
    }
    let repo = open(dir.path());
    assert_eq!(
        post(&repo, &["a", "b"], 3),
        [("a".to_string(), 5), ("b".to_string(), 2)]
    );
    assert_eq!(repo.article("b", 2).unwrap().unwrap().message_id, "<3@x>");
}

#[test]
fn only_lines_past_the_mark_are_checked_and_old_lines_need_no_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("groups/a");
    {
        let repo = open(dir.path());
        repo.create_group("a").unwrap();
        post(&repo, &["a"], 1);
        post(&repo, &["a"], 2);
    }
    // Under the mark, an article that changed is not read at open (it was durable).
    fs::write(a.join("1"), "changed").unwrap();
    // A line written before checksums existed, past the mark: kept as it is.
    let o = Overview {
        number: 3,
        fields: ["s", "f", "d", "<3@x>", "", "1", "1", ""]
            .map(String::from)
            .to_vec(),
    };
    let mut f = OpenOptions::new()
        .append(true)
        .open(a.join(OVERVIEW))
        .unwrap();
    f.write_all(overview_line(&o, 1, None, None).as_bytes())
        .unwrap();
    fs::write(a.join("3"), "x").unwrap();
    let repo = open(dir.path());
    assert_eq!(numbers(&repo, "a"), [1, 2, 3]);
    assert_eq!(repo.locate("<3@x>").unwrap(), Some(vec![("a".into(), 3)]));
}

#[test]
fn a_cancel_keeps_the_mark_true_for_the_rewritten_overview() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("groups/a");
    {
        let repo = open(dir.path());
        repo.create_group("a").unwrap();
        for i in 1..=4 {
            post(&repo, &["a"], i);
        }
        // As if the sync of 4 had not finished: the rewrite keeps 4 past the new mark.
        let (before_4, len_of_2) = {
            let mut state = repo.inner.state();
            let g = state.groups.get_mut("a").unwrap();
            g.synced = g.entries[3].offset;
            (g.synced, u64::from(g.entries[1].len))
        };
        assert!(repo.remove_article("<2@x>").unwrap());
        assert_eq!(mark(&a), before_4 - len_of_2);
        post(&repo, &["a"], 5);
        assert_eq!(mark(&a), fs::metadata(a.join(OVERVIEW)).unwrap().len());
        set_mark(&a, before_4 - len_of_2);
    }
    // Article 4 lost its pages: past the mark, it is dropped; 5 is intact.
    fs::write(a.join("4"), "").unwrap();
    let repo = open(dir.path());
    assert_eq!(numbers(&repo, "a"), [1, 3, 5]);
    assert_eq!(repo.group("a").unwrap().unwrap().high, 5);
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
        lines.push_str(&overview_line(&o, 1, None, None));
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

#[test]
fn a_cancel_interrupted_before_its_meta_never_gives_the_number_again() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("groups/a");
    let stale_meta = {
        let repo = open(dir.path());
        repo.create_group("a").unwrap();
        for i in 1..=3 {
            post(&repo, &["a"], i);
        }
        // `.meta` still says high 0 (written at creation). Its next write fails, as a crash
        // at that point would leave it: a directory cannot be renamed over.
        let stale = fs::read(a.join(META)).unwrap();
        fs::remove_file(a.join(META)).unwrap();
        fs::create_dir_all(a.join(META).join("x")).unwrap();
        assert!(repo.remove_article("<3@x>").is_err());
        stale
    };
    fs::remove_dir_all(a.join(META)).unwrap();
    fs::write(a.join(META), stale_meta).unwrap();
    // Whatever the cancel did before it stopped, 3 was given once and never is again.
    let repo = open(dir.path());
    assert_eq!(repo.group("a").unwrap().unwrap().high, 3);
    assert_eq!(post(&repo, &["a"], 4), [("a".to_string(), 4)]);
}

fn article(id: &str, groups: &[&str], poster: Option<&str>) -> NewArticle {
    NewArticle {
        message_id: id.to_string(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        octets: format!("Subject: s\r\nMessage-ID: {id}\r\n\r\nbody\r\n").into_bytes(),
        poster: poster.map(str::to_string),
    }
}

#[test]
fn a_post_is_readable_only_once_durable_and_a_rewrite_meanwhile_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let repo = Arc::new(open(dir.path()));
        repo.create_group("g").unwrap();
        post(&repo, &["g"], 1);
        let (reached, go) = gate(&repo, "syncing");
        let poster = {
            let repo = repo.clone();
            std::thread::spawn(move || repo.post(&article("<b@x>", &["g"], Some("bob"))))
        };
        reached.recv().unwrap();
        // Written, not yet durable: nothing of it is readable.
        let info = repo.group("g").unwrap().unwrap();
        assert_eq!((info.count, info.low, info.high), (1, 1, 1));
        assert_eq!(repo.locate("<b@x>").unwrap(), None);
        assert_eq!(repo.article_by_id("<b@x>").unwrap(), None);
        assert_eq!(repo.article("g", 2).unwrap(), None);
        assert_eq!(numbers(&repo, "g"), [1]);
        assert_eq!(repo.numbers("g", 1, 10).unwrap(), [1]);
        let since = UNIX_EPOCH;
        assert_eq!(repo.arrived_since(since).unwrap().len(), 1);
        // Its Message-ID is taken all the same.
        assert!(matches!(
            repo.post(&article("<b@x>", &["g"], None)),
            Err(StoreError::AlreadyExists(_))
        ));
        // A cancel rewrites the overview file meanwhile: the line in flight stays.
        assert!(repo.remove_article("<1@x>").unwrap());
        assert_eq!(repo.group("g").unwrap().unwrap().count, 0);
        go.send(()).unwrap();
        assert_eq!(poster.join().unwrap().unwrap(), [("g".to_string(), 2)]);
        let info = repo.group("g").unwrap().unwrap();
        assert_eq!((info.count, info.low, info.high), (1, 2, 2));
        assert_eq!(numbers(&repo, "g"), [2]);
        let b = repo.article_by_id("<b@x>").unwrap().unwrap();
        assert_eq!((b.number, b.poster.as_deref()), (2, Some("bob")));
    }
    let repo = open(dir.path());
    assert_eq!(numbers(&repo, "g"), [2]);
    assert_eq!(repo.article("g", 2).unwrap().unwrap().message_id, "<b@x>");
    assert_eq!(post(&repo, &["g"], 3), [("g".to_string(), 3)]);
}

#[test]
fn a_failed_sync_leaves_nothing_readable_and_the_post_can_be_retried_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("groups/g");
    {
        let repo = open(dir.path());
        repo.create_group("g").unwrap();
        repo.inner.faults.fail_sync.store(true, Ordering::SeqCst);
        let failed = repo.post(&article("<a@x>", &["g"], None));
        assert!(matches!(failed, Err(StoreError::Io(_))), "{failed:?}");
        let info = repo.group("g").unwrap().unwrap();
        assert_eq!((info.count, info.high), (0, 0));
        assert_eq!(repo.locate("<a@x>").unwrap(), None);
        assert_eq!(repo.article("g", 1).unwrap(), None);
        assert!(repo.overview("g", 1, 10).unwrap().is_empty());
        assert!(!g.join("1").exists());
        // Not refused as a duplicate: refused because nothing more is acknowledged (the
        // kernel may have dropped the pages the sync did not write) until a restart.
        let again = repo.post(&article("<a@x>", &["g"], None));
        assert!(matches!(again, Err(StoreError::Io(_))), "{again:?}");
    }
    let repo = open(dir.path());
    assert_eq!(repo.group("g").unwrap().unwrap().count, 0);
    assert_eq!(
        repo.post(&article("<a@x>", &["g"], None)).unwrap(),
        [("g".to_string(), 2)]
    );
}

#[test]
fn a_failed_overview_append_takes_nothing_but_a_number() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("groups/g");
    {
        let repo = open(dir.path());
        repo.create_group("g").unwrap();
        repo.create_group("h").unwrap();
        repo.inner.faults.fail_append.store(true, Ordering::SeqCst);
        assert!(repo.post(&article("<a@x>", &["g", "h"], None)).is_err());
        assert_eq!(repo.locate("<a@x>").unwrap(), None);
        assert!(!g.join("1").exists());
        assert_eq!(
            repo.post(&article("<a@x>", &["g", "h"], None)).unwrap(),
            [("g".to_string(), 2), ("h".to_string(), 2)]
        );
    }
    let repo = open(dir.path());
    assert_eq!(numbers(&repo, "g"), [2]);
    assert_eq!(numbers(&repo, "h"), [2]);
}

#[test]
fn a_group_removed_and_created_again_during_a_post_does_not_get_its_number() {
    let dir = tempfile::tempdir().unwrap();
    {
        let repo = Arc::new(open(dir.path()));
        repo.create_group("g").unwrap();
        post(&repo, &["g"], 1);
        let (reached, go) = gate(&repo, "reserved");
        let poster = {
            let repo = repo.clone();
            std::thread::spawn(move || repo.post(&article("<old@x>", &["g"], None)))
        };
        reached.recv().unwrap();
        assert!(repo.remove_group("g").unwrap());
        assert!(repo.create_group("g").unwrap());
        go.send(()).unwrap();
        // Its group went away under it: the article went with it.
        let _ = poster.join().unwrap();
        let info = repo.group("g").unwrap().unwrap();
        assert_eq!((info.count, info.high), (0, 0));
        assert_eq!(repo.locate("<old@x>").unwrap(), None);
        assert_eq!(post(&repo, &["g"], 2), [("g".to_string(), 1)]);
        assert_eq!(repo.article("g", 1).unwrap().unwrap().message_id, "<2@x>");
    }
    let repo = open(dir.path());
    assert_eq!(numbers(&repo, "g"), [1]);
    assert_eq!(repo.article("g", 1).unwrap().unwrap().message_id, "<2@x>");
    assert_eq!(repo.locate("<old@x>").unwrap(), None);
}

#[test]
fn newnews_finds_articles_whose_arrivals_are_out_of_number_order() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("groups/g");
    {
        let repo = open(dir.path());
        repo.create_group("g").unwrap();
        for i in 1..=3 {
            post(&repo, &["g"], i);
        }
    }
    // Parallel posts (and clock steps) leave arrivals out of number order.
    let text = fs::read_to_string(g.join(OVERVIEW)).unwrap();
    let arrivals = ["1000000000", "3000000000", "2000000000"];
    let lines: String = text
        .lines()
        .zip(arrivals)
        .map(|(line, at)| {
            let (n, rest) = line.split_once('\t').unwrap();
            let (arrival, rest) = rest.split_once('\t').unwrap();
            let (_, crc) = arrival.split_once(':').unwrap();
            format!("{n}\t{at}:{crc}\t{rest}\n")
        })
        .collect();
    assert_eq!(lines.len(), text.len());
    fs::write(g.join(OVERVIEW), lines).unwrap();
    let repo = open(dir.path());
    let since = |s| {
        repo.arrived_since(UNIX_EPOCH + Duration::from_secs(s))
            .unwrap()
    };
    let ids = |a: Vec<Arrival>| a.into_iter().map(|a| a.message_id).collect::<Vec<_>>();
    assert_eq!(ids(since(2_500_000_000)), ["<2@x>"]);
    assert_eq!(ids(since(1_500_000_000)), ["<3@x>", "<2@x>"]);
    assert_eq!(since(0).len(), 3);
}
