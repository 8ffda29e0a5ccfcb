//! Why reconciles run. Every trigger of a controller's queue is noted with its source (which
//! watch, or the timer the last reconcile asked for); a reconcile takes the first one noted
//! since the previous reconcile of the same object — the one that woke it, later ones having
//! merged into it — and counts it as its cause (`mk8s_reconcile_causes_total`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::{Lookup, ObjectRef};

/// The cause of a reconcile no trigger and no timer explains (e.g. a retry the controller
/// runtime scheduled itself).
pub const UNKNOWN: &str = "unknown";

/// Above this many objects with an untaken trigger, the notes are dropped: triggers of
/// objects that never reconcile (gone before their turn) must not grow the map forever.
const MAX_PENDING: usize = 100_000;

#[derive(Default)]
struct Entry {
    trigger: Option<&'static str>,
    timer: Option<&'static str>,
}

/// The pending causes per object (`namespace/name`).
#[derive(Default)]
pub struct Wakes {
    pending: Mutex<HashMap<String, Entry>>,
}

impl Wakes {
    /// Notes a trigger of `key` from `source`; only the first one since its last reconcile
    /// counts.
    pub fn trigger(&self, key: &str, source: &'static str) {
        if let Ok(mut m) = self.pending.lock() {
            if m.len() >= MAX_PENDING && !m.contains_key(key) {
                m.clear();
            }
            m.entry(key.to_string()).or_default().trigger.get_or_insert(source);
        }
    }

    /// Notes that the reconcile of `key` just finished asked to run again after a delay, for
    /// `reason`: the cause of the next one unless a trigger comes first.
    pub fn timer(&self, key: &str, reason: &'static str) {
        if let Ok(mut m) = self.pending.lock() {
            m.entry(key.to_string()).or_default().timer = Some(reason);
        }
    }

    /// The cause of the reconcile of `key` starting now, forgetting it: the first trigger
    /// since the previous reconcile, else the timer that reconcile asked for, else
    /// [`UNKNOWN`].
    pub fn take(&self, key: &str) -> &'static str {
        let entry = self.pending.lock().ok().and_then(|mut m| m.remove(key));
        entry.and_then(|e| e.trigger.or(e.timer)).unwrap_or(UNKNOWN)
    }

    /// The objects with a noted trigger or timer not taken yet.
    pub fn keys(&self) -> Vec<String> {
        self.pending
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets an object that is gone.
    pub fn forget(&self, key: &str) {
        if let Ok(mut m) = self.pending.lock() {
            m.remove(key);
        }
    }
}

/// The key of an object reference: `namespace/name`.
pub fn key_of<K: Lookup + ?Sized>(r: &ObjectRef<K>) -> String {
    format!("{}/{}", r.namespace.as_deref().unwrap_or_default(), r.name)
}

/// A sender of reconcile requests that notes where each came from.
pub struct Triggers<K: Lookup + ?Sized> {
    tx: UnboundedSender<ObjectRef<K>>,
    wakes: Arc<Wakes>,
}

impl<K: Lookup + ?Sized> Clone for Triggers<K>
where
    K::DynamicType: Clone,
{
    fn clone(&self) -> Self {
        Triggers {
            tx: self.tx.clone(),
            wakes: self.wakes.clone(),
        }
    }
}

impl<K: Lookup + ?Sized> Triggers<K> {
    /// Sends on `tx`, noting in `wakes`.
    pub fn new(tx: UnboundedSender<ObjectRef<K>>, wakes: Arc<Wakes>) -> Self {
        Triggers { tx, wakes }
    }

    /// Asks for a reconcile of `r` because of `source`.
    pub fn send(&self, r: ObjectRef<K>, source: &'static str) {
        self.wakes.trigger(&key_of(&r), source);
        // The receiver is gone only when the controller has stopped.
        let _ = self.tx.unbounded_send(r);
    }
}

#[cfg(test)]
mod tests {
    use super::{UNKNOWN, Wakes};

    #[test]
    fn the_first_trigger_since_the_last_reconcile_is_its_cause() {
        let w = Wakes::default();
        assert_eq!(w.take("ns/a"), UNKNOWN, "nothing noted");
        w.trigger("ns/a", "machines");
        w.trigger("ns/a", "secrets");
        w.trigger("ns/b", "clusters");
        assert_eq!(w.take("ns/a"), "machines", "later triggers merged into the first");
        assert_eq!(w.take("ns/a"), UNKNOWN, "taken once");
        assert_eq!(w.take("ns/b"), "clusters");
    }

    #[test]
    fn a_timer_is_the_cause_only_when_no_trigger_came_first() {
        let w = Wakes::default();
        w.timer("ns/a", "provisioning");
        assert_eq!(w.take("ns/a"), "provisioning");
        w.timer("ns/a", "provisioning");
        w.trigger("ns/a", "machines");
        assert_eq!(
            w.take("ns/a"),
            "machines",
            "the trigger ran the reconcile before the timer"
        );
        assert_eq!(w.take("ns/a"), UNKNOWN, "the timer it replaced is gone too");
        w.timer("ns/a", "provisioning");
        assert_eq!(w.keys(), ["ns/a"]);
        w.forget("ns/a");
        assert!(w.keys().is_empty());
        assert_eq!(w.take("ns/a"), UNKNOWN);
    }

    #[test]
    fn notes_of_objects_that_never_reconcile_do_not_grow_forever() {
        let w = Wakes::default();
        for i in 0..super::MAX_PENDING + 10 {
            w.trigger(&format!("ns/{i}"), "secrets");
        }
        assert!(w.pending.lock().unwrap().len() <= super::MAX_PENDING);
    }
}
