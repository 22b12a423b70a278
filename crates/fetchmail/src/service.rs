//! The FetchMail service: every `<fetch>` task on its own interval in its own tokio task (a
//! slow or failing account never delays another task), and "run this task now" for the
//! command line.

use std::collections::BTreeMap;
use std::sync::Arc;

use mailroom_config::Fetchmail;
use mailroom_net::ShutdownWatch;

use crate::task::{Env, Summary, Task};

/// The configured tasks.
#[derive(Clone)]
pub struct FetchMail {
    tasks: BTreeMap<String, Arc<Task>>,
}

impl FetchMail {
    /// Prepares every task of `config` (TLS settings are read here).
    pub fn new(config: &Fetchmail, env: Arc<Env>) -> Result<FetchMail, String> {
        let mut tasks = BTreeMap::new();
        for t in &config.tasks {
            tasks.insert(t.name.clone(), Arc::new(Task::new(t.clone(), env.clone())?));
        }
        Ok(FetchMail { tasks })
    }

    /// The task names.
    pub fn names(&self) -> Vec<String> {
        self.tasks.keys().cloned().collect()
    }

    /// Starts every task: a first run at once, then one each interval, until shutdown.
    pub fn spawn(&self, shutdown: impl Fn() -> ShutdownWatch) -> Vec<tokio::task::JoinHandle<()>> {
        self.tasks
            .values()
            .map(|task| {
                let task = task.clone();
                let mut watch = shutdown();
                tokio::spawn(async move {
                    tracing::info!(
                        task = task.name(),
                        interval_ms = task.interval().as_millis() as u64,
                        "fetch task started"
                    );
                    loop {
                        tokio::select! {
                            summary = task.run_once() => log(&task, &summary),
                            () = watch.recv() => return,
                        }
                        tokio::select! {
                            () = tokio::time::sleep(task.interval()) => {}
                            () = watch.recv() => return,
                        }
                    }
                })
            })
            .collect()
    }

    /// Runs task `name` now (waiting for a run in progress to end first); `None` when there is
    /// no such task.
    pub async fn run(&self, name: &str) -> Option<Summary> {
        let task = self.tasks.get(name)?;
        let summary = task.run_once().await;
        log(task, &summary);
        Some(summary)
    }
}

fn log(task: &Task, s: &Summary) {
    tracing::info!(
        task = task.name(),
        fetched = s.fetched,
        rejected = s.rejected,
        accounts_ok = s.accounts_ok,
        accounts_failed = s.accounts_failed,
        "fetch run done"
    );
}
