//! API requests per identity from the management apiserver's audit log (JSON lines, Metadata
//! level, stage `RequestReceived` omitted: a request is counted once, at its first stage —
//! `ResponseStarted` for watches, `ResponseComplete` otherwise). Status writes of our kinds are
//! logged with their bodies, so a write identical to the previous one of the same object by the
//! same identity (a needless write) is counted too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead as _;
use std::path::Path;

use serde::Serialize;

/// ServiceAccount user of our bootstrap manager.
pub const BOOTSTRAP_USER: &str =
    "system:serviceaccount:capi-microk8s-bootstrap-system:capi-microk8s-bootstrap-controller-manager";
/// ServiceAccount user of our control plane manager.
pub const CONTROL_PLANE_USER: &str =
    "system:serviceaccount:capi-microk8s-control-plane-system:capi-microk8s-control-plane-controller-manager";

/// Requests of one identity.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    /// All requests.
    pub total: u64,
    /// By verb (`get`, `list`, `watch`, `create`, `patch`, …).
    pub verbs: BTreeMap<String, u64>,
    /// By `verb resource[/subresource]`.
    pub by_resource: BTreeMap<String, u64>,
    /// Status writes whose body equals the previous status write of the same object by the same
    /// identity (only for the kinds the audit policy logs with bodies).
    pub repeated_status_writes: u64,
}

/// The identity of a request: our managers by ServiceAccount, the admin's clients by user
/// agent (CAPI core, the simulator and the bench share the admin user).
fn identity(user: &str, agent: &str) -> String {
    match user {
        BOOTSTRAP_USER => "mk8s-bootstrap".into(),
        CONTROL_PLANE_USER => "mk8s-controlplane".into(),
        "admin" => {
            let product = agent.split(['/', ' ']).next().unwrap_or_default();
            if product.contains("cluster-api") || product == "manager" {
                "capi-core".into()
            } else {
                format!("admin ({product})")
            }
        }
        other => other.to_string(),
    }
}

fn unix_seconds(ts: &str) -> Option<f64> {
    let t: jiff::Timestamp = ts.parse().ok()?;
    Some(t.as_microsecond() as f64 / 1e6)
}

/// Counts the requests received in `[from, to]` (unix seconds) per identity.
pub fn count(log: &Path, from: f64, to: f64) -> BTreeMap<String, Counts> {
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    let Ok(f) = std::fs::File::open(log) else {
        return out;
    };
    let mut seen: HashSet<String> = HashSet::new();
    let mut last_status: HashMap<String, serde_json::Value> = HashMap::new();
    for line in std::io::BufReader::with_capacity(1 << 20, f).lines() {
        let Ok(line) = line else { break };
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let id = ev["auditID"].as_str().unwrap_or_default().to_string();
        if !seen.insert(id) {
            continue;
        }
        let Some(t) = ev["requestReceivedTimestamp"].as_str().and_then(unix_seconds) else {
            continue;
        };
        if t < from || t > to {
            continue;
        }
        let who = identity(
            ev["user"]["username"].as_str().unwrap_or_default(),
            ev["userAgent"].as_str().unwrap_or_default(),
        );
        let verb = ev["verb"].as_str().unwrap_or_default().to_string();
        let mut resource = ev["objectRef"]["resource"].as_str().unwrap_or("-").to_string();
        if let Some(sub) = ev["objectRef"]["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        let repeated = match ev.get("requestObject") {
            Some(body) if resource.ends_with("/status") => {
                let key = format!(
                    "{who} {resource} {}/{}",
                    ev["objectRef"]["namespace"].as_str().unwrap_or_default(),
                    ev["objectRef"]["name"].as_str().unwrap_or_default()
                );
                last_status.insert(key, body.clone()).as_ref() == Some(body)
            }
            _ => false,
        };
        let c = out.entry(who).or_default();
        c.total += 1;
        c.repeated_status_writes += u64::from(repeated);
        *c.verbs.entry(verb.clone()).or_default() += 1;
        *c.by_resource.entry(format!("{verb} {resource}")).or_default() += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn repeated_status_writes_are_counted_per_object_and_identity() {
        let dir = std::env::temp_dir().join(format!("mk8s-audit-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("audit.log");
        let line = |id: &str, user: &str, name: &str, body: serde_json::Value| {
            serde_json::json!({
                "auditID": id, "stage": "ResponseComplete", "verb": "patch",
                "requestReceivedTimestamp": "2026-12-07T04:30:15.000000Z",
                "user": {"username": user}, "userAgent": "x",
                "objectRef": {"resource": "microk8scontrolplanes", "subresource": "status", "namespace": "ns", "name": name},
                "requestObject": body,
            })
            .to_string()
        };
        let a = serde_json::json!({"status": {"ready": false}});
        let b = serde_json::json!({"status": {"ready": true}});
        let lines = [
            line("1", CONTROL_PLANE_USER, "c1", a.clone()),
            line("2", CONTROL_PLANE_USER, "c1", a.clone()), // repeated
            line("3", CONTROL_PLANE_USER, "c2", a.clone()), // another object
            line("4", CONTROL_PLANE_USER, "c1", b.clone()),
            line("5", CONTROL_PLANE_USER, "c1", a.clone()), // changed back: a real write
            line("5", CONTROL_PLANE_USER, "c1", a.clone()), // the same request at another stage
            line("6", "admin", "c1", a.clone()),            // another identity
        ];
        std::fs::write(&log, lines.join("\n")).unwrap();
        let counts = count(&log, 0.0, f64::MAX);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(counts["mk8s-controlplane"].total, 5);
        assert_eq!(counts["mk8s-controlplane"].repeated_status_writes, 1);
        assert_eq!(counts["admin (x)"].repeated_status_writes, 0);
    }

    #[test]
    fn identities() {
        assert_eq!(identity(BOOTSTRAP_USER, "x"), "mk8s-bootstrap");
        assert_eq!(
            identity("admin", "cluster-api-controller-manager/v1.14.2 (linux/amd64)"),
            "capi-core"
        );
        assert_eq!(identity("admin", "kube-rs/5.0.0"), "admin (kube-rs)");
        assert!(unix_seconds("2026-11-24T19:05:16.123456Z").unwrap() > 1.7e9);
    }
}
