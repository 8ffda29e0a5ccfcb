//! Secrets by name without a GET per reconcile, shared by both managers.
//!
//! A metadata-only watch of every Secret in scope (slimmed: no managed fields, no annotations)
//! knows each one's `resourceVersion` and, once it has listed, which ones do not exist. A full
//! copy this process read or wrote is served while the watch shows a version it stands for; a
//! changed or unknown Secret is read again (one GET); a Secret the listed watch does not show is
//! absent, answered without a request. Copies are dropped when the watch shows their Secret
//! deleted, or missing from a relist.
//!
//! Our own writes stand for the state the watch shows until it catches up with them (the
//! version written over, or absence for a create), but absence only for [`IN_FLIGHT`]: a create
//! the watch never shows (deleted again between two relists, its events lost) is then not
//! trusted any more.
//!
//! Answers can lag someone else's write by the watch latency, which every consumer tolerates: a
//! stale `resourceVersion` makes a write conflict and the reconcile retry, and a Secret that
//! appears after an "absent" answer reaches the controller as a watch event (the feed's
//! `touched` callback), which triggers a new reconcile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tracing::warn;

use crate::backoff::WatchBackoff;

/// How long our own write may be served while the watch shows its Secret absent. Far longer
/// than any watch lag, short enough that a create the watch never showed is not trusted long.
pub const IN_FLIGHT: Duration = Duration::from_secs(60);

/// A full Secret this process read or wrote, and the watched states at which it is current.
#[derive(Clone, Debug)]
pub struct SecretCopy {
    /// The Secret as read, or as the server returned it from our write (slimmed, when the cache
    /// was given a slimming function).
    pub secret: Arc<Secret>,
    /// Watched states at which `secret` is known to be current: its own version, plus for our
    /// writes the states the watch shows until it catches up with the write (the version we
    /// wrote over, or `None`: absence, for a create).
    pub stands_for: Vec<Option<String>>,
    /// When it was stored.
    pub stored: Instant,
}

/// How the cache answers one read.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Serve the copy: the watch shows a state it stands for.
    Copy,
    /// The Secret does not exist: the watch has listed and does not show it.
    Absent,
    /// Read it from the API server.
    Read,
}

/// Decides how to answer a read of one Secret from what the watch shows of it (its
/// `resourceVersion`, `None` when it does not show it), whether the watch has completed its
/// first list, the copy held and its age.
pub fn answer(watched: Option<&str>, listed: bool, copy: Option<(&SecretCopy, Duration)>) -> Answer {
    let want = watched.map(str::to_string);
    match copy {
        Some((c, age)) if c.stands_for.contains(&want) && (want.is_some() || age < IN_FLIGHT) => Answer::Copy,
        _ if watched.is_none() && listed => Answer::Absent,
        _ => Answer::Read,
    }
}

type Key = (String, String);

struct Shared {
    copies: Mutex<HashMap<Key, SecretCopy>>,
    listed: AtomicBool,
    reads: AtomicU64,
    slim: fn(Secret) -> Secret,
}

/// Secrets by name, served from copies the metadata watch vouches for.
pub struct SecretCache {
    client: Client,
    watched: Store<PartialObjectMeta<Secret>>,
    shared: Arc<Shared>,
}

/// The writing half of a [`SecretCache`], fed by the Secret watch ([`SecretCacheFeed::run`]).
pub struct SecretCacheFeed {
    writer: reflector::store::Writer<PartialObjectMeta<Secret>>,
    shared: Arc<Shared>,
}

/// A cache keeping whole Secrets, and its feed.
pub fn secret_cache(client: Client) -> (SecretCache, SecretCacheFeed) {
    secret_cache_slimmed(client, std::convert::identity)
}

/// A cache whose copies keep only what `slim` leaves of each Secret (e.g. the data keys the
/// caller reads, so that a thousand clusters' copies stay small), and its feed. Callers must
/// read nothing from a served copy that `slim` drops.
pub fn secret_cache_slimmed(client: Client, slim: fn(Secret) -> Secret) -> (SecretCache, SecretCacheFeed) {
    let writer = reflector::store::Writer::<PartialObjectMeta<Secret>>::default();
    let shared = Arc::new(Shared {
        copies: Mutex::new(HashMap::new()),
        listed: AtomicBool::new(false),
        reads: AtomicU64::new(0),
        slim,
    });
    (
        SecretCache {
            client,
            watched: writer.as_reader(),
            shared: shared.clone(),
        },
        SecretCacheFeed { writer, shared },
    )
}

fn key_of(meta: &ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Keeps only what the cache and the managers' event mappings read of a watched Secret (name,
/// namespace, version, labels, owners): managed fields and annotations can dwarf the rest.
fn slim_watched(o: &mut PartialObjectMeta<Secret>) {
    o.metadata.managed_fields = None;
    o.metadata.annotations = None;
}

impl SecretCacheFeed {
    /// Follows the metadata watch of every Secret of `api` until the task is aborted, calling
    /// `touched` with every Secret added, changed or deleted (after the cache has applied it).
    pub async fn run(
        mut self,
        api: Api<PartialObjectMeta<Secret>>,
        mut touched: impl FnMut(&PartialObjectMeta<Secret>),
    ) {
        let cfg = watcher::Config::default().any_semantic();
        let mut s = watcher(api, cfg)
            .backoff(WatchBackoff::management())
            .modify(slim_watched)
            .boxed();
        while let Some(ev) = s.next().await {
            match ev {
                Ok(ev) => {
                    self.apply(&ev);
                    if let watcher::Event::Apply(o) | watcher::Event::InitApply(o) | watcher::Event::Delete(o) = &ev {
                        touched(o);
                    }
                }
                Err(e) => warn!(watch = "secrets", error = %e, "watch failed; retrying"),
            }
        }
    }

    /// Applies one watch event: the store follows it, and the copy of a Secret that is gone is
    /// dropped (deleted, or missing from a relist after the watch was interrupted).
    fn apply(&mut self, ev: &watcher::Event<PartialObjectMeta<Secret>>) {
        self.writer.apply_watcher_event(ev);
        if matches!(ev, watcher::Event::InitDone) {
            self.shared.listed.store(true, Ordering::Release);
        }
        let Ok(mut c) = self.shared.copies.lock() else { return };
        match ev {
            watcher::Event::Delete(o) => {
                c.remove(&key_of(&o.metadata));
            }
            watcher::Event::InitDone => {
                let store = self.writer.as_reader();
                c.retain(|(ns, name), _| store.get(&ObjectRef::new(name).within(ns)).is_some());
            }
            _ => {}
        }
    }
}

impl SecretCache {
    /// The Secret `namespace/name`, or `None` when it does not exist.
    pub async fn get(&self, namespace: &str, name: &str) -> Result<Option<Arc<Secret>>, kube::Error> {
        let key = (namespace.to_string(), name.to_string());
        match self.cached(&key) {
            (Answer::Copy, copy) => return Ok(copy),
            (Answer::Absent, _) => return Ok(None),
            (Answer::Read, _) => {}
        }
        self.shared.reads.fetch_add(1, Ordering::Relaxed);
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let Some(live) = api.get_opt(name).await? else {
            if let Ok(mut c) = self.shared.copies.lock() {
                c.remove(&key);
            }
            return Ok(None);
        };
        let rv = live.metadata.resource_version.clone();
        Ok(Some(self.store(live, vec![rv])))
    }

    /// The copy of `namespace/name` if the watch vouches for it now (our own create it has yet to
    /// show included), without any request.
    pub fn vouched(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        match self.cached(&(namespace.to_string(), name.to_string())) {
            (Answer::Copy, copy) => copy,
            _ => None,
        }
    }

    /// The answer from the watch and the copies alone, and the copy to serve.
    fn cached(&self, key: &Key) -> (Answer, Option<Arc<Secret>>) {
        let watched = self.version(&key.0, &key.1);
        let listed = self.shared.listed.load(Ordering::Acquire);
        let Ok(mut copies) = self.shared.copies.lock() else {
            return (Answer::Read, None);
        };
        let held = copies.get(key).map(|c| (c, c.stored.elapsed()));
        match answer(watched.as_deref(), listed, held) {
            Answer::Copy => (Answer::Copy, copies.get(key).map(|c| c.secret.clone())),
            Answer::Absent => {
                // A copy read just before its deletion was seen is stale for good.
                copies.remove(key);
                (Answer::Absent, None)
            }
            Answer::Read => (Answer::Read, None),
        }
    }

    /// Records a Secret as the API server returned it from this process's write, made over the
    /// version `over` (`None`: created — or found created, when a create answered "already
    /// exists" and the Secret was read back), and returns the copy kept. Until the watch catches
    /// up, reads of it are answered with this copy instead of a stale version or "absent".
    /// `also_absent` says the watch may also show the Secret missing meanwhile (deleted and
    /// created again).
    pub fn wrote(&self, secret: Secret, over: Option<String>, also_absent: bool) -> Arc<Secret> {
        let mut stands_for = vec![secret.metadata.resource_version.clone(), over];
        if also_absent {
            stands_for.push(None);
        }
        self.store(secret, stands_for)
    }

    fn store(&self, secret: Secret, stands_for: Vec<Option<String>>) -> Arc<Secret> {
        let key = key_of(&secret.metadata);
        let kept = Arc::new((self.shared.slim)(secret));
        if let Ok(mut c) = self.shared.copies.lock() {
            c.insert(
                key,
                SecretCopy {
                    secret: kept.clone(),
                    stands_for,
                    stored: Instant::now(),
                },
            );
        }
        kept
    }

    fn version(&self, namespace: &str, name: &str) -> Option<String> {
        self.watched
            .get(&ObjectRef::new(name).within(namespace))
            .and_then(|m| m.metadata.resource_version.clone())
    }

    /// The watch's store: the metadata of every Secret in scope.
    pub fn watched(&self) -> &Store<PartialObjectMeta<Secret>> {
        &self.watched
    }

    /// Number of copies held (tests use it).
    pub fn copies(&self) -> usize {
        self.shared.copies.lock().map(|c| c.len()).unwrap_or_default()
    }

    /// Number of reads that went to the API server so far (tests use it).
    pub fn live_reads(&self) -> u64 {
        self.shared.reads.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(rv: &str, stands_for: &[Option<&str>]) -> SecretCopy {
        let mut s = Secret::default();
        s.metadata.resource_version = Some(rv.into());
        SecretCopy {
            secret: Arc::new(s),
            stands_for: stands_for.iter().map(|v| v.map(str::to_string)).collect(),
            stored: Instant::now(),
        }
    }

    const NEW: Duration = Duration::from_secs(1);

    #[test]
    fn a_copy_is_served_only_at_a_version_it_stands_for() {
        let read = copy("7", &[Some("7")]);
        let held = Some((&read, NEW));
        assert_eq!(answer(Some("7"), true, held), Answer::Copy);
        assert_eq!(answer(Some("7"), false, held), Answer::Copy);
        assert_eq!(
            answer(Some("7"), true, Some((&read, IN_FLIGHT * 100))),
            Answer::Copy,
            "a version the watch shows is vouched for at any age"
        );
        assert_eq!(answer(Some("8"), true, held), Answer::Read, "changed since the copy");
        assert_eq!(answer(None, true, held), Answer::Absent, "deleted since");
        assert_eq!(answer(None, false, held), Answer::Read, "not listed yet");
    }

    #[test]
    fn our_writes_are_served_until_the_watch_catches_up() {
        let created = copy("9", &[Some("9"), None]);
        let held = Some((&created, NEW));
        assert_eq!(answer(None, true, held), Answer::Copy, "create not seen yet");
        assert_eq!(answer(Some("9"), true, held), Answer::Copy);
        assert_eq!(
            answer(Some("10"), true, held),
            Answer::Read,
            "someone else wrote after us"
        );
        let patched = copy("9", &[Some("9"), Some("7")]);
        let held = Some((&patched, NEW));
        assert_eq!(answer(Some("7"), true, held), Answer::Copy, "patch not seen yet");
        assert_eq!(answer(None, true, held), Answer::Absent, "deleted after our patch");
        assert_eq!(answer(Some("8"), true, held), Answer::Read);
    }

    #[test]
    fn absence_vouches_for_our_create_only_while_it_is_in_flight() {
        let created = copy("9", &[Some("9"), None]);
        assert_eq!(answer(None, true, Some((&created, IN_FLIGHT - NEW))), Answer::Copy);
        // Never shown by the watch for longer than any lag: deleted before a relist; create again.
        assert_eq!(answer(None, true, Some((&created, IN_FLIGHT))), Answer::Absent);
        assert_eq!(answer(None, false, Some((&created, IN_FLIGHT))), Answer::Read);
        // Once the watch shows it, age no longer matters.
        assert_eq!(answer(Some("9"), true, Some((&created, IN_FLIGHT * 10))), Answer::Copy);
    }

    #[test]
    fn without_a_copy_the_listed_watch_decides_existence() {
        assert_eq!(answer(None, true, None), Answer::Absent);
        assert_eq!(answer(None, false, None), Answer::Read, "not listed: cannot tell");
        assert_eq!(answer(Some("3"), true, None), Answer::Read);
        assert_eq!(answer(Some("3"), false, None), Answer::Read);
    }

    #[test]
    fn the_watched_metadata_keeps_what_the_mappings_read() {
        let mut o: PartialObjectMeta<Secret> = PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some("s".into()),
                namespace: Some("ns".into()),
                resource_version: Some("3".into()),
                labels: Some([("l".to_string(), "v".to_string())].into()),
                annotations: Some([("a".to_string(), "big".to_string())].into()),
                managed_fields: Some(vec![Default::default()]),
                owner_references: Some(vec![Default::default()]),
                ..Default::default()
            },
            _phantom: Default::default(),
        };
        slim_watched(&mut o);
        assert!(o.metadata.annotations.is_none() && o.metadata.managed_fields.is_none());
        assert_eq!(o.metadata.resource_version.as_deref(), Some("3"));
        assert!(o.metadata.labels.is_some() && o.metadata.owner_references.is_some());
    }
}
