//! Per-object exponential backoff for failed reconciles (kube-runtime has none built in),
//! and [`WatchBackoff`] for watch streams.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Failure counts per object key, reset on success.
///
/// The count of an object that stops failing without a success (deleted, or only ever
/// requeued since) is forgotten once it has not failed for twice the cap: an object still
/// failing fails again within the cap, and the others' keys do not pile up.
#[derive(Debug)]
pub struct Backoff {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    base: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(300))
    }
}

impl Backoff {
    /// Backoff starting at `base`, doubling per failure, capped at `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            failures: Mutex::new(HashMap::new()),
            base,
            max,
        }
    }

    /// Records a failure of `key` and returns how long to wait before retrying.
    pub fn fail(&self, key: &str) -> Duration {
        let now = Instant::now();
        let forget_before = now.checked_sub(self.max.saturating_mul(2));
        let n = match self.failures.lock() {
            Ok(mut m) => {
                if let Some(before) = forget_before {
                    m.retain(|_, (_, last)| *last >= before);
                }
                let (n, last) = m.entry(key.to_string()).or_insert((0, now));
                *n = n.saturating_add(1);
                *last = now;
                *n
            }
            Err(_) => 1,
        };
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(20));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// Forgets the failures of `key` (call on success).
    pub fn reset(&self, key: &str) {
        if let Ok(mut m) = self.failures.lock() {
            m.remove(key);
        }
    }
}

/// Backoff for watch streams (`WatchStreamExt::backoff`) that grows while the API server
/// stays unreachable.
///
/// kube-runtime's default backoff starts over on every item the stream yields, and a watcher
/// yields its `Init` marker at the start of every (re)list attempt — before the request that
/// fails. Against an API server that is down, its delay therefore never grows past the first
/// step: one connection attempt and one warning per second per watch, for as long as the
/// server is down (a workload cluster whose first machine is still booting, for minutes).
/// This backoff ignores the stream's resets: the delay doubles per error from `base` to
/// `max` (plus up to 25 % jitter, so that watches failing together do not retry together) and
/// starts over from `base` only after `quiet` without errors.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    base: Duration,
    max: Duration,
    quiet: Duration,
    step: u32,
    last_error: Option<Instant>,
}

impl WatchBackoff {
    /// A backoff from `base` doubling to `max`, starting over after `quiet` without errors.
    pub fn new(base: Duration, max: Duration, quiet: Duration) -> Self {
        WatchBackoff {
            base,
            max,
            quiet,
            step: 0,
            last_error: None,
        }
    }

    /// The backoff of management-cluster watches: the figures of kube-runtime's default and
    /// client-go's reflector (0.8 s doubling to 30 s, starting over after two quiet minutes),
    /// without the default's start-over on every marker event — so an API server that is down
    /// or restarting costs each watch a few attempts a minute rather than one a second.
    pub fn management() -> Self {
        WatchBackoff::new(
            Duration::from_millis(800),
            Duration::from_secs(30),
            Duration::from_secs(120),
        )
    }

    /// The delay before the next attempt without jitter (what [`Iterator::next`] adds 0–25 %
    /// to).
    fn delay(&mut self) -> Duration {
        let now = Instant::now();
        if self
            .last_error
            .is_some_and(|t| now.saturating_duration_since(t) > self.quiet)
        {
            self.step = 0;
        }
        self.last_error = Some(now);
        let d = self
            .base
            .saturating_mul(2u32.saturating_pow(self.step.min(20)))
            .min(self.max);
        self.step = self.step.saturating_add(1);
        d
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.delay();
        Some(d + d.mul_f64(rand::random::<f64>() * 0.25))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    /// Ignored: the stream calls it for marker events that say nothing about the server (see
    /// the type's documentation); `quiet` decides when to start over.
    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_caps_and_resets() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        assert_eq!(b.fail("a"), Duration::from_secs(1));
        assert_eq!(b.fail("a"), Duration::from_secs(2));
        assert_eq!(b.fail("a"), Duration::from_secs(4));
        assert_eq!(b.fail("a"), Duration::from_secs(5));
        assert_eq!(b.fail("b"), Duration::from_secs(1));
        b.reset("a");
        assert_eq!(b.fail("a"), Duration::from_secs(1));
        for _ in 0..100 {
            b.fail("a");
        }
        assert_eq!(b.fail("a"), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn the_count_of_an_object_that_stopped_failing_is_forgotten() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        b.fail("gone");
        b.fail("gone");
        b.fail("failing");
        tokio::time::advance(Duration::from_secs(6)).await;
        // Still failing within twice the cap: its count goes on.
        assert_eq!(b.fail("failing"), Duration::from_secs(2));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(b.fail("failing"), Duration::from_secs(4));
        // `gone` last failed 12 s ago (more than twice the cap): forgotten.
        assert_eq!(b.failures.lock().unwrap().len(), 1);
        assert_eq!(b.fail("gone"), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn watch_backoff_grows_through_resets_and_starts_over_after_quiet() {
        use kube::runtime::utils::Backoff as _;
        let mut b = WatchBackoff::new(Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(60));
        let mut seen = vec![];
        for _ in 0..5 {
            // What the stream does before each attempt: the watcher's Init marker resets.
            b.reset();
            let d = b.next().unwrap();
            seen.push(d);
            tokio::time::advance(d).await;
        }
        let secs = [1, 2, 4, 5, 5];
        for (d, s) in seen.iter().zip(secs) {
            let s = Duration::from_secs(s);
            assert!(*d >= s && *d <= s + s / 4, "{seen:?}");
        }
        // A minute without errors: the next error starts over.
        tokio::time::advance(Duration::from_secs(61)).await;
        let d = b.next().unwrap();
        assert!(d >= Duration::from_secs(1) && d <= Duration::from_millis(1250), "{d:?}");
        // An error soon after continues where it was.
        tokio::time::advance(Duration::from_secs(10)).await;
        let d = b.next().unwrap();
        assert!(d >= Duration::from_secs(2), "{d:?}");
    }
}
