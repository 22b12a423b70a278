//! Expiry: a background task that removes articles older than their group's rule
//! (`<nntp-repository><expire>`), at start-up and then at each interval. Numbers are not
//! given again after expiry (the repository keeps each group's highest number).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mailroom_net::ShutdownWatch;
use mailroom_store::NewsRepository;

use crate::wildmat::Wildmat;

/// Groups matching `pattern` keep articles for `keep`.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Which groups.
    pub pattern: Wildmat,
    /// How long after arrival.
    pub keep: Duration,
}

/// One pass: for each group, the first rule that matches it removes its articles that
/// arrived more than `keep` before `now`. Returns how many were removed.
pub async fn expire_once(news: &dyn NewsRepository, rules: &[Rule], now: SystemTime) -> u64 {
    let groups = match news.groups().await {
        Ok(groups) => groups,
        Err(error) => {
            tracing::error!(%error, "news expiry: cannot list the groups");
            return 0;
        }
    };
    let mut removed = 0;
    for group in groups {
        let Some(rule) = rules.iter().find(|r| r.pattern.matches(&group.name)) else {
            continue;
        };
        let before = now.checked_sub(rule.keep).unwrap_or(SystemTime::UNIX_EPOCH);
        match news.expire(&group.name, before).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(group = %group.name, expired = n, "news expiry");
                removed += n;
            }
            Err(error) => tracing::error!(group = %group.name, %error, "news expiry failed"),
        }
    }
    removed
}

/// Runs [`expire_once`] now and every `interval` until shutdown.
pub async fn run(
    news: Arc<dyn NewsRepository>,
    rules: Vec<Rule>,
    interval: Duration,
    mut shutdown: ShutdownWatch,
) {
    if rules.is_empty() {
        return;
    }
    loop {
        expire_once(&*news, &rules, SystemTime::now()).await;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.recv() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailroom_store::file::FileNewsRepository;
    use mailroom_store::{Blocking, NewArticle};

    #[tokio::test]
    async fn the_first_matching_rule_applies() {
        let dir = tempfile::tempdir().unwrap();
        let news: Arc<dyn NewsRepository> = Arc::new(Blocking::new(
            FileNewsRepository::open(&dir.path().join("g"), &dir.path().join("t"), "h").unwrap(),
        ));
        for g in ["comp.a", "comp.b", "alt.c"] {
            news.create_group(g).await.unwrap();
            news.post(&NewArticle {
                message_id: format!("<{g}@x>"),
                groups: vec![g.to_string()],
                octets: format!("From: a@b\r\nNewsgroups: {g}\r\nSubject: s\r\n\r\nb\r\n")
                    .into_bytes(),
                poster: None,
            })
            .await
            .unwrap();
        }
        let rules = vec![
            Rule {
                pattern: Wildmat::parse("comp.b").unwrap(),
                keep: Duration::from_secs(86_400 * 365),
            },
            Rule {
                pattern: Wildmat::parse("comp.*").unwrap(),
                keep: Duration::from_secs(60),
            },
        ];
        // An hour later: comp.a's article is older than a minute; comp.b keeps a year;
        // alt.c has no rule.
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(expire_once(&*news, &rules, later).await, 1);
        assert_eq!(news.group("comp.a").await.unwrap().unwrap().count, 0);
        assert_eq!(news.group("comp.a").await.unwrap().unwrap().high, 1);
        assert_eq!(news.group("comp.b").await.unwrap().unwrap().count, 1);
        assert_eq!(news.group("alt.c").await.unwrap().unwrap().count, 1);
        assert_eq!(expire_once(&*news, &rules, SystemTime::now()).await, 0);
    }
}
