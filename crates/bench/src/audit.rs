//! API requests per identity from the management apiserver's audit log (JSON lines, Metadata
//! level, stage `RequestReceived` omitted: a request is counted once, at its first stage —
//! `ResponseStarted` for watches, `ResponseComplete` otherwise).

use std::collections::{BTreeMap, HashSet};
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
        let c = out.entry(who).or_default();
        c.total += 1;
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
