//! Keeping leadership honest: the renew deadline.
//!
//! `kube-lease-manager` reports a lost Lease only once it can read the Lease again and sees
//! another holder; while the API server is out of reach it retries quietly and the leader
//! keeps reconciling — past the moment a standby may take the expired Lease, so two leaders
//! act at once when the network comes back. [`guard`] closes that gap the way
//! controller-runtime's renew deadline does: it watches the Lease and stops the manager unless
//! a renewal by this identity is seen before [`renew_deadline`].

use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

/// What [`guard`] needs to know about the Lease this manager holds.
#[derive(Clone, Debug)]
pub struct LeaseTerms {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This manager's holder identity.
    pub identity: String,
    /// The lease duration.
    pub duration: Duration,
    /// How long before expiry the holder renews.
    pub grace: Duration,
}

/// When this manager must have stopped unless it renews first, from the Lease as last seen:
/// `renewTime + leaseDurationSeconds - grace / 2`. A standby may take the Lease at expiry
/// (by its clock; `renewTime` was written by ours); the renewal is due at `expiry - grace`, so
/// half the grace period is left for the renewal's round trip and the watch event. `None`
/// when the Lease is held by another identity (or no longer held): leadership is lost.
pub fn renew_deadline(lease: &Lease, terms: &LeaseTerms) -> Option<SystemTime> {
    let spec = lease.spec.as_ref()?;
    if spec.holder_identity.as_deref() != Some(terms.identity.as_str()) {
        return None;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(terms.duration, Duration::from_secs);
    let renewed: SystemTime = spec.renew_time.as_ref()?.0.into();
    Some(renewed + duration.saturating_sub(terms.grace / 2))
}

/// Why leadership ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The manager is shutting down.
    Shutdown,
    /// Another identity holds the Lease.
    TakenOver,
    /// No renewal by this identity was seen before the deadline.
    DeadlineMissed,
}

/// The deadline after a look at the Lease, or why leadership ends: another holder; or, when
/// the look was the last chance (`at_deadline`), no renewal moving the deadline past `now`.
/// The deadline never falls below `floor`, the acquisition's own (right after a restart
/// under the same identity the Lease still shows the previous run's renewal).
pub fn next_deadline(
    lease: &Lease,
    terms: &LeaseTerms,
    floor: SystemTime,
    now: SystemTime,
    at_deadline: bool,
) -> Result<SystemTime, Ended> {
    let d = renew_deadline(lease, terms).ok_or(Ended::TakenOver)?.max(floor);
    if at_deadline && d <= now {
        return Err(Ended::DeadlineMissed);
    }
    Ok(d)
}

/// Watches the held Lease (through `client`, which should not share the controllers' rate
/// limit) until `shutdown`, another holder, or a missed renew deadline. The first deadline is
/// counted from `acquired`. At the deadline the Lease is read once directly: the watch may
/// still be reconnecting after a short outage the renewal got through.
pub async fn guard(client: Client, terms: LeaseTerms, acquired: SystemTime, shutdown: CancellationToken) -> Ended {
    let leases: Api<Lease> = Api::namespaced(client, &terms.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", terms.name));
    let mut events = watcher(leases.clone(), config)
        .default_backoff()
        .applied_objects()
        .boxed();
    let floor = acquired + terms.duration.saturating_sub(terms.grace / 2);
    let mut deadline = floor;
    let mut watching = true;
    let ended = loop {
        let left = deadline.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
        let (lease, at_deadline) = tokio::select! {
            _ = shutdown.cancelled() => return Ended::Shutdown,
            _ = tokio::time::sleep(left) => {
                match tokio::time::timeout(terms.grace / 4, leases.get_opt(&terms.name)).await {
                    Ok(Ok(Some(lease))) => (lease, true),
                    Ok(Ok(None)) => break Ended::TakenOver,
                    Ok(Err(e)) => {
                        debug!(error = %e, lease = %terms.name, "reading the leader election Lease");
                        break Ended::DeadlineMissed;
                    }
                    Err(_) => break Ended::DeadlineMissed,
                }
            }
            event = events.next(), if watching => match event {
                Some(Ok(lease)) => (lease, false),
                Some(Err(e)) => {
                    debug!(error = %e, lease = %terms.name, "watching the leader election Lease");
                    continue;
                }
                None => {
                    watching = false;
                    continue;
                }
            },
        };
        match next_deadline(&lease, &terms, floor, SystemTime::now(), at_deadline) {
            Ok(d) => deadline = d,
            Err(ended) => break ended,
        }
    };
    match ended {
        Ended::DeadlineMissed => {
            error!(lease = %terms.name, "the leader election Lease was not renewed in time; stopping");
        }
        _ => error!(lease = %terms.name, "another manager holds the leader election Lease, or it is gone; stopping"),
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::Timestamp;

    fn terms() -> LeaseTerms {
        LeaseTerms {
            namespace: "ns".into(),
            name: "lease".into(),
            identity: "me".into(),
            duration: Duration::from_secs(15),
            grace: Duration::from_secs(5),
        }
    }

    fn lease(holder: Option<&str>, renewed: Timestamp, secs: Option<i32>) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: secs,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_deadline_leaves_half_the_grace_before_expiry() {
        let t = Timestamp::from_second(1_000_000).unwrap();
        let at = |s: u64| SystemTime::from(t) + Duration::from_millis(s);
        assert_eq!(
            renew_deadline(&lease(Some("me"), t, Some(15)), &terms()),
            Some(at(12_500))
        );
        assert_eq!(
            renew_deadline(&lease(Some("me"), t, Some(30)), &terms()),
            Some(at(27_500)),
            "the Lease's own duration counts"
        );
        assert_eq!(renew_deadline(&lease(Some("me"), t, None), &terms()), Some(at(12_500)));
    }

    #[test]
    fn a_look_moves_the_deadline_or_ends_leadership() {
        let t = Timestamp::from_second(1_000_000).unwrap();
        let at = |ms: u64| SystemTime::from(t) + Duration::from_millis(ms);
        let renewed = lease(Some("me"), t, Some(15));
        // A renewal seen: the deadline follows it.
        assert_eq!(
            next_deadline(&renewed, &terms(), at(0), at(1_000), false),
            Ok(at(12_500))
        );
        // Never below the acquisition's own deadline (a restart reads the last run's renewal).
        assert_eq!(
            next_deadline(&renewed, &terms(), at(20_000), at(13_000), true),
            Ok(at(20_000))
        );
        // The last look at the deadline shows no newer renewal: stop.
        assert_eq!(
            next_deadline(&renewed, &terms(), at(0), at(12_500), true),
            Err(Ended::DeadlineMissed)
        );
        // A stale watch event only moves the deadline; the direct look decides.
        assert_eq!(
            next_deadline(&renewed, &terms(), at(0), at(13_000), false),
            Ok(at(12_500))
        );
        assert_eq!(
            next_deadline(&lease(Some("you"), t, Some(15)), &terms(), at(0), at(1_000), false),
            Err(Ended::TakenOver)
        );
    }

    #[test]
    fn another_holder_or_none_ends_leadership() {
        let t = Timestamp::from_second(1_000_000).unwrap();
        assert_eq!(renew_deadline(&lease(Some("you"), t, Some(15)), &terms()), None);
        assert_eq!(renew_deadline(&lease(None, t, Some(15)), &terms()), None);
        assert_eq!(renew_deadline(&Lease::default(), &terms()), None);
    }
}
