/*!
`mailroom-metrics`: the server's Prometheus `/metrics` and its `/health` check, served with
axum on the `<metrics>` listener.

* The other crates count through the [`metrics`] facade with one-line
  `metrics::counter!("mailroom_...")` calls where things happen (a connection accepted, a mail
  spooled, an outcome line logged); without an installed recorder those calls do nothing, so
  library tests and tools pay nothing. [`install`] installs the Prometheus recorder (once, in
  the `mailroom` binary) and describes every metric in [`NAMES`].
* Gauges that are a state rather than an event (spool depths, database pools) are read when
  scraped: [`Observed::refresh`] takes closures that set them just before each render.
* [`health::Health`] knows the listener tasks and the checks (the spool is writable) that
  `/health` runs.

This crate opens no repository itself and parses no protocol: the binary hands it closures.
*/
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod health;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use mailroom_net::ShutdownWatch;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

pub use health::Health;

/// Every metric Mailroom records, with its kind and help text (the `# HELP` line).
pub const NAMES: &[(&str, Kind, &str)] = &[
    (
        "mailroom_connections_total",
        Kind::Counter,
        "Connections accepted, by protocol (smtp, pop3, nntp, remotemanager).",
    ),
    (
        "mailroom_mails_received_total",
        Kind::Counter,
        "Mails made durable in the spool, by source (smtp, fetchmail).",
    ),
    (
        "mailroom_deliveries_total",
        Kind::Counter,
        "Per-recipient outcome lines, by outcome (delivered, deferred, failed, bounced, ...).",
    ),
    (
        "mailroom_bounces_total",
        Kind::Counter,
        "Bounces and delivery status notifications sent to senders.",
    ),
    (
        "mailroom_spool_depth",
        Kind::Gauge,
        "Mails in the spool, read when scraped.",
    ),
    (
        "mailroom_outgoing_depth",
        Kind::Gauge,
        "Mails in the RemoteDelivery outgoing spools, read when scraped.",
    ),
    (
        "mailroom_delivery_attempts_total",
        Kind::Counter,
        "Remote delivery attempts (one per mail per try).",
    ),
    (
        "mailroom_delivery_duration_seconds",
        Kind::Histogram,
        "How long one remote delivery attempt of a mail took.",
    ),
    (
        "mailroom_auth_failures_total",
        Kind::Counter,
        "Failed logins, by protocol (smtp, pop3, nntp, remotemanager).",
    ),
    (
        "mailroom_fetchmail_runs_total",
        Kind::Counter,
        "FetchMail task runs over all their accounts.",
    ),
    (
        "mailroom_fetchmail_account_failures_total",
        Kind::Counter,
        "FetchMail account fetches that failed (retried at the next interval).",
    ),
    (
        "mailroom_db_pool_connections",
        Kind::Gauge,
        "Database pool connections, by data source and state (idle, busy), read when scraped.",
    ),
    (
        "mailroom_db_pool_max_connections",
        Kind::Gauge,
        "The most connections a data source's pool opens.",
    ),
];

/// What kind of metric a name in [`NAMES`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// A value set when it changes or when scraped.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

/// The buckets of `mailroom_delivery_duration_seconds`: from a fast local relay to a slow
/// remote MX that answers just before the timeout.
const DELIVERY_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Builds the Prometheus recorder with Mailroom's buckets (not installed).
pub fn recorder() -> Result<metrics_exporter_prometheus::PrometheusRecorder, BuildError> {
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("mailroom_delivery_duration_seconds".into()),
            DELIVERY_BUCKETS,
        )?
        .build_recorder())
}

/// Installs the Prometheus recorder as the process's global one and describes every metric in
/// [`NAMES`]. Call once, before the first count; a second call fails.
pub fn install() -> Result<PrometheusHandle, String> {
    let recorder = recorder().map_err(|e| e.to_string())?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
    describe();
    Ok(handle)
}

/// Gives every metric of [`NAMES`] its help text, and makes the counters and gauges without
/// labels appear (at 0) before the first event, so a scrape shows what exists.
pub fn describe() {
    for &(name, kind, help) in NAMES {
        match kind {
            Kind::Counter => {
                metrics::describe_counter!(name, help);
                if !name.ends_with("_total") || has_labels(name) {
                    continue;
                }
                metrics::counter!(name).increment(0);
            }
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, metrics::Unit::Seconds, help),
        }
    }
}

/// Whether the metric is always recorded with labels (a bare series would be misleading).
fn has_labels(name: &str) -> bool {
    matches!(
        name,
        "mailroom_connections_total"
            | "mailroom_mails_received_total"
            | "mailroom_deliveries_total"
            | "mailroom_auth_failures_total"
    )
}

/// A future that sets gauges (a spool's depth, a pool's use) just before a scrape renders.
pub type Refresh = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What the endpoints serve: the recorder's handle, the health checks, and the gauges read
/// when scraped.
pub struct Observed {
    /// Renders the text format.
    handle: PrometheusHandle,
    /// What `/health` checks.
    health: Arc<Health>,
    /// Run, in order, before each `/metrics` render.
    refresh: Vec<Refresh>,
}

impl Observed {
    /// The endpoints' state over an installed recorder's `handle`.
    pub fn new(handle: PrometheusHandle, health: Arc<Health>) -> Observed {
        Observed {
            handle,
            health,
            refresh: Vec::new(),
        }
    }

    /// Adds gauges set before each scrape.
    pub fn refresh(mut self, refresh: Refresh) -> Observed {
        self.refresh.push(refresh);
        self
    }

    /// The `/metrics` body: the gauges refreshed, then every metric in the text format.
    pub async fn render(&self) -> String {
        for refresh in &self.refresh {
            refresh().await;
        }
        self.handle.render()
    }
}

/// Binds the `<metrics>` listener (inside a tokio runtime), so that a busy port stops the
/// start like any other listener's.
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let std = std::net::TcpListener::bind(addr)?;
    std.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(std)
}

/// The endpoints: `GET /metrics` and `GET /health`.
pub fn router(observed: Arc<Observed>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/health", get(health_page))
        .with_state(observed)
}

/// Serves [`router`] on `listener` until shutdown.
pub async fn serve(
    listener: tokio::net::TcpListener,
    observed: Arc<Observed>,
    mut shutdown: ShutdownWatch,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics listening (/metrics, /health)");
    }
    let served = axum::serve(listener, router(observed))
        .with_graceful_shutdown(async move { shutdown.recv().await })
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "the metrics listener stopped");
    }
}

async fn metrics_page(State(observed): State<Arc<Observed>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        observed.render().await,
    )
}

async fn health_page(State(observed): State<Arc<Observed>>) -> impl IntoResponse {
    let report = observed.health.report().await;
    let status = if report.healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        report.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_a_mailroom_metric_once() {
        let mut names: Vec<&str> = NAMES.iter().map(|(n, _, _)| *n).collect();
        assert!(names.iter().all(|n| n.starts_with("mailroom_")));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), NAMES.len());
    }

    #[tokio::test]
    async fn renders_counters_labels_gauges_and_histogram_buckets() {
        let recorder = recorder().unwrap();
        let handle = recorder.handle();
        let observed = Observed::new(handle, Arc::new(Health::new())).refresh(Arc::new(|| {
            Box::pin(async { metrics::gauge!("mailroom_spool_depth").set(7.0) })
        }));
        metrics::with_local_recorder(&recorder, || {
            describe();
            metrics::counter!("mailroom_connections_total", "protocol" => "smtp").increment(2);
            metrics::histogram!("mailroom_delivery_duration_seconds").record(0.3);
        });
        // The refresh runs outside the closure: give it the same recorder.
        let text = {
            let _guard = metrics::set_default_local_recorder(&recorder);
            observed.render().await
        };
        assert!(
            text.contains("mailroom_connections_total{protocol=\"smtp\"} 2"),
            "{text}"
        );
        assert!(text.contains("mailroom_bounces_total 0"), "{text}");
        assert!(text.contains("mailroom_spool_depth 7"), "{text}");
        assert!(
            text.contains("mailroom_delivery_duration_seconds_bucket{le=\"0.5\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mailroom_delivery_duration_seconds_bucket{le=\"0.25\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("# HELP mailroom_connections_total Connections accepted"),
            "{text}"
        );
    }
}
