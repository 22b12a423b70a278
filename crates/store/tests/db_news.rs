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
    let url = std::env::var("MAILROOM_TEST_POSTGRES").expect("MAILROOM_TEST_POSTGRES");
    // The news tables have fixed names: a database of this run's own.
    let admin = DataSources::open(&[spec(url.clone())], home.path())
        .await
        .unwrap();
    let name = format!(
        "news_{}_{}",
        std::process::id(),
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
    let (base, _) = url.rsplit_once('/').expect("postgres://host/db");
    let sources = DataSources::open(&[spec(format!("{base}/{name}"))], home.path())
        .await
        .unwrap();
    suite(sources).await;
}
