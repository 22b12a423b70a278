//! What `/health` answers: every registered listener task still running, and every check (the
//! spool is writable) passing. It owns the list of listeners and checks; the checks themselves
//! are closures of the binary, except [`probe_dir`], the writability probe of a directory.

use std::fmt;
use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::AbortHandle;

/// One check: `Ok` or why not.
pub type Check =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// How long one check may take before it counts as failed (a hung disk or database).
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The listeners and checks `/health` looks at.
#[derive(Default)]
pub struct Health {
    /// Each listener's name (`SMTP 127.0.0.1:2525`) and its accept-loop task: a finished task
    /// is a listener that no longer accepts.
    listeners: Mutex<Vec<(String, AbortHandle)>>,
    /// Named checks run on each request.
    checks: Mutex<Vec<(String, Check)>>,
}

impl Health {
    /// Nothing registered yet: healthy.
    pub fn new() -> Health {
        Health::default()
    }

    /// Registers a listener's accept-loop task.
    pub fn listener(&self, name: impl Into<String>, task: AbortHandle) {
        lock(&self.listeners).push((name.into(), task));
    }

    /// Registers a check.
    pub fn check(&self, name: impl Into<String>, check: Check) {
        lock(&self.checks).push((name.into(), check));
    }

    /// Looks at every listener and runs every check.
    pub async fn report(&self) -> Report {
        let mut report = Report::default();
        for (name, task) in lock(&self.listeners).iter() {
            if task.is_finished() {
                report.problems.push(format!("{name}: not listening"));
            } else {
                report.fine.push(format!("{name}: listening"));
            }
        }
        let checks: Vec<(String, Check)> = lock(&self.checks).clone();
        for (name, check) in checks {
            match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                Ok(Ok(())) => report.fine.push(format!("{name}: ok")),
                Ok(Err(why)) => report.problems.push(format!("{name}: {why}")),
                Err(_) => report
                    .problems
                    .push(format!("{name}: no answer within {CHECK_TIMEOUT:?}")),
            }
        }
        report
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The outcome of [`Health::report`].
#[derive(Debug, Default)]
pub struct Report {
    /// What is wrong, one line each; empty when healthy.
    pub problems: Vec<String>,
    /// What is fine.
    pub fine: Vec<String>,
}

impl Report {
    /// Whether nothing is wrong.
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for Report {
    /// `ok` or `unhealthy`, then the problems, then what is fine, one per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", if self.healthy() { "ok" } else { "unhealthy" })?;
        for line in self.problems.iter().chain(&self.fine) {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// Whether a file can be created, written, synced and removed in `dir`: what the spool needs
/// to accept mail. Works as root too, where permissions alone do not stop writes: a directory
/// that is missing, is a file, is read-only mounted or full fails here.
pub fn probe_dir(dir: &Path) -> Result<(), String> {
    let path = dir.join(".health-probe");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut file| {
            file.write_all(b"ok\n")?;
            file.sync_all()
        });
    let removed = std::fs::remove_file(&path);
    written
        .and(removed)
        .map_err(|e| format!("{} is not writable: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_finished_listener_or_a_failing_check_is_unhealthy() {
        let health = Health::new();
        let running = tokio::spawn(std::future::pending::<()>());
        health.listener("SMTP 127.0.0.1:1", running.abort_handle());
        assert!(health.report().await.healthy());

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spool");
        std::fs::create_dir(&dir).unwrap();
        let probed = dir.clone();
        health.check(
            "spool",
            Arc::new(move || {
                let dir = probed.clone();
                Box::pin(async move { probe_dir(&dir) })
            }),
        );
        let report = health.report().await;
        assert!(report.healthy(), "{report}");
        assert!(!dir.join(".health-probe").exists());

        // A file where the directory was: fails for root too.
        std::fs::remove_dir(&dir).unwrap();
        std::fs::write(&dir, b"").unwrap();
        let report = health.report().await;
        assert!(!report.healthy());
        assert!(
            report.to_string().starts_with("unhealthy\nspool: "),
            "{report}"
        );
        std::fs::remove_file(&dir).unwrap();

        running.abort();
        let _ = running.await;
        let report = health.report().await.to_string();
        assert!(
            report.contains("SMTP 127.0.0.1:1: not listening"),
            "{report}"
        );
    }
}
