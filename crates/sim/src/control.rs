//! The simulator side of the stub commands: a unix socket per node at
//! `/run/mk8s-sim/sim.sock` inside the node (so the node a call comes from is the node whose
//! socket it uses). `POST /v1/exec` with `{"tool", "args", "cwd"}` answers
//! `{"code", "stdout", "stderr", "exec"?, "env"?, "sleep"?}`: the stub prints, then exits
//! with `code`, or replaces itself with `exec` (the real `kubectl`/`curl`), or sleeps.
//! Every call is recorded on the node (`[tool, args…]`).
//!
//! * `microk8s`: exit 127 ("command not found") until the snap is installed; then
//!   `kubectl …` (the real kubectl against the cluster's API server once the node created
//!   or joined the cluster; before that only `get --raw /readyz|/livez|/healthz` answer `ok`
//!   from the node's own simulated API server; workers refuse, as MicroK8s does),
//!   `refresh-certs [--cert F] [DIR]`, `add-node [--token T] [--token-ttl N]`,
//!   `join ADDR:PORT/TOKEN[/FP] [--worker]`, `enable`/`disable ADDON…`, `status`, `version`,
//!   `config`, `leave`, `start`, `stop`, `inspect`.
//! * `iptables`: keeps the node's rules (`-A`, `-I`, `-D`, `-C`, `-S`, `-L`, `-F`; tables
//!   `filter`, `nat`, `mangle`, `raw`), `-C` fails when the rule is absent.
//! * `systemctl`: `daemon-reload`; `enable`/`disable`/`start`/`restart`/`is-enabled` of units
//!   in the node's `/etc/systemd/system` or snapd; other units are "not found" (exit 5).
//! * `curl`: the real curl for loopback and unix-socket targets; the snap store proxy's
//!   assertions endpoint is answered by the simulator; anything else cannot be resolved
//!   (exit 6) — nodes have no network.
//! * `sleep`: the scaled duration (see `Config::sleep_scale`).

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::cluster;
use crate::state::{NodeRt, Role, Sim, lock};

/// A stub call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest {
    /// `microk8s`, `iptables`, `systemctl`, `curl`, `sleep`.
    pub tool: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Working directory inside the node.
    #[serde(default)]
    pub cwd: String,
}

/// What the stub does.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecResponse {
    /// Exit code.
    pub code: i32,
    /// Printed on stdout.
    #[serde(default)]
    pub stdout: String,
    /// Printed on stderr.
    #[serde(default)]
    pub stderr: String,
    /// Replace the stub with this command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    /// Sleep this many seconds, then exit 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep: Option<f64>,
}

fn out(code: i32, stdout: impl Into<String>, stderr: impl Into<String>) -> ExecResponse {
    ExecResponse {
        code,
        stdout: stdout.into(),
        stderr: stderr.into(),
        ..Default::default()
    }
}

fn ok(stdout: impl Into<String>) -> ExecResponse {
    out(0, stdout, "")
}

fn fail(stderr: impl Into<String>) -> ExecResponse {
    let mut s: String = stderr.into();
    if !s.ends_with('\n') {
        s.push('\n');
    }
    out(1, "", s)
}

/// Writes a file with mode 0600 (creating its directory).
pub fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[derive(Clone)]
struct Ctx {
    sim: Arc<Sim>,
    node: Arc<NodeRt>,
}

/// Starts the node's control socket.
pub fn start(sim: &Arc<Sim>, node: &Arc<NodeRt>) -> Result<(), String> {
    let path = node.socket("sim");
    let _ = std::fs::remove_file(&path);
    let listener =
        tokio::net::UnixListener::bind(&path).map_err(|e| format!("control socket {}: {e}", path.display()))?;
    let router = Router::new().route("/v1/exec", post(exec)).with_state(Ctx {
        sim: sim.clone(),
        node: node.clone(),
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    lock(&node.tasks).push(task.abort_handle());
    Ok(())
}

async fn exec(State(ctx): State<Ctx>, Json(req): Json<ExecRequest>) -> Json<ExecResponse> {
    ctx.node.record(&req.tool, &req.args);
    let resp = match req.tool.as_str() {
        "microk8s" => microk8s(&ctx.sim, &ctx.node, &req).await,
        "iptables" => iptables(&ctx.node, &req.args),
        "systemctl" => systemctl(&ctx.node, &req.args),
        "curl" => curl(&req.args),
        "sleep" => sleep(&ctx.sim, &req.args),
        other => out(127, "", format!("{other}: not simulated\n")),
    };
    Json(resp)
}

fn sleep(sim: &Sim, args: &[String]) -> ExecResponse {
    let mut total = 0.0;
    for a in args {
        let (num, unit) = match a.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
            Some((i, _)) => (&a[..i], &a[i..]),
            None => (a.as_str(), "s"),
        };
        let Ok(n) = num.parse::<f64>() else {
            if a == "infinity" {
                total += 1e9;
                continue;
            }
            return out(1, "", format!("sleep: invalid time interval '{a}'\n"));
        };
        total += n * match unit {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return out(1, "", format!("sleep: invalid time interval '{a}'\n")),
        };
    }
    ExecResponse {
        sleep: Some(total * sim.cfg.sleep_scale),
        ..Default::default()
    }
}

fn curl(args: &[String]) -> ExecResponse {
    let url = args.iter().find(|a| a.contains("://")).cloned().unwrap_or_default();
    let unix = args
        .iter()
        .any(|a| a == "--unix-socket" || a.starts_with("--unix-socket="));
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or("")
        .split(['/', '?'])
        .next()
        .unwrap_or("")
        .rsplit_once('@')
        .map_or_else(
            || {
                url.split("://")
                    .nth(1)
                    .unwrap_or("")
                    .split(['/', '?'])
                    .next()
                    .unwrap_or("")
            },
            |(_, h)| h,
        )
        .to_string();
    let hostname = if host.starts_with('[') {
        host.trim_start_matches('[').split(']').next().unwrap_or("").to_string()
    } else {
        host.rsplit_once(':').map_or(host.clone(), |(h, _)| h.to_string())
    };
    let loopback = hostname == "localhost" || hostname.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if unix || loopback {
        let mut exec = vec!["/usr/bin/curl".to_string()];
        exec.extend(args.iter().cloned());
        return ExecResponse {
            exec: Some(exec),
            ..Default::default()
        };
    }
    if url.ends_with("/v2/auth/store/assertions") {
        return ok(
            "type: account-key\nauthority-id: canonical\npublic-key-sha3-384: mk8s-sim\naccount-id: mk8s-sim\n\
             name: store\nsince: 2024-01-01T00:00:00Z\nbody-length: 0\nsign-key-sha3-384: mk8s-sim\n\nSIG\n\n\
             type: store\nauthority-id: mk8s-sim\nstore: mk8s-sim\noperator-id: mk8s-sim\nurl: http://mk8s-sim\n",
        );
    }
    out(6, "", format!("curl: (6) Could not resolve host: {hostname}\n"))
}

fn systemctl(node: &NodeRt, args: &[String]) -> ExecResponse {
    let words: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let Some((verb, units)) = words.split_first() else {
        return ok("");
    };
    let unit_exists = |u: &str| {
        let name = if u.contains('.') {
            u.to_string()
        } else {
            format!("{u}.service")
        };
        node.host_path(&format!("/etc/systemd/system/{name}")).exists()
            || name.starts_with("snap.")
            || name == "snapd.service"
    };
    match *verb {
        "daemon-reload" | "reset-failed" => ok(""),
        "enable" | "disable" | "start" | "stop" | "restart" | "reload" | "is-active" | "is-enabled" | "status" => {
            for u in units {
                if !unit_exists(u) {
                    let code = if matches!(*verb, "enable" | "disable") { 1 } else { 5 };
                    return out(
                        code,
                        "",
                        if matches!(*verb, "enable" | "disable") {
                            format!("Failed to {verb} unit: Unit file {u} does not exist.\n")
                        } else {
                            format!("Failed to {verb} {u}: Unit {u} not found.\n")
                        },
                    );
                }
            }
            match *verb {
                "is-active" => ok("active\n"),
                "is-enabled" => ok("enabled\n"),
                _ => ok(""),
            }
        }
        other => out(1, "", format!("Unknown command verb {other}.\n")),
    }
}

fn iptables(node: &NodeRt, args: &[String]) -> ExecResponse {
    let mut table = "filter".to_string();
    let mut op: Option<(String, String)> = None;
    let mut rule = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "-t" | "--table" => {
                table = args.get(i + 1).cloned().unwrap_or_default();
                i += 2;
                continue;
            }
            "-A" | "--append" | "-C" | "--check" | "-D" | "--delete" | "-I" | "--insert" => {
                op = Some((
                    a.chars().nth(1).map_or(String::new(), |c| c.to_string()),
                    args.get(i + 1).cloned().unwrap_or_default(),
                ));
                i += 2;
                continue;
            }
            "-S" | "--list-rules" | "-L" | "--list" | "-F" | "--flush" => {
                op = Some((
                    a.trim_start_matches('-')
                        .chars()
                        .next()
                        .map_or(String::new(), |c| c.to_ascii_uppercase().to_string()),
                    args.get(i + 1).cloned().unwrap_or_default(),
                ));
                i += 1;
                if args.get(i).is_some_and(|n| !n.starts_with('-')) {
                    i += 1;
                }
                continue;
            }
            "-w" | "--wait" => {
                i += 1;
                if args.get(i).is_some_and(|n| n.parse::<u32>().is_ok()) {
                    i += 1;
                }
                continue;
            }
            _ => rule.push(a.to_string()),
        }
        i += 1;
    }
    let chains: &[&str] = match table.as_str() {
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "filter" => &["INPUT", "FORWARD", "OUTPUT"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        "raw" => &["PREROUTING", "OUTPUT"],
        t => {
            return out(
                3,
                "",
                format!("iptables v1.8.10 (nf_tables): table '{t}' does not exist\n"),
            );
        }
    };
    let Some((op, chain)) = op else {
        return out(2, "", "iptables v1.8.10 (nf_tables): no command specified\n");
    };
    if !chain.is_empty() && !chains.contains(&chain.as_str()) && !matches!(op.as_str(), "S" | "L" | "F") {
        return out(1, "", "iptables: No chain/target/match by that name.\n");
    }
    let mut key = vec![table.clone(), chain.clone()];
    key.extend(rule);
    let mut st = lock(&node.st);
    let present = st.iptables.contains(&key);
    match op.as_str() {
        "A" | "I" => {
            st.iptables.push(key);
            ok("")
        }
        "C" if present => ok(""),
        "C" => out(
            1,
            "",
            "iptables: Bad rule (does a matching rule exist in that chain?).\n",
        ),
        "D" if present => {
            if let Some(pos) = st.iptables.iter().position(|r| *r == key) {
                st.iptables.remove(pos);
            }
            ok("")
        }
        "D" => out(
            1,
            "",
            "iptables: Bad rule (does a matching rule exist in that chain?).\n",
        ),
        "F" => {
            st.iptables
                .retain(|r| r[0] != table || (!chain.is_empty() && r[1] != chain));
            ok("")
        }
        _ => {
            let lines: String = st
                .iptables
                .iter()
                .filter(|r| r[0] == table && (chain.is_empty() || r[1] == chain))
                .map(|r| format!("-A {} {}\n", r[1], r[2..].join(" ")))
                .collect();
            ok(lines)
        }
    }
}

/// A node path given relative to `cwd`.
fn node_path(cwd: &str, p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{}/{p}", if cwd.is_empty() { "/" } else { cwd.trim_end_matches('/') })
    }
}

async fn microk8s(sim: &Arc<Sim>, node: &Arc<NodeRt>, req: &ExecRequest) -> ExecResponse {
    if lock(&node.st).snap.is_none() {
        return out(127, "", "microk8s: command not found\n");
    }
    let args = &req.args;
    let Some((cmd, rest)) = args.split_first() else {
        return ok("Available subcommands are:\n\tadd-node\n\tjoin\n\tkubectl\n\trefresh-certs\n\tstatus\n");
    };
    match cmd.as_str() {
        "kubectl" => kubectl(sim, node, rest).await,
        "refresh-certs" => refresh_certs(sim, node, &req.cwd, rest).await,
        "add-node" => add_node(sim, node, rest),
        "join" => join(sim, node, rest).await,
        "enable" => enable(node, rest),
        "disable" => {
            let mut st = lock(&node.st);
            st.addons
                .retain(|a| !rest.iter().any(|r| a.split(':').next() == r.split(':').next()));
            ok("")
        }
        "status" => status(sim, node).await,
        "version" => {
            let v = node.kubelet_version(sim.cfg.kubelet_patch).unwrap_or_default();
            let rev = lock(&node.st).snap.as_ref().map_or(0, |s| s.revision);
            ok(format!("MicroK8s {v} revision {rev}\n"))
        }
        "config" => {
            if !node.in_cluster() {
                return fail("the simulator has no kubeconfig for a node outside the cluster");
            }
            let Ok(c) = cluster::of(sim, node) else {
                return fail("the cluster is gone");
            };
            match cluster::admin_kubeconfig(&c).await {
                Some(k) => ok(k),
                None => fail("the cluster's API server is not running"),
            }
        }
        "leave" => leave(sim, node),
        "start" | "stop" | "inspect" | "reset" => ok(""),
        other => fail(format!("'{other}' is not a valid MicroK8s subcommand.")),
    }
}

async fn kubectl(sim: &Arc<Sim>, node: &Arc<NodeRt>, args: &[String]) -> ExecResponse {
    match lock(&node.st).role {
        Role::Worker => {
            return fail(
                "This MicroK8s deployment is acting as a node in a cluster. Please use microk8s kubectl on the \
                 control plane nodes.",
            );
        }
        Role::Standalone => {
            let raw: Vec<&str> = args.iter().map(String::as_str).collect();
            return match raw.as_slice() {
                ["get", "--raw", "/readyz" | "/livez" | "/healthz"] => ok("ok\n"),
                _ => fail(
                    "mk8s-sim: this node has neither created nor joined the cluster; the simulator models its own \
                     API server only for `get --raw /readyz`",
                ),
            };
        }
        Role::ControlPlane => {}
    }
    let Some(kubectl) = sim.kubectl.clone() else {
        return fail("mk8s-sim: no kubectl binary on the simulator's host (--kubectl)");
    };
    let Ok(c) = cluster::of(sim, node) else {
        return fail("the cluster is gone");
    };
    if c.api.lock().await.is_none() {
        return out(
            1,
            "",
            "The connection to the server was refused - did you specify the right host or port?\n",
        );
    }
    let mut exec = vec![
        kubectl.display().to_string(),
        format!("--kubeconfig={}", cluster::NODE_KUBECONFIG),
    ];
    exec.extend(args.iter().cloned());
    ExecResponse {
        exec: Some(exec),
        ..Default::default()
    }
}

async fn refresh_certs(sim: &Arc<Sim>, node: &Arc<NodeRt>, cwd: &str, args: &[String]) -> ExecResponse {
    let mut dir = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--cert" | "-c" => {
                let Some(c) = args.get(i + 1) else {
                    return fail("Error: Option '--cert' requires an argument.");
                };
                return ok(format!(
                    "Taking a backup of the current certificates under /var/snap/microk8s/current/certs-backup/\nCreating new certificates\nRefreshing {c}\n"
                ));
            }
            "--check" | "-e" => return ok("The CA certificate will expire in 3649 days.\n"),
            "--undo" | "-u" => return ok("Restoring the certificates backup\n"),
            a if a.starts_with('-') => return fail(format!("Error: No such option: {a}")),
            a => dir = Some(a.to_string()),
        }
        i += 1;
    }
    let Some(dir) = dir else {
        return fail("Error: please provide the directory with the CA (ca.crt, ca.key) or --cert");
    };
    let dir = node_path(cwd, &dir);
    let read = |f: &str| std::fs::read_to_string(node.host_path(&format!("{}/{f}", dir.trim_end_matches('/'))));
    let (Ok(cert), Ok(key)) = (read("ca.crt"), read("ca.key")) else {
        return fail(format!("Error: {dir}/ca.crt and {dir}/ca.key are required"));
    };
    match cluster::install_ca(sim, node, &cert, &key).await {
        Ok(msg) => ok(format!(
            "Taking a backup of the current certificates under /var/snap/microk8s/current/certs-backup/\n\
             Creating new certificates\nSigning certificate request ok\nRestarting service kubelite.\n({msg})\n"
        )),
        Err(e) => fail(format!("Error: {e}")),
    }
}

fn add_node(sim: &Arc<Sim>, node: &Arc<NodeRt>, args: &[String]) -> ExecResponse {
    let mut token = None;
    let mut ttl: u64 = 86400;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let (flag, inline) = a.split_once('=').map_or((a, None), |(f, v)| (f, Some(v.to_string())));
        let value = |i: &mut usize| -> Option<String> {
            inline.clone().or_else(|| {
                *i += 1;
                args.get(*i).cloned()
            })
        };
        match flag {
            "--token" | "-t" => token = value(&mut i),
            "--token-ttl" | "-l" => match value(&mut i).and_then(|v| v.parse().ok()) {
                Some(v) => ttl = v,
                None => return fail("Error: --token-ttl must be a number of seconds"),
            },
            "--format" => {
                value(&mut i);
            }
            other => return fail(format!("Error: No such option: {other}")),
        }
        i += 1;
    }
    if lock(&node.st).role == Role::Worker {
        return fail("This node is a worker node: run add-node on a control plane node.");
    }
    let token = token.unwrap_or_else(|| {
        use std::hash::{BuildHasher as _, Hasher as _};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        format!("{:016x}{:016x}", h.finish(), h.finish().rotate_left(17))
    });
    if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return fail("Error: the token must be 32 alphanumeric characters");
    }
    lock(&node.st)
        .tokens
        .insert(token.clone(), SystemTime::now() + Duration::from_secs(ttl));
    let port = lock(&node.st).agent_port.unwrap_or(25000);
    let _ = sim;
    ok(format!(
        "From the node you wish to join to this cluster, run the following:\nmicrok8s join {ip}:{port}/{token}\n\n\
         Use the '--worker' flag to join a node as a worker not running the control plane, eg:\n\
         microk8s join {ip}:{port}/{token} --worker\n",
        ip = node.ip
    ))
}

async fn join(sim: &Arc<Sim>, node: &Arc<NodeRt>, args: &[String]) -> ExecResponse {
    let mut worker = false;
    let mut url = None;
    for a in args {
        match a.as_str() {
            "--worker" => worker = true,
            "--controlplane" | "--skip-verify" => {}
            a if a.starts_with('-') => return fail(format!("Error: No such option: {a}")),
            a => url = Some(a.to_string()),
        }
    }
    let Some(url) = url else {
        return fail("Error: Missing argument 'CONNECTION'.");
    };
    if node.in_cluster() {
        return fail("The node is already part of a cluster.");
    }
    let (addr, token) = match url.split_once('/') {
        Some((a, rest)) => (a.to_string(), rest.split('/').next().unwrap_or("").to_string()),
        None => {
            return fail(format!(
                "Invalid connection string {url}: expected <address>:<port>/<token>"
            ));
        }
    };
    let Ok(to) = addr.parse::<SocketAddr>() else {
        return fail(format!(
            "Connection failed. Cannot resolve {addr} (the simulator joins through IP addresses)."
        ));
    };
    let body = serde_json::json!({
        "token": token, "hostname": node.hostname, "worker": worker,
        "dqlite_address": node.dqlite_address(),
        "port": lock(&node.st).agent_port,
    });
    let resp = crate::httpx::https_post(
        sim.tls_client.clone(),
        node.ip,
        to,
        "/cluster/api/v2.0/join",
        body.to_string().into_bytes(),
        Duration::from_secs(30),
    )
    .await;
    match resp {
        Err(e) => fail(format!(
            "Connection failed. The cluster agent at {addr} is not reachable ({e})."
        )),
        Ok(r) if r.status == 200 => ok(format!(
            "Contacting cluster at {}\nWaiting for this node to finish joining the cluster. .. .. ..\n\
             Successfully joined the cluster.\n",
            to.ip()
        )),
        Ok(r) => {
            let msg = serde_json::from_slice::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| r.text());
            fail(format!("Failed to join cluster. Error code {}. {msg}", r.status))
        }
    }
}

fn enable(node: &NodeRt, args: &[String]) -> ExecResponse {
    const CORE: [&str; 22] = [
        "community",
        "dns",
        "ingress",
        "metrics-server",
        "hostpath-storage",
        "storage",
        "rbac",
        "helm",
        "helm3",
        "dashboard",
        "registry",
        "metallb",
        "cert-manager",
        "observability",
        "prometheus",
        "host-access",
        "ha-cluster",
        "gpu",
        "kube-ovn",
        "mayastor",
        "minio",
        "rook-ceph",
    ];
    let community = lock(&node.st).addons.iter().any(|a| a == "community");
    let mut text = String::new();
    for a in args.iter().filter(|a| !a.starts_with('-')) {
        let name = a.split(':').next().unwrap_or(a);
        if !CORE.contains(&name) && !community {
            return fail(format!("Addon {name} was not found in any repository"));
        }
        let mut st = lock(&node.st);
        if !st.addons.iter().any(|x| x == a) {
            st.addons.push(a.clone());
        }
        text.push_str(&format!(
            "Infer repository core for addon {name}\nEnabling {name}\n{name} is enabled\n"
        ));
    }
    ok(text)
}

async fn status(sim: &Arc<Sim>, node: &Arc<NodeRt>) -> ExecResponse {
    let addons = lock(&node.st).addons.join("\n    ");
    let ha = cluster::of(sim, node)
        .map(|c| lock(&c.st).members.len() >= 3)
        .unwrap_or(false);
    ok(format!(
        "microk8s is running\nhigh-availability: {}\n  datastore master nodes: {}\naddons:\n  enabled:\n    {addons}\n",
        if ha { "yes" } else { "no" },
        cluster::of(sim, node)
            .map(|c| lock(&c.st)
                .members
                .iter()
                .map(|m| m.address.clone())
                .collect::<Vec<_>>()
                .join(" "))
            .unwrap_or_default()
    ))
}

fn leave(sim: &Arc<Sim>, node: &Arc<NodeRt>) -> ExecResponse {
    let role = lock(&node.st).role;
    if role == Role::Standalone {
        return fail("This MicroK8s deployment is not part of a cluster.");
    }
    if role == Role::ControlPlane
        && let Ok(c) = cluster::of(sim, node)
    {
        let address = node.dqlite_address();
        sim.remove_member(&c, &address, &node.node_name());
    }
    {
        let mut st = lock(&node.st);
        st.role = Role::Standalone;
        st.registered = false;
    }
    ok("Generating new cluster certificates.\nWaiting for node to start.\n")
}
