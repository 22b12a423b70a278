//! The `<metrics>` wiring: the Prometheus recorder installed before anything counts, the
//! listener bound with the others, and what the endpoints read from this server — the spool
//! and outgoing depths and the database pools when scraped, and the spool's writability and the
//! listeners' accept loops for `/health`. The endpoints themselves are `mailroom-metrics`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use mailroom_config::{Config, RepositoryUrl};
use mailroom_metrics::health::{probe_dir, Check};
use mailroom_metrics::{Health, Observed, Refresh};
use mailroom_net::ShutdownWatch;
use mailroom_store::SpoolRepository;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::task::JoinHandle;

use crate::databases::Databases;

/// The `<metrics>` endpoint, ready to serve.
pub struct Endpoint {
    listener: tokio::net::TcpListener,
    observed: Arc<Observed>,
    health: Arc<Health>,
}

/// Installs the Prometheus recorder when `<metrics enabled="true">`: before the services
/// start, so that no event goes uncounted.
pub fn install(config: &Config) -> Result<Option<PrometheusHandle>> {
    if !config.metrics.enabled {
        return Ok(None);
    }
    mailroom_metrics::install()
        .map(Some)
        .map_err(|e| anyhow!("<metrics>: {e}"))
}

/// Binds the `<metrics>` listener (inside the runtime), when enabled.
pub fn bind(config: &Config) -> Result<Option<tokio::net::TcpListener>> {
    let m = &config.metrics;
    if !m.enabled {
        return Ok(None);
    }
    let addr = std::net::SocketAddr::new(m.bind, m.port);
    let at = m
        .location
        .as_ref()
        .map_or_else(|| "<metrics>".to_string(), ToString::to_string);
    mailroom_metrics::bind(addr)
        .map(Some)
        .with_context(|| format!("{at}: cannot listen on {addr}"))
}

/// What the endpoint reads: the spool (depth, and `/health`'s writability check), the
/// outgoing spools (depth) and the data sources (pool use).
pub struct Sources {
    pub spool: Arc<dyn SpoolRepository>,
    pub outgoing: Vec<Arc<dyn SpoolRepository>>,
    pub databases: Arc<Databases>,
}

impl Endpoint {
    /// The endpoint on `listener` over the installed recorder's `handle`.
    pub fn new(
        config: &Config,
        listener: tokio::net::TcpListener,
        handle: PrometheusHandle,
        sources: Sources,
    ) -> Endpoint {
        let health = Arc::new(Health::new());
        health.check("spool", spool_check(config, sources.spool.clone()));
        let observed = Observed::new(handle, health.clone()).refresh(depths(sources));
        Endpoint {
            listener,
            observed: Arc::new(observed),
            health,
        }
    }

    /// What `/health` looks at: listeners are registered on it as they start.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// Serves `/metrics` and `/health` until shutdown.
    pub fn spawn(self, shutdown: ShutdownWatch) -> JoinHandle<()> {
        tokio::spawn(mailroom_metrics::serve(
            self.listener,
            self.observed,
            shutdown,
        ))
    }
}

/// Registers the accept loop just spawned (the last of `tasks`) as the listener `name`.
pub fn watch(health: &Option<Arc<Health>>, name: String, tasks: &[JoinHandle<()>]) {
    if let (Some(health), Some(task)) = (health, tasks.last()) {
        health.listener(name, task.abort_handle());
    }
}

/// `/health`'s spool check: a file spool's directory takes a probe file (written, synced,
/// removed); a database spool answers a count.
fn spool_check(config: &Config, spool: Arc<dyn SpoolRepository>) -> Check {
    match &config.spool_repository.target {
        RepositoryUrl::File(dir) => {
            let dir: PathBuf = dir.clone();
            Arc::new(move || {
                let dir = dir.clone();
                Box::pin(async move {
                    tokio::task::spawn_blocking(move || probe_dir(&dir))
                        .await
                        .map_err(|e| format!("the probe did not finish: {e}"))?
                })
            })
        }
        _ => Arc::new(move || {
            let spool = spool.clone();
            Box::pin(async move {
                spool
                    .list()
                    .await
                    .map(drop)
                    .map_err(|e| format!("the spool database does not answer: {e}"))
            })
        }),
    }
}

/// The gauges read when scraped: spool and outgoing depths, database pools.
fn depths(sources: Sources) -> Refresh {
    let sources = Arc::new(sources);
    Arc::new(move || {
        let sources = sources.clone();
        Box::pin(async move {
            // The spools have no count of their own; their lists are in memory (file) or
            // one indexed query (database).
            if let Ok(names) = sources.spool.list().await {
                metrics::gauge!("mailroom_spool_depth").set(names.len() as f64);
            }
            let mut outgoing = 0;
            for spool in &sources.outgoing {
                outgoing += spool.list().await.map_or(0, |names| names.len());
            }
            metrics::gauge!("mailroom_outgoing_depth").set(outgoing as f64);
            for (source, (open, idle, max)) in sources.databases.pool_usage() {
                let busy = (open as usize).saturating_sub(idle);
                let gauge = |state: &'static str| {
                    metrics::gauge!("mailroom_db_pool_connections",
                        "source" => source.clone(), "state" => state)
                };
                gauge("idle").set(idle as f64);
                gauge("busy").set(busy as f64);
                metrics::gauge!("mailroom_db_pool_max_connections", "source" => source.clone())
                    .set(f64::from(max));
            }
        })
    })
}
