//! Failed-login throttling shared by every listener (SMTP AUTH, POP3 USER/PASS/APOP/AUTH,
//! later NNTP AUTHINFO): failures are counted per client IP across connections, and once an
//! IP has failed [`AuthThrottle::threshold`] times within the window, each further *failure*
//! is answered later, longer each time up to a ceiling. A correct login is never delayed, and
//! one IP's delay is served by its own session's pause, so no other client waits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many IPs are remembered at most; beyond it, entries whose window has passed are
/// dropped, then the oldest, so a scan from many addresses cannot grow memory without bound.
const MAX_TRACKED: usize = 65_536;

/// Counts failed logins per client IP. One is shared by all listeners of the process.
#[derive(Debug)]
pub struct AuthThrottle {
    /// Failures allowed within `window` before answers slow down.
    threshold: u32,
    /// How long a failure counts.
    window: Duration,
    /// The delay of the first throttled answer; doubled for each further failure.
    base_delay: Duration,
    /// The longest delay.
    max_delay: Duration,
    /// Per IP: failures in the current window and when the window started.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Default for AuthThrottle {
    /// 5 failures per 10 minutes, then 1 s, 2 s, 4 s … up to 30 s per failed answer.
    fn default() -> Self {
        AuthThrottle::new(
            5,
            Duration::from_secs(600),
            Duration::from_secs(1),
            Duration::from_secs(30),
        )
    }
}

impl AuthThrottle {
    /// A throttle allowing `threshold` failures per `window`, then delaying each failed
    /// answer by `base_delay`, doubled per further failure up to `max_delay`.
    pub fn new(
        threshold: u32,
        window: Duration,
        base_delay: Duration,
        max_delay: Duration,
    ) -> AuthThrottle {
        AuthThrottle {
            threshold,
            window,
            base_delay,
            max_delay,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Failures allowed within the window before answers slow down.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// Records a failed login from `ip` and returns how long to wait before answering it
    /// (zero while under the threshold). Logs when an IP starts being throttled.
    pub fn failed(&self, ip: IpAddr) -> Duration {
        let now = Instant::now();
        let mut failures = match self.failures.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if failures.len() >= MAX_TRACKED && !failures.contains_key(&ip) {
            let window = self.window;
            failures.retain(|_, (_, since)| now.duration_since(*since) < window);
            if failures.len() >= MAX_TRACKED {
                if let Some(oldest) = failures
                    .iter()
                    .min_by_key(|(_, (_, s))| *s)
                    .map(|(k, _)| *k)
                {
                    failures.remove(&oldest);
                }
            }
        }
        let entry = failures.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= self.window {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
        let count = entry.0;
        drop(failures);
        if count <= self.threshold {
            return Duration::ZERO;
        }
        let doublings = (count - self.threshold - 1).min(16);
        let delay = self
            .base_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay);
        if count == self.threshold + 1 {
            tracing::warn!(%ip, failures = count, ?delay, "failed logins: answers to this address are now delayed");
        } else {
            tracing::info!(%ip, failures = count, ?delay, "failed login delayed");
        }
        delay
    }

    /// Forgets `ip`'s failures after a correct login.
    pub fn succeeded(&self, ip: IpAddr) {
        let mut failures = match self.failures.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        failures.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> AuthThrottle {
        AuthThrottle::new(
            3,
            Duration::from_secs(60),
            Duration::from_millis(100),
            Duration::from_millis(350),
        )
    }

    #[test]
    fn delays_grow_after_the_threshold_and_stop_at_the_ceiling() {
        let t = throttle();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let delays: Vec<u128> = (0..6).map(|_| t.failed(ip).as_millis()).collect();
        assert_eq!(delays, [0, 0, 0, 100, 200, 350]);
    }

    #[test]
    fn other_addresses_are_not_affected_and_success_forgets() {
        let t = throttle();
        let bad: IpAddr = "192.0.2.1".parse().unwrap();
        let good: IpAddr = "2001:db8::1".parse().unwrap();
        for _ in 0..5 {
            t.failed(bad);
        }
        assert_eq!(t.failed(good), Duration::ZERO);
        t.succeeded(bad);
        assert_eq!(t.failed(bad), Duration::ZERO);
    }

    #[test]
    fn the_window_expires() {
        let t = AuthThrottle::new(
            1,
            Duration::from_millis(20),
            Duration::from_millis(100),
            Duration::from_secs(1),
        );
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        t.failed(ip);
        assert!(t.failed(ip) > Duration::ZERO);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(t.failed(ip), Duration::ZERO);
    }
}
