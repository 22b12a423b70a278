//! [`FileNews`]: the file news repository through the async [`crate::NewsRepository`], with a
//! post that awaits its sync instead of blocking a thread for it.
//!
//! Every call goes through [`Blocking`] (the blocking pool), but a post holds its pool thread
//! only while it writes its files and overview lines and queues itself for the syncer
//! thread; the task then awaits the syncer's answer. No thread waits through the sync (the
//! blocking backend's `post` keeps one until the syncer answers).

use std::sync::Arc;

use async_trait::async_trait;

use super::post::Done;
use super::FileNewsRepository;
use crate::news::{Arrival, Article, GroupInfo, NewArticle, Overview};
use crate::{Blocking, Result, StoreError};

/// The file news repository served through the async trait.
pub struct FileNews {
    repo: Arc<FileNewsRepository>,
    blocking: Blocking<FileNewsRepository>,
}

impl FileNews {
    /// Serves `repo`.
    pub fn new(repo: FileNewsRepository) -> Self {
        let repo = Arc::new(repo);
        FileNews {
            blocking: Blocking::from_arc(repo.clone()),
            repo,
        }
    }
}

#[async_trait]
impl crate::NewsRepository for FileNews {
    async fn groups(&self) -> Result<Vec<GroupInfo>> {
        self.blocking.groups().await
    }

    async fn group(&self, name: &str) -> Result<Option<GroupInfo>> {
        self.blocking.group(name).await
    }

    async fn create_group(&self, name: &str) -> Result<bool> {
        self.blocking.create_group(name).await
    }

    async fn remove_group(&self, name: &str) -> Result<bool> {
        self.blocking.remove_group(name).await
    }

    async fn post(&self, article: &NewArticle) -> Result<Vec<(String, u64)>> {
        let (done, answer) = tokio::sync::oneshot::channel();
        // On the blocking pool: the repository lock may be held by a cancel or an expiry
        // that rewrites and syncs a group's files. The post queues itself there, so a task
        // dropped meanwhile leaves it to the syncer, never half done.
        let repo = self.repo.clone();
        let article = article.clone();
        let numbers =
            crate::on_blocking_pool(move || repo.inner.begin_post(&article, Done::Async(done)))
                .await??;
        answer
            .await
            .map_err(|_| StoreError::Io(std::io::Error::other("the news syncer stopped")))??;
        Ok(numbers)
    }

    async fn article(&self, group: &str, number: u64) -> Result<Option<Article>> {
        self.blocking.article(group, number).await
    }

    async fn article_by_id(&self, message_id: &str) -> Result<Option<Article>> {
        self.blocking.article_by_id(message_id).await
    }

    async fn locate(&self, message_id: &str) -> Result<Option<Vec<(String, u64)>>> {
        self.blocking.locate(message_id).await
    }

    async fn numbers(&self, group: &str, low: u64, high: u64) -> Result<Vec<u64>> {
        self.blocking.numbers(group, low, high).await
    }

    async fn overview(&self, group: &str, low: u64, high: u64) -> Result<Vec<Overview>> {
        self.blocking.overview(group, low, high).await
    }

    async fn arrived_since(&self, since: std::time::SystemTime) -> Result<Vec<Arrival>> {
        self.blocking.arrived_since(since).await
    }

    async fn remove_article(&self, message_id: &str) -> Result<bool> {
        self.blocking.remove_article(message_id).await
    }

    async fn expire(&self, group: &str, before: std::time::SystemTime) -> Result<u64> {
        self.blocking.expire(group, before).await
    }
}
