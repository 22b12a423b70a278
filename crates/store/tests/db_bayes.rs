//! The Bayesian token tables (`bayesiananalysis_*`) on SQLite in every `cargo test`, and on
//! PostgreSQL when `MAILROOM_TEST_POSTGRES` names a server (`.ci/run` sets it): counts add
//! up, and feeders training at the same time lose nothing.

use std::collections::HashMap;

use mailroom_store::db::{Corpus, DataSourceSpec, DataSources, TokenCounts};

fn spec(url: String) -> DataSourceSpec {
    DataSourceSpec {
        name: "maildb".into(),
        url,
        user: None,
        password: None,
        max: 8,
        lease: mailroom_store::DEFAULT_LEASE,
    }
}

fn get(map: &HashMap<String, u32>, token: &str) -> u32 {
    map.get(token).copied().unwrap_or(0)
}

/// Trains 2 × 10 messages from 2 tasks at once and checks what was added. The tables are
/// James's fixed names, shared by every run on a server: only the differences are checked.
async fn concurrent_training(sources: DataSources) {
    let store = sources.bayes("maildb").await.unwrap();
    let before: TokenCounts = store.load().await.unwrap();
    let tokens: HashMap<String, u32> = [
        ("Subject:Win".to_string(), 1),
        ("WIN".to_string(), 2),
        ("win".to_string(), 3),
    ]
    .into();
    let mut tasks = Vec::new();
    for corpus in [Corpus::Spam, Corpus::Ham] {
        for _ in 0..2 {
            let store = sources.bayes("maildb").await.unwrap();
            let tokens = tokens.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    store.add(corpus, &tokens).await.unwrap();
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let after = store.load().await.unwrap();
    assert_eq!(after.spam_messages - before.spam_messages, 10);
    assert_eq!(after.ham_messages - before.ham_messages, 10);
    for (token, n) in &tokens {
        assert_eq!(get(&after.spam, token) - get(&before.spam, token), 10 * n);
        assert_eq!(get(&after.ham, token) - get(&before.ham, token), 10 * n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_bayes_tables() {
    let home = tempfile::tempdir().unwrap();
    let sources = DataSources::open(&[spec("sqlite://var/mail.db".into())], home.path())
        .await
        .unwrap();
    concurrent_training(sources).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set MAILROOM_TEST_POSTGRES=postgres://…; run by .ci/run"]
async fn postgres_bayes_tables() {
    let home = tempfile::tempdir().unwrap();
    let url = std::env::var("MAILROOM_TEST_POSTGRES").expect("MAILROOM_TEST_POSTGRES");
    let sources = DataSources::open(&[spec(url)], home.path()).await.unwrap();
    concurrent_training(sources).await;
}
