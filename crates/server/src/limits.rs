//! The process's resource limits and the session limits every listener shares: the
//! open-files soft limit raised to the hard one at start, `<connections>` turned into
//! [`mailroom_net::Limits`], and memory freed by closed sessions given back to the system.

use mailroom_config::Config;
use mailroom_net::Limits;
use rustix::process::{getrlimit, setrlimit, Resource};

/// Raises the open-files soft limit (`RLIMIT_NOFILE`) to the hard limit, so that the
/// listeners' connection limits, not a distribution's default of 1024, bound the connections,
/// and logs the result. Never fails the start: a limit that cannot be raised is logged.
pub fn raise_open_files() {
    let limit = getrlimit(Resource::Nofile);
    let (Some(soft), hard) = (limit.current, limit.maximum) else {
        tracing::info!("open files: no limit");
        return;
    };
    // `None` is unlimited; the kernel caps RLIMIT_NOFILE at fs.nr_open anyway.
    let target = hard.unwrap_or(1 << 20);
    let shown = |limit: Option<u64>| limit.map_or("unlimited".to_string(), |n| n.to_string());
    if target <= soft {
        tracing::info!(soft, hard = %shown(hard), "open files limit");
        return;
    }
    let raised = rustix::process::Rlimit {
        current: Some(target),
        maximum: hard,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::info!(from = soft, to = target, "open files limit raised"),
        Err(e) => tracing::warn!(soft, hard = %shown(hard), error = %e,
            "open files limit could not be raised"),
    }
}

/// The session limits of `<connections>`: sessions per client address, the byte budget and
/// the lifetime of a session (0 in the file: none).
pub fn session_limits(config: &Config) -> Limits {
    let c = &config.connections;
    Limits {
        per_ip: (c.max_connections_per_ip > 0).then_some(c.max_connections_per_ip as usize),
        session_bytes: (c.max_session_bytes > 0).then_some(c.max_session_bytes),
        session_lifetime: c.max_session_time,
    }
}

/// How often the allocator's free pages are given back to the system.
const RELEASE_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// Until shutdown, gives the allocator's free pages back to the system every
/// [`RELEASE_EVERY`]: after a burst of connections (10,000 idle ones, say) has closed, glibc
/// would otherwise keep their memory for good.
pub async fn release_memory(mut shutdown: mailroom_net::ShutdownWatch) {
    let mut every = tokio::time::interval(RELEASE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {
                let _ = tokio::task::spawn_blocking(mailroom_remotemanager::release_free_memory).await;
            }
            _ = shutdown.recv() => return,
        }
    }
}
