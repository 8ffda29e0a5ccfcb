//! Node action pods: short-lived pods on the host network bound to a workload node that call
//! the MicroK8s cluster agent (dqlite member removal, unprivileged) or snapd (snap refresh,
//! privileged: root on the host's snapd socket).
//!
//! Compared with Canonical's (`reference/cacpm.md` §9.8): a dedicated namespace labelled for
//! the privileged Pod Security level, a configurable image, the cluster agent token from a
//! Secret (never in the pod spec), unique names, HTTP errors fail the pod (with the agent's
//! answer in its log), bounded curl calls, the
//! snapd change polled to its end, tolerations for tainted nodes, and cleanup. Values are
//! passed as positional arguments, never spliced into the script.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::error::{Error, Result};

use crate::names;

/// The dqlite removal script: `$1` = `<victim ip>:<dqlite port>`, `$2` = `<survivor ip>:<agent
/// port>`, token from `$CAPI_AUTH_TOKEN`. Bounded (an agent that hangs, e.g. without quorum,
/// fails the attempt in two minutes, not at the node action timeout), and the agent's answer
/// is in the pod's log either way.
pub const DQLITE_REMOVE_SCRIPT: &str = r#"set -eu
# The token reaches curl as a config line on its standard input, never in its arguments
# (which every local user can read in /proc).
quoted=$(printf '%s' "$CAPI_AUTH_TOKEN" | sed 's/[\\"]/\\&/g')
out=$(printf 'header = "capi-auth-token: %s"\n' "$quoted" | curl -K - -sS -k --connect-timeout 10 --max-time 120 -w '\n%{http_code}' -X POST -H "Content-Type: application/json" -d "{\"remove_endpoint\":\"$1\"}" "https://$2/cluster/api/v2.0/dqlite/remove")
code=$(printf '%s\n' "$out" | tail -n 1)
# The agent may echo a token it refuses: never print it.
body=$(printf '%s\n' "$out" | sed '$d' | awk 'BEGIN { t = ENVIRON["CAPI_AUTH_TOKEN"] } t != "" { while ((i = index($0, t)) > 0) $0 = substr($0, 1, i - 1) "<redacted>" substr($0, i + length(t)) } { print }')
case "$code" in
  2??) printf 'removed dqlite member %s: %s\n' "$1" "$body" ;;
  *) printf 'removing dqlite member %s through %s failed: HTTP %s: %s\n' "$1" "$2" "$code" "$body" >&2; exit 1 ;;
esac
"#;

/// The snap refresh script: `$1` = channel, `$2` = `true` for a classic snap. It starts the
/// refresh through snapd's REST API, reads the asynchronous change id, and polls the change
/// until it is `Done` (exit 0) or `Error`/`Undone`/`Hold` or 20 minutes have passed (exit 1).
pub const SNAP_REFRESH_SCRIPT: &str = r#"set -eu
channel="$1"
if [ "$2" = "true" ]; then
  body="{\"action\":\"refresh\",\"channel\":\"$channel\",\"classic\":true}"
else
  body="{\"action\":\"refresh\",\"channel\":\"$channel\"}"
fi
resp=$(curl -fsS --unix-socket /run/snapd.socket -X POST -H "Content-Type: application/json" -d "$body" http://localhost/v2/snaps/microk8s)
change=$(printf '%s' "$resp" | grep -o '"change"[[:space:]]*:[[:space:]]*"[^"]*"' | head -n 1 | sed 's/.*"\([^"]*\)"$/\1/')
if [ -z "$change" ]; then
  echo "snapd returned no change id: $resp" >&2
  exit 1
fi
echo "refreshing microk8s to $channel: snapd change $change"
i=0
while [ "$i" -lt 600 ]; do
  st=$(curl -fsS --unix-socket /run/snapd.socket "http://localhost/v2/changes/$change" || true)
  rest=${st#*\"result\"}
  status=$(printf '%s' "$rest" | grep -o '"status"[[:space:]]*:[[:space:]]*"[A-Za-z]*"' | head -n 1 | sed 's/.*"\([A-Za-z]*\)"$/\1/')
  case "$status" in
    Done) echo "snapd change $change is Done"; exit 0 ;;
    Error|Undone|Hold) echo "snapd change $change ended with status $status: $st" >&2; exit 1 ;;
  esac
  i=$((i + 1))
  sleep 2
done
echo "snapd change $change did not finish within 20 minutes" >&2
exit 1
"#;

/// `$0` of the scripts.
pub const ARG0: &str = "mk8s-action";

fn base_pod(
    name: &str,
    node: &str,
    action: &str,
    machine: &str,
    image: &str,
    script: &str,
    args: &[&str],
) -> serde_json::Value {
    let mut command = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        script.to_string(),
        ARG0.to_string(),
    ];
    command.extend(args.iter().map(|s| s.to_string()));
    let labels: BTreeMap<&str, &str> = [
        (names::LABEL_MANAGED_BY, names::MANAGED_BY),
        (names::LABEL_ACTION, action),
        (names::LABEL_ACTION_MACHINE, machine),
    ]
    .into();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": names::ACTION_NAMESPACE, "labels": labels},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "hostNetwork": true,
            "dnsPolicy": "ClusterFirstWithHostNet",
            "tolerations": [{"operator": "Exists"}],
            "terminationGracePeriodSeconds": 5,
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "containers": [{
                "name": "action",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": command,
                "securityContext": {"privileged": true, "runAsUser": 0},
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
            }],
        }
    })
}

/// Refuses a value the pods' scripts would splice into JSON or a URL, or the pod spec would
/// carry as a name, unless it has the shape this provider writes. The values come from Machine
/// annotations, which anyone allowed to patch Machines can edit: a quote must never reach a
/// script, whatever the annotation says.
fn check(what: &str, value: &str, ok: bool) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("refusing a node action with {what} {value:?}")))
    }
}

/// `<ip>:<port>` or `[<ipv6>]:<port>`.
fn is_endpoint(v: &str) -> bool {
    v.parse::<std::net::SocketAddr>().is_ok()
}

/// A Kubernetes object name (DNS subdomain).
fn is_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 253
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// `<major>.<minor>[-strict]/<risk>`, as [`mk8s_cloudinit::install_channel`] writes it.
pub fn is_channel(v: &str) -> bool {
    let Some((track, risk)) = v.split_once('/') else {
        return false;
    };
    let track = track.strip_suffix("-strict").unwrap_or(track);
    let number = |p: &str| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit());
    track.split_once('.').is_some_and(|(a, b)| number(a) && number(b))
        && ["stable", "candidate", "beta", "edge"].contains(&risk)
}

/// The dqlite member removal pod, bound to the surviving node.
pub fn dqlite_remove_pod(
    name: &str,
    survivor_node: &str,
    machine: &str,
    image: &str,
    endpoint: &str,
    agent: &str,
) -> Result<Pod> {
    check("pod name", name, is_name(name))?;
    check("node", survivor_node, is_name(survivor_node))?;
    check("member endpoint", endpoint, is_endpoint(endpoint))?;
    check("cluster agent", agent, is_endpoint(agent))?;
    let mut v = base_pod(
        name,
        survivor_node,
        names::ACTION_DQLITE_REMOVE,
        machine,
        image,
        DQLITE_REMOVE_SCRIPT,
        &[endpoint, agent],
    );
    v["spec"]["containers"][0]["env"] = serde_json::json!([{
        "name": "CAPI_AUTH_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": names::ACTION_TOKEN_SECRET, "key": names::ACTION_TOKEN_KEY}},
    }]);
    // An HTTPS call from the host network needs no privilege: an unprivileged user without
    // capabilities (the snap refresh keeps root, which snapd requires of its clients).
    v["spec"]["containers"][0]["securityContext"] = serde_json::json!({
        "privileged": false,
        "runAsUser": 65534,
        "runAsGroup": 65534,
        "runAsNonRoot": true,
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
    });
    Ok(serde_json::from_value(v)?)
}

/// The snap refresh pod, bound to the node being upgraded, with the snapd socket.
pub fn snap_refresh_pod(
    name: &str,
    node: &str,
    machine: &str,
    image: &str,
    channel: &str,
    classic: bool,
) -> Result<Pod> {
    check("pod name", name, is_name(name))?;
    check("node", node, is_name(node))?;
    check("snap channel", channel, is_channel(channel))?;
    let mut v = base_pod(
        name,
        node,
        names::ACTION_SNAP_REFRESH,
        machine,
        image,
        SNAP_REFRESH_SCRIPT,
        &[channel, if classic { "true" } else { "false" }],
    );
    v["spec"]["containers"][0]["volumeMounts"] =
        serde_json::json!([{"name": "snapd-socket", "mountPath": "/run/snapd.socket"}]);
    v["spec"]["volumes"] =
        serde_json::json!([{"name": "snapd-socket", "hostPath": {"path": "/run/snapd.socket", "type": "Socket"}}]);
    Ok(serde_json::from_value(v)?)
}

/// Whether `pod` is a node action pod of this provider for `action` on `machine` (its labels).
pub fn is_action_pod_of(pod: &Pod, action: &str, machine: &str) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let is = |k: &str, v: &str| labels.and_then(|l| l.get(k)).is_some_and(|x| x == v);
    is(names::LABEL_MANAGED_BY, names::MANAGED_BY)
        && is(names::LABEL_ACTION, action)
        && is(names::LABEL_ACTION_MACHINE, machine)
}

/// The phase of a pod as the state machines see it. A pod being deleted counts as gone: we
/// delete a pod once its outcome is recorded, and one left terminating on a node that went
/// down must not pass for a running attempt.
pub fn phase(pod: Option<&Pod>) -> crate::upgrade::PodPhase {
    use crate::upgrade::PodPhase;
    let pod = pod.filter(|p| p.metadata.deletion_timestamp.is_none());
    match pod.and_then(|p| p.status.as_ref()).and_then(|s| s.phase.as_deref()) {
        _ if pod.is_none() => PodPhase::Missing,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        _ => PodPhase::Running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_is_a_machines_action_pod_by_its_labels() {
        let p = dqlite_remove_pod(
            "mk8s-dqlite-remove-abcde",
            "n",
            "m1",
            "img:1",
            "10.0.0.3:2379",
            "10.0.0.1:30000",
        )
        .unwrap();
        assert!(is_action_pod_of(&p, names::ACTION_DQLITE_REMOVE, "m1"));
        assert!(!is_action_pod_of(&p, names::ACTION_DQLITE_REMOVE, "m2"));
        assert!(!is_action_pod_of(&p, names::ACTION_SNAP_REFRESH, "m1"));
        let mut other = p.clone();
        other.metadata.labels = None;
        assert!(!is_action_pod_of(&other, names::ACTION_DQLITE_REMOVE, "m1"));
    }

    #[test]
    fn values_a_script_would_splice_are_refused_unless_well_formed() {
        let remove = |node: &str, endpoint: &str, agent: &str| {
            dqlite_remove_pod("mk8s-dqlite-remove-abcde", node, "m", "img:1", endpoint, agent)
        };
        assert!(remove("node-a", "10.0.0.3:2379", "10.0.0.1:30000").is_ok());
        assert!(remove("node-a", "[fd00::3]:19001", "[fd00::1]:25000").is_ok());
        for (node, endpoint, agent) in [
            ("node-a", "10.0.0.3:2379\",\"x\":\"y", "10.0.0.1:30000"),
            ("node-a", "10.0.0.3:2379", "evil.example:443/steal?"),
            ("node-a", "10.0.0.3", "10.0.0.1:30000"),
            ("Node A", "10.0.0.3:2379", "10.0.0.1:30000"),
        ] {
            assert!(remove(node, endpoint, agent).is_err(), "{node} {endpoint} {agent}");
        }
        let refresh = |channel: &str| snap_refresh_pod("mk8s-snap-refresh-abcde", "n", "m", "img:1", channel, true);
        for ok in ["1.34/stable", "1.35-strict/candidate", "1.9/edge", "2.0/beta"] {
            assert!(refresh(ok).is_ok(), "{ok}");
        }
        for bad in [
            "1.33/stable\",\"action\":\"remove",
            "latest/edge",
            "1.33/stable/hotfix",
            "1.33",
            "1.33/risky",
            "",
        ] {
            assert!(refresh(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_pod_being_deleted_counts_as_gone() {
        use crate::upgrade::PodPhase;
        let pod = |phase: &str, deleting: bool| -> Pod {
            let mut meta = serde_json::json!({"name": "p"});
            if deleting {
                meta["deletionTimestamp"] = serde_json::json!("2026-01-01T00:00:00Z");
            }
            serde_json::from_value(serde_json::json!({"metadata": meta, "status": {"phase": phase}})).unwrap()
        };
        assert_eq!(phase(None), PodPhase::Missing);
        assert_eq!(phase(Some(&pod("Running", false))), PodPhase::Running);
        assert_eq!(phase(Some(&pod("Pending", false))), PodPhase::Running);
        assert_eq!(phase(Some(&pod("Failed", false))), PodPhase::Failed);
        assert_eq!(phase(Some(&pod("Succeeded", false))), PodPhase::Succeeded);
        assert_eq!(phase(Some(&pod("Running", true))), PodPhase::Missing);
        assert_eq!(phase(Some(&pod("Failed", true))), PodPhase::Missing);
    }

    #[test]
    fn dqlite_pod_passes_values_as_arguments() {
        let p = dqlite_remove_pod("p1", "node-a", "m1", "img:1", "10.0.0.3:2379", "10.0.0.1:30000").unwrap();
        let spec = p.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node-a"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.host_network, Some(true));
        assert_eq!(spec.tolerations.unwrap()[0].operator.as_deref(), Some("Exists"));
        let c = &spec.containers[0];
        assert_eq!(c.name, "action");
        assert_eq!(c.image.as_deref(), Some("img:1"));
        let cmd = c.command.as_ref().unwrap();
        assert_eq!(cmd[..2], ["/bin/sh".to_string(), "-c".to_string()]);
        assert_eq!(cmd[3..], ["mk8s-action", "10.0.0.3:2379", "10.0.0.1:30000"]);
        assert!(!cmd[2].contains("10.0.0"), "no value spliced into the script");
        assert_eq!(cmd[2], DQLITE_REMOVE_SCRIPT);
        assert!(cmd[2].contains("header = \"capi-auth-token: %s\"") && cmd[2].contains("curl -K -"));
        let env = &c.env.as_ref().unwrap()[0];
        assert_eq!(env.name, "CAPI_AUTH_TOKEN");
        assert_eq!(
            env.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap().name,
            "capi-auth-token"
        );
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.privileged, Some(false));
        assert_eq!((sc.run_as_user, sc.run_as_non_root), (Some(65534), Some(true)));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.as_ref().unwrap().drop, Some(vec!["ALL".to_string()]));
        let labels = p.metadata.labels.unwrap();
        assert_eq!(labels["microk8s.cluster.x-k8s.io/action"], "dqlite-remove");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "microk8s-capi");
        assert_eq!(p.metadata.namespace.as_deref(), Some("microk8s-capi-system"));
    }

    #[test]
    fn refresh_pod_mounts_the_snapd_socket() {
        let p = snap_refresh_pod("p2", "node-b", "m2", "img:1", "1.34-strict/candidate", false).unwrap();
        let spec = p.spec.unwrap();
        let c = &spec.containers[0];
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].mount_path, "/run/snapd.socket");
        assert_eq!(
            spec.volumes.unwrap()[0].host_path.as_ref().unwrap().path,
            "/run/snapd.socket"
        );
        let cmd = c.command.as_ref().unwrap();
        assert_eq!(cmd[3..], ["mk8s-action", "1.34-strict/candidate", "false"]);
        assert_eq!(
            p.metadata.labels.unwrap()["microk8s.cluster.x-k8s.io/action"],
            "snap-refresh"
        );
    }

    /// Runs a script as the pod would (`/bin/sh -c SCRIPT mk8s-action ARGS…`) with stub
    /// `curl` and `sleep` that play snapd and the cluster agent and record their arguments.
    fn run(script: &str, args: &[&str], final_status: &str) -> (bool, String, String) {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!(
            "mk8s-action-{}-{}",
            std::process::id(),
            crate::names::random_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let curl = r#"#!/bin/sh
printf '%s\n' "$@" >> "$STUB_DIR/log"
if [ "$1" = -K ]; then cat >> "$STUB_DIR/config"; fi
echo --- >> "$STUB_DIR/log"
for a in "$@"; do last="$a"; done
case "$last" in
  */v2/snaps/microk8s) echo '{"type":"async","status-code":202,"status":"Accepted","result":null,"change":"42"}' ;;
  */v2/changes/42)
    n=$(cat "$STUB_DIR/n" 2>/dev/null || echo 0); n=$((n+1)); echo "$n" > "$STUB_DIR/n"
    if [ "$n" -lt 3 ]; then st=Doing; else st="$STUB_FINAL"; fi
    printf '{"type":"sync","status-code":200,"status":"OK","result":{"id":"42","kind":"refresh-snap","summary":"Refresh \\"microk8s\\" snap","status":"%s","tasks":[{"id":"1","status":"Done"}],"ready":false}}\n' "$st" ;;
  */dqlite/remove)
    if [ "$STUB_FINAL" = Error ]; then printf '{"error":"invalid CAPI auth token \\"%s\\""}\n401' "$CAPI_AUTH_TOKEN"; else printf '{"result":"ok"}\n200'; fi ;;
esac
"#;
        for (name, body) in [("curl", curl), ("sleep", "#!/bin/sh\nexit 0\n")] {
            let p = dir.join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
        let status = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .arg(ARG0)
            .args(args)
            .env("PATH", path)
            .env("STUB_DIR", &dir)
            .env("STUB_FINAL", final_status)
            .env("CAPI_AUTH_TOKEN", "tok en")
            .output()
            .unwrap();
        let mut log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
        if let Ok(config) = std::fs::read_to_string(dir.join("config")) {
            log = format!("{config}=== config above, arguments below\n{log}");
        }
        let _ = std::fs::remove_dir_all(&dir);
        (
            status.status.success(),
            log,
            String::from_utf8_lossy(&status.stderr).into_owned(),
        )
    }

    #[test]
    fn refresh_script_polls_the_change_to_its_end() {
        let (ok, log, _) = run(SNAP_REFRESH_SCRIPT, &["1.34/stable", "true"], "Done");
        assert!(ok, "{log}");
        assert!(
            log.contains(r#"{"action":"refresh","channel":"1.34/stable","classic":true}"#),
            "{log}"
        );
        assert!(log.contains("--unix-socket\n/run/snapd.socket"), "{log}");
        assert_eq!(
            log.matches("http://localhost/v2/changes/42").count(),
            3,
            "polled until Done: {log}"
        );
        let (ok, log, _) = run(SNAP_REFRESH_SCRIPT, &["1.34-strict/edge", "false"], "Done");
        assert!(ok);
        assert!(
            log.contains(r#"{"action":"refresh","channel":"1.34-strict/edge"}"#),
            "{log}"
        );
        for bad in ["Error", "Undone"] {
            let (ok, _, _) = run(SNAP_REFRESH_SCRIPT, &["1.34/stable", "true"], bad);
            assert!(!ok, "{bad} must fail the pod");
        }
        // A channel with shell metacharacters stays a value.
        let (ok, log, _) = run(SNAP_REFRESH_SCRIPT, &["1.34/stable$(touch /tmp/x)", "true"], "Done");
        assert!(ok);
        assert!(log.contains("1.34/stable$(touch /tmp/x)"), "{log}");
    }

    #[test]
    fn removal_script_calls_the_agent_with_the_token() {
        let (ok, log, _) = run(DQLITE_REMOVE_SCRIPT, &["10.0.0.3:2379", "10.0.0.1:30000"], "Done");
        assert!(ok, "{log}");
        let args: Vec<&str> = log.lines().collect();
        assert_eq!(
            args,
            [
                r#"header = "capi-auth-token: tok en""#,
                "=== config above, arguments below",
                "-K",
                "-",
                "-sS",
                "-k",
                "--connect-timeout",
                "10",
                "--max-time",
                "120",
                "-w",
                "\\n%{http_code}",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-d",
                r#"{"remove_endpoint":"10.0.0.3:2379"}"#,
                "https://10.0.0.1:30000/cluster/api/v2.0/dqlite/remove",
                "---"
            ]
        );
        // The agent refusing fails the pod, with its answer in the log but not the token it
        // echoes.
        let (ok, _, err) = run(DQLITE_REMOVE_SCRIPT, &["10.0.0.3:2379", "10.0.0.1:30000"], "Error");
        assert!(!ok, "an HTTP error fails the attempt");
        assert!(
            err.contains("HTTP 401") && err.contains("invalid CAPI auth token"),
            "{err}"
        );
        assert!(!err.contains("tok en") && err.contains("<redacted>"), "{err}");
    }

    #[test]
    fn scripts_pass_shellcheck() {
        if std::process::Command::new("shellcheck")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("shellcheck not installed; skipped");
            return;
        }
        for script in [DQLITE_REMOVE_SCRIPT, SNAP_REFRESH_SCRIPT] {
            let mut child = std::process::Command::new("shellcheck")
                .args(["-s", "sh", "-"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        }
    }
}
