//! T1: the Secret cache both managers share, on a real API server. Once the watch has listed,
//! a Secret is served from its copy while the watch shows its version (no request), read again
//! once it changed, answered "absent" without a request when the watch does not show it,
//! served from our own writes before the watch catches up, and dropped when deleted;
//! unlabelled Secrets are watched too and reach the `touched` callback; a slimming function
//! shapes what copies keep.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use mk8s_runtime::secret_cache::{secret_cache, secret_cache_slimmed};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(30);

fn secret(name: &str, labelled: bool, value: &str) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": if labelled { json!({"cluster.x-k8s.io/cluster-name": "c1"}) } else { json!({}) }},
        "stringData": {"value": value, "other": "dropped by slimming"},
    }))
    .unwrap()
}

fn value(s: &Secret) -> String {
    String::from_utf8(s.data.as_ref().unwrap()["value"].0.clone()).unwrap()
}

#[tokio::test]
async fn copies_are_served_only_while_the_watch_vouches_for_them() {
    let Some(plane) = mk8s_testenv::shared().await else {
        return;
    };
    let admin = plane.client().await;
    let ns = plane.namespace("secretcache").await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    let (cache, feed) = secret_cache(admin.clone());
    let touched = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = touched.clone();
    let watch = tokio::spawn(feed.run(Api::namespaced(admin.clone(), &ns), move |s| {
        seen.lock().unwrap().push(s.metadata.name.clone().unwrap_or_default());
    }));
    let pp = PostParams::default();
    secrets.create(&pp, &secret("labelled", true, "one")).await.unwrap();
    secrets.create(&pp, &secret("unlabelled", false, "one")).await.unwrap();

    // Once the watch shows them, both are served from their copies without a request.
    for name in ["labelled", "unlabelled"] {
        let first = mk8s_testenv::wait_for_value(TIMEOUT, "the Secret served from its copy", || async {
            let a = cache.get(&ns, name).await.unwrap()?;
            let reads = cache.live_reads();
            let b = cache.get(&ns, name).await.unwrap()?;
            (Arc::ptr_eq(&a, &b) && cache.live_reads() == reads).then_some(b)
        })
        .await;
        assert_eq!(value(&first), "one");
        assert!(first.data.as_ref().unwrap().contains_key("other"), "kept whole");
        assert!(touched.lock().unwrap().contains(&name.to_string()));
    }
    assert_eq!(cache.copies(), 2);
    let watched = cache.watched().state();
    assert!(
        watched.iter().all(|m| m.metadata.managed_fields.is_none()),
        "the watched metadata is slimmed"
    );

    // Absent: answered without a request once the watch has listed.
    mk8s_testenv::wait_for_value(TIMEOUT, "an absent Secret answered from the listed watch", || async {
        let reads = cache.live_reads();
        let none = cache.get(&ns, "nothing").await.unwrap().is_none();
        (none && cache.live_reads() == reads).then_some(())
    })
    .await;

    // Changed by someone else: read again once the watch shows the new version.
    let patch = Patch::Merge(json!({"stringData": {"value": "two"}}));
    secrets
        .patch("unlabelled", &PatchParams::default(), &patch)
        .await
        .unwrap();
    mk8s_testenv::wait_for_value(TIMEOUT, "the changed Secret read again", || async {
        (value(&*cache.get(&ns, "unlabelled").await.unwrap()?) == "two").then_some(())
    })
    .await;

    // Our own writes: served at once, before and after the watch shows them, with no read.
    let reads = cache.live_reads();
    let created = secrets.create(&pp, &secret("ours", true, "mine")).await.unwrap();
    let rv = created.metadata.resource_version.clone();
    cache.wrote(created, None, false);
    let got = cache.get(&ns, "ours").await.unwrap().expect("our create is served");
    assert_eq!(value(&got), "mine");
    let patch = Patch::Merge(json!({"metadata": {"resourceVersion": rv}, "stringData": {"value": "again"}}));
    let patched = secrets.patch("ours", &PatchParams::default(), &patch).await.unwrap();
    cache.wrote(patched, rv, false);
    assert_eq!(value(&cache.get(&ns, "ours").await.unwrap().unwrap()), "again");
    assert_eq!(cache.live_reads(), reads, "our writes needed no read");

    // Deleted: gone from the cache once the watch shows it, and absent without a request.
    secrets.delete("labelled", &DeleteParams::default()).await.unwrap();
    mk8s_testenv::wait_for_value(TIMEOUT, "the deleted Secret's copy dropped", || async {
        (cache.copies() == 2).then_some(())
    })
    .await;
    let reads = cache.live_reads();
    assert!(cache.get(&ns, "labelled").await.unwrap().is_none());
    assert_eq!(cache.live_reads(), reads);

    // Our create, deleted by someone else right after: once the watch shows the deletion the
    // copy is dropped, so it is not served as if still in flight.
    let created = secrets.create(&pp, &secret("brief", true, "x")).await.unwrap();
    cache.wrote(created, None, false);
    secrets.delete("brief", &DeleteParams::default()).await.unwrap();
    mk8s_testenv::wait_for_value(TIMEOUT, "a deleted create no longer served", || async {
        cache.get(&ns, "brief").await.unwrap().is_none().then_some(())
    })
    .await;
    watch.abort();
}

#[tokio::test]
async fn a_slimmed_cache_keeps_only_what_its_function_leaves() {
    let Some(plane) = mk8s_testenv::shared().await else {
        return;
    };
    let admin = plane.client().await;
    let ns = plane.namespace("secretslim").await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    fn only_value(mut s: Secret) -> Secret {
        if let Some(d) = s.data.as_mut() {
            d.retain(|k, _| k == "value");
        }
        s.metadata.labels = None;
        s
    }
    let (cache, feed) = secret_cache_slimmed(admin.clone(), only_value);
    let watch = tokio::spawn(feed.run(Api::namespaced(admin.clone(), &ns), |_| {}));
    let pp = PostParams::default();
    secrets.create(&pp, &secret("read", true, "r")).await.unwrap();
    let read = mk8s_testenv::wait_for_value(TIMEOUT, "the Secret read", || async {
        cache.get(&ns, "read").await.unwrap()
    })
    .await;
    let created = secrets.create(&pp, &secret("written", true, "w")).await.unwrap();
    let kept = cache.wrote(created, None, false);
    // Vouched for at once, before the watch shows it, without a request; unknown ones are not.
    let reads = cache.live_reads();
    assert!(cache.vouched(&ns, "written").is_some());
    assert!(cache.vouched(&ns, "never-written").is_none());
    assert_eq!(cache.live_reads(), reads);
    for (s, v) in [(&read, "r"), (&kept, "w")] {
        assert_eq!(value(s), v);
        assert_eq!(s.data.as_ref().unwrap().len(), 1, "only the key the function keeps");
        assert!(s.metadata.labels.is_none());
        assert!(s.metadata.resource_version.is_some());
    }
    // Served (from the slimmed copy) without a request once the watch shows it.
    mk8s_testenv::wait_for_value(TIMEOUT, "the slimmed copy served", || async {
        let reads = cache.live_reads();
        let s = cache.get(&ns, "written").await.unwrap()?;
        (cache.live_reads() == reads && s.data.as_ref()?.len() == 1).then_some(())
    })
    .await;
    watch.abort();
}
