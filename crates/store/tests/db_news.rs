//! The news repository conformance suite on the database backend: on an embedded SQLite file
//! in every `cargo test`, and on PostgreSQL (in a database of its own, made for the run) when
//! `MAILROOM_TEST_POSTGRES=postgres://…` names a server (`.ci/run` sets it).

use std::sync::Arc;

use mailroom_store::db::{DataSourceSpec, DataSources, Pool};
use mailroom_store::{conformance, NewsRepository};

fn spec(url: String) -> DataSourceSpec {
    DataSourceSpec {
        name: "newsdb".into(),
        url,
        user: None,
        password: None,
        max: 4,
        lease: mailroom_store::DEFAULT_LEASE,
    }
}

/// Runs the suite on `sources`; each open is a new repository object on the same tables, as
/// after a restart.
async fn suite(sources: DataSources) {
    let handle = tokio::runtime::Handle::current();
    conformance::news_repository(&|| {
        let news = tokio::task::block_in_place(|| {
            handle.block_on(sources.news("newsdb", "news.example.org"))
        })
        .unwrap();
        Arc::new(news) as Arc<dyn NewsRepository>
    })
    .await;
}

/// A data source on a PostgreSQL database made for this test (the news tables have fixed
/// names, and tests share the server).
async fn own_postgres_database(home: &std::path::Path) -> DataSources {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let url = std::env::var("MAILROOM_TEST_POSTGRES").expect("MAILROOM_TEST_POSTGRES");
    let admin = DataSources::open(&[spec(url.clone())], home).await.unwrap();
    let name = format!(
        "news_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_micros()
    );
    let Pool::Postgres(pool) = admin.pool("newsdb").unwrap() else {
        panic!("not PostgreSQL");
    };
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(pool)
        .await
        .unwrap();
    admin.close().await;
    let (base, _) = url.rsplit_once('/').expect("postgres://host/db");
    DataSources::open(&[spec(format!("{base}/{name}"))], home)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_news_repository() {
    let home = tempfile::tempdir().unwrap();
    let sources = DataSources::open(&[spec("sqlite://var/news.db".into())], home.path())
        .await
        .unwrap();
    suite(sources).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set MAILROOM_TEST_POSTGRES=postgres://…; run by .ci/run"]
async fn postgres_news_repository() {
    let home = tempfile::tempdir().unwrap();
    let sources = own_postgres_database(home.path()).await;
    suite(sources).await;
}

/// Posts and mapping changes from many tasks at once (as from several nodes): every post gets
/// its own numbers, dense in each group, and no added target is lost.
async fn concurrent(sources: DataSources) {
    use mailroom_store::mappings::{Source, Target};
    use mailroom_store::{MappingsRepository, NewArticle};
    let news = Arc::new(sources.news("newsdb", "h").await.unwrap());
    for g in ["a.one", "a.two"] {
        news.create_group(g).await.unwrap();
    }
    let table = format!("vut_{}", std::process::id());
    let mappings = Arc::new(
        sources
            .mappings("newsdb", &[("default".to_string(), table)])
            .await
            .unwrap(),
    );
    let source = Source::parse("list@example.org").unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (news, mappings, source) = (news.clone(), mappings.clone(), source.clone());
        tasks.push(tokio::spawn(async move {
            for j in 0..5 {
                let groups = if (i + j) % 2 == 0 {
                    vec!["a.one".to_string(), "a.two".to_string()]
                } else {
                    vec!["a.two".to_string(), "a.one".to_string()]
                };
                let id = format!("<{i}.{j}@c>");
                news.post(&NewArticle {
                    message_id: id.clone(),
                    groups,
                    octets: format!("From: a@b\r\nSubject: s\r\nMessage-ID: {id}\r\n\r\nx\r\n")
                        .into_bytes(),
                    poster: None,
                })
                .await
                .unwrap();
            }
            let target = Target::parse(&format!("member{i}@example.org")).unwrap();
            assert!(mappings.add("default", &source, &target).await.unwrap());
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for g in ["a.one", "a.two"] {
        let info = news.group(g).await.unwrap().unwrap();
        assert_eq!((info.count, info.low, info.high), (80, 1, 80), "{g}");
        assert_eq!(
            news.numbers(g, 1, 80).await.unwrap(),
            (1..=80).collect::<Vec<u64>>()
        );
    }
    assert_eq!(mappings.get("default", &source).await.unwrap().len(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_posts_and_mappings() {
    let home = tempfile::tempdir().unwrap();
    let sources = DataSources::open(&[spec("sqlite://var/news.db".into())], home.path())
        .await
        .unwrap();
    concurrent(sources).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL: set MAILROOM_TEST_POSTGRES=postgres://…; run by .ci/run"]
async fn postgres_concurrent_posts_and_mappings() {
    let home = tempfile::tempdir().unwrap();
    concurrent(own_postgres_database(home.path()).await).await;
}
