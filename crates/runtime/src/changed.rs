//! The objects of a watch that a reconcile must see, by fingerprint.

use std::collections::{HashMap, HashSet};

use futures::{Stream, StreamExt, future};
use kube::Resource;
use kube::runtime::watcher;

/// The objects of a (reflected) watch stream whose change matters: each applied object whose
/// `fingerprint` differs from the last one seen of it (an object without a fingerprint always
/// passes), every deleted object, and every object of a list or relist.
///
/// Unlike kube-runtime's `predicate_filter`, a Delete always passes: the object it carries
/// is the last one applied (finalizers gone), so its fingerprint equals the last seen and a
/// filter on it would drop the one event that says the object is gone. A relist forgets the
/// fingerprints of objects it no longer lists.
pub fn changed_objects<K, S>(
    events: S,
    fingerprint: fn(&K) -> Option<u64>,
) -> impl Stream<Item = Result<K, watcher::Error>>
where
    K: Resource,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    events.filter_map(move |ev| {
        let out = match ev {
            Err(e) => Some(Err(e)),
            Ok(watcher::Event::Init) => {
                listed.clear();
                None
            }
            // Every object of a (re)list passes: no Delete comes for one that vanished while
            // the watch was down, so the reconciles of those still listed must look again.
            Ok(watcher::Event::InitApply(o)) => {
                let key = key_of(&o);
                listed.insert(key.clone());
                changed(&mut seen, key, fingerprint(&o));
                Some(Ok(o))
            }
            Ok(watcher::Event::Apply(o)) => changed(&mut seen, key_of(&o), fingerprint(&o)).then_some(Ok(o)),
            Ok(watcher::Event::InitDone) => {
                seen.retain(|k, _| listed.contains(k));
                listed.clear();
                None
            }
            Ok(watcher::Event::Delete(o)) => {
                seen.remove(&key_of(&o));
                Some(Ok(o))
            }
        };
        future::ready(out)
    })
}

/// Records `fp` for `key`; whether it differs from the one recorded before.
fn changed(seen: &mut HashMap<String, u64>, key: String, fp: Option<u64>) -> bool {
    match fp {
        None => {
            seen.remove(&key);
            true
        }
        Some(h) => seen.insert(key, h) != Some(h),
    }
}

fn key_of<K: Resource>(o: &K) -> String {
    let m = o.meta();
    format!(
        "{}/{}/{}",
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn cm(name: &str, value: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "data": {"v": value}
        }))
        .unwrap()
    }

    fn fp(c: &ConfigMap) -> Option<u64> {
        c.data.as_ref()?.get("v")?.parse().ok()
    }

    #[tokio::test]
    async fn passes_changes_every_delete_and_every_relisted_object() {
        use watcher::Event::*;
        let events = vec![
            Init,
            InitApply(cm("a", "1")),
            InitApply(cm("b", "1")),
            InitDone,
            Apply(cm("a", "1")), // unchanged: dropped
            Apply(cm("a", "2")),
            Apply(cm("c", "x")), // no fingerprint: passes
            Apply(cm("c", "x")),
            Delete(cm("a", "2")), // same as its last update, still passes
            // A relist passes every object it lists, changed or not (`c` vanished meanwhile:
            // no Delete says so, and those still listed must wake their reconciles)...
            Init,
            InitApply(cm("a", "3")),
            InitApply(cm("b", "1")),
            InitDone,
            Apply(cm("b", "1")), // unchanged since the relist: dropped
            // ...and forgets what it no longer lists: `b` coming back passes again.
            Init,
            InitApply(cm("a", "3")),
            InitDone,
            Apply(cm("b", "1")),
        ];
        let out: Vec<String> = changed_objects(futures::stream::iter(events.into_iter().map(Ok)), fp)
            .map(|r| {
                let c = r.unwrap();
                format!("{}={}", c.metadata.name.unwrap(), c.data.unwrap()["v"])
            })
            .collect()
            .await;
        assert_eq!(
            out,
            ["a=1", "b=1", "a=2", "c=x", "c=x", "a=2", "a=3", "b=1", "a=3", "b=1"]
        );
    }
}
