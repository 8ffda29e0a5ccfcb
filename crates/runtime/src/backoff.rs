//! Per-object exponential backoff for failed reconciles (kube-runtime has none built in).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Failure counts per object key, reset on success.
#[derive(Debug)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
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
        let n = match self.failures.lock() {
            Ok(mut m) => {
                let n = m.entry(key.to_string()).or_insert(0);
                *n = n.saturating_add(1);
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
}
