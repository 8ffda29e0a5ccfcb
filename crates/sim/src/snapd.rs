//! The stub snapd of a node: its REST API on the unix socket `/run/snapd.socket` of the
//! node (bound on the host under a short socket directory — unix socket paths are limited
//! to 108 bytes — and bind-mounted over `/run/snapd.socket` in the node). The stub `snap` command and the pods the
//! control plane provider runs on the node (with that socket as a hostPath) both use it.
//!
//! | request | answer |
//! |---|---|
//! | `GET /v2/snaps`, `GET /v2/snaps/<name>` | the installed snap (404 `snap-not-found` when not installed) |
//! | `POST /v2/snaps/microk8s` `{"action":"install","channel":C,"classic":B}` | 202 async change; 400 `snap-already-installed`, invalid risk, `snap-needs-classic` (a classic track without `"classic":true`); 404 `snap-channel-not-available` |
//! | `POST /v2/snaps/microk8s` `{"action":"refresh","channel":C,"classic":B}` | 202 async change; on `Done` the track changes and the Node's kubeletVersion follows; 400 when switching from strict to a classic track without `"classic":true` |
//! | `POST /v2/snaps/microk8s` `{"action":"hold","time":"forever"\|RFC3339,"hold-level":L}` / `unhold` / `remove` | 200 / 202 |
//! | `PUT /v2/snaps/<name>/conf` `{k: v}` | 202 (the configure hook) |
//! | `GET /v2/snaps/<name>/conf` | 200 |
//! | `POST /v2/apps` `{"action":"restart"\|"start"\|"stop","names":["microk8s.daemon-…"]}` | 202; unknown services 404 |
//! | `POST /v2/assertions` | 200 |
//! | `GET /v2/changes/<id>` | `{"status":"Doing"\|"Done"\|"Error","ready":B,"err":…}` |
//!
//! Installs and refreshes take the node's install delay before they are `Done`. Effects of
//! restarts: `daemon-cluster-agent` re-reads the agent port from `args/cluster-agent`;
//! `daemon-k8s-dqlite` applies `var/kubernetes/backend/update.yaml` (the node's dqlite
//! address, and its member address, change); `daemon-kubelite` (re)registers the Node.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::snap::{self, SnapError};
use crate::state::{Change, NodeRt, Role, Sim, SnapInstall, lock, now_rfc3339};
use crate::{agent, cluster, kubelet};

#[derive(Clone)]
struct Ctx {
    sim: Arc<Sim>,
    node: Arc<NodeRt>,
}

/// Starts the node's snapd socket.
pub fn start(sim: &Arc<Sim>, node: &Arc<NodeRt>) -> Result<(), String> {
    let path = node.socket("snapd");
    let _ = std::fs::remove_file(&path);
    let listener =
        tokio::net::UnixListener::bind(&path).map_err(|e| format!("snapd socket {}: {e}", path.display()))?;
    let router = Router::new()
        .route("/v2/snaps", get(list))
        .route("/v2/snaps/{name}", get(info).post(action))
        .route("/v2/snaps/{name}/conf", get(get_conf).put(set_conf))
        .route("/v2/apps", get(apps).post(apps_action))
        .route("/v2/assertions", post(assertions))
        .route("/v2/changes/{id}", get(change))
        .route("/v2/system-info", get(system_info))
        .fallback(|| async {
            error(SnapError {
                status: 404,
                kind: "",
                message: "not found".into(),
            })
        })
        .with_state(Ctx {
            sim: sim.clone(),
            node: node.clone(),
        });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    lock(&node.tasks).push(task.abort_handle());
    Ok(())
}

fn sync(result: Value) -> Response {
    Json200(json!({"type": "sync", "status-code": 200, "status": "OK", "result": result})).into_response()
}

struct Json200(Value);

impl IntoResponse for Json200 {
    fn into_response(self) -> Response {
        (StatusCode::OK, axum::Json(self.0)).into_response()
    }
}

fn accepted(id: u64) -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"type": "async", "status-code": 202, "status": "Accepted", "change": id.to_string(), "result": null})),
    )
        .into_response()
}

fn error(e: SnapError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut result = json!({"message": e.message});
    if !e.kind.is_empty() {
        result["kind"] = json!(e.kind);
    }
    (
        status,
        axum::Json(json!({"type": "error", "status-code": e.status, "status": status.canonical_reason().unwrap_or(""), "result": result})),
    )
        .into_response()
}

fn bad(message: impl Into<String>) -> Response {
    error(SnapError {
        status: 400,
        kind: "",
        message: message.into(),
    })
}

fn snap_json(s: &SnapInstall, patch: u32) -> Value {
    json!({
        "name": "microk8s", "id": "EaXqgt1lyCaxKaQCU349mlodBkDCXRcg", "type": "app", "status": "active",
        "version": format!("v{}.{}.{patch}", s.track.major, s.track.minor), "revision": s.revision.to_string(),
        "channel": s.channel, "tracking-channel": s.channel,
        "confinement": if s.track.strict { "strict" } else { "classic" },
        "hold": s.hold, "publisher": {"username": "canonical", "display-name": "Canonical", "validation": "verified"},
    })
}

async fn list(State(ctx): State<Ctx>) -> Response {
    let snap = lock(&ctx.node.st).snap.clone();
    sync(json!(
        snap.iter()
            .map(|s| snap_json(s, ctx.sim.cfg.kubelet_patch))
            .collect::<Vec<_>>()
    ))
}

fn not_installed(name: &str) -> SnapError {
    SnapError {
        status: 404,
        kind: "snap-not-found",
        message: format!("snap \"{name}\" is not installed"),
    }
}

async fn info(State(ctx): State<Ctx>, Path(name): Path<String>) -> Response {
    ctx.node.record("snapd", &["GET".into(), format!("/v2/snaps/{name}")]);
    match (name.as_str(), lock(&ctx.node.st).snap.clone()) {
        ("microk8s", Some(s)) => sync(snap_json(&s, ctx.sim.cfg.kubelet_patch)),
        _ => error(not_installed(&name)),
    }
}

/// What a change does when it is done.
enum Effect {
    Install {
        channel: String,
        track: snap::Track,
        classic: bool,
    },
    Refresh {
        channel: String,
        track: snap::Track,
    },
    Restart(Vec<String>),
    Remove,
    Nothing,
}

fn new_change(ctx: &Ctx, kind: &str, summary: String, effect: Effect, delay: Duration) -> u64 {
    let id = ctx.sim.next_change_id();
    lock(&ctx.node.st).changes.insert(
        id,
        Change {
            id,
            kind: kind.into(),
            summary,
            status: "Doing".into(),
            err: None,
            spawn_time: now_rfc3339(),
        },
    );
    let (sim, node) = (ctx.sim.clone(), ctx.node.clone());
    let task = tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let result = apply(&sim, &node, effect).await;
        if let Some(c) = lock(&node.st).changes.get_mut(&id) {
            match result {
                Ok(()) => c.status = "Done".into(),
                Err(e) => {
                    c.status = "Error".into();
                    c.err = Some(e);
                }
            }
        }
        sim.trigger_machine(&node.key);
    });
    lock(&ctx.node.tasks).push(task.abort_handle());
    id
}

async fn apply(sim: &Arc<Sim>, node: &Arc<NodeRt>, effect: Effect) -> Result<(), String> {
    match effect {
        Effect::Install {
            channel,
            track,
            classic,
        } => {
            let revision = 8000 + track.minor * 10;
            snap::install_tree(&node.root, revision).map_err(|e| format!("installing the snap's files: {e}"))?;
            {
                let mut st = lock(&node.st);
                st.snap = Some(SnapInstall {
                    channel: channel.clone(),
                    track,
                    revision,
                    classic,
                    hold: None,
                });
                st.dqlite_port = mk8s_api::consts::DQLITE_PORT_DEFAULT;
            }
            tracing::info!(node = %node.key, %channel, "snap installed");
            restart(sim, node, "daemon-cluster-agent").await
        }
        Effect::Refresh { channel, track } => {
            {
                let mut st = lock(&node.st);
                let Some(s) = st.snap.as_mut() else {
                    return Err("snap \"microk8s\" is not installed".into());
                };
                s.channel = channel.clone();
                s.track = track;
                s.revision += 1;
            }
            tracing::info!(node = %node.key, %channel, "snap refreshed");
            restart(sim, node, "daemon-kubelite").await
        }
        Effect::Restart(names) => {
            for n in names {
                restart(sim, node, &n).await?;
            }
            Ok(())
        }
        Effect::Remove => {
            if let Some(a) = lock(&node.agent).take() {
                a.abort();
            }
            {
                let mut st = lock(&node.st);
                st.snap = None;
                st.agent_port = None;
            }
            let _ = std::fs::remove_dir_all(node.root.join("var/snap/microk8s"));
            Ok(())
        }
        Effect::Nothing => Ok(()),
    }
}

/// Restarts a MicroK8s service (`daemon-…`) of a node, with its effects.
pub async fn restart(sim: &Arc<Sim>, node: &Arc<NodeRt>, service: &str) -> Result<(), String> {
    let current = snap::snap_current(&node.root);
    match service {
        "daemon-cluster-agent" => {
            let args = std::fs::read_to_string(current.join("args/cluster-agent")).unwrap_or_default();
            let port = snap::agent_port(&args).ok_or("no --bind in args/cluster-agent")?;
            agent::start(sim, node, port).await
        }
        "daemon-k8s-dqlite" => {
            let backend = current.join("var/kubernetes/backend");
            let Ok(update) = std::fs::read_to_string(backend.join("update.yaml")) else {
                return Ok(());
            };
            let port = snap::dqlite_port(&update).ok_or("update.yaml has no Address")?;
            let old = node.dqlite_address();
            let info = std::fs::read_to_string(backend.join("info.yaml")).unwrap_or_default();
            let address = update
                .lines()
                .find(|l| l.starts_with("Address:"))
                .unwrap_or("")
                .to_string();
            let rest: String = info
                .lines()
                .filter(|l| !l.starts_with("Address:"))
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(backend.join("info.yaml"), format!("{address}\n{rest}")).map_err(|e| e.to_string())?;
            let _ = std::fs::remove_file(backend.join("update.yaml"));
            lock(&node.st).dqlite_port = port;
            let new = node.dqlite_address();
            if let Some(c) = sim.cluster(&node.cluster) {
                let changed = {
                    let mut st = lock(&c.st);
                    match st.members.iter_mut().find(|m| m.machine == node.key) {
                        Some(m) if m.address != new => {
                            m.address = new.clone();
                            true
                        }
                        _ => false,
                    }
                };
                if changed {
                    sim.membership_event(
                        &c,
                        "AddressChanged",
                        Some(&new),
                        Some(&node.node_name()),
                        format!("was {old}"),
                    );
                }
            }
            Ok(())
        }
        "daemon-kubelite" => {
            if lock(&node.st).role == Role::Standalone {
                return Ok(());
            }
            let Some(c) = sim.cluster(&node.cluster) else {
                return Ok(());
            };
            if let Some(client) = cluster::client(&c).await {
                if lock(&node.st).registered {
                    kubelet::set_node_status(sim, node, &client).await?;
                } else {
                    kubelet::register_node(sim, node, &client).await?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

async fn action(State(ctx): State<Ctx>, Path(name): Path<String>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad("cannot decode request body into snap instruction");
    };
    let act = req["action"].as_str().unwrap_or("").to_string();
    ctx.node
        .record("snapd", &["POST".into(), format!("/v2/snaps/{name}"), req.to_string()]);
    if name != "microk8s" {
        return error(SnapError {
            status: 404,
            kind: "snap-not-found",
            message: "snap not found".into(),
        });
    }
    let classic = req["classic"].as_bool().unwrap_or(false);
    let installed = lock(&ctx.node.st).snap.clone();
    let delay = ctx.node.install_delay;
    let channel = req["channel"].as_str().filter(|c| !c.is_empty());
    match act.as_str() {
        "install" => {
            if installed.is_some() {
                return error(SnapError {
                    status: 400,
                    kind: "snap-already-installed",
                    message: "snap \"microk8s\" is already installed".into(),
                });
            }
            let ch = match snap::parse_channel(channel.unwrap_or("latest/stable")) {
                Ok(c) => c,
                Err(e) => return error(e),
            };
            let track = match snap::track(&ch, ctx.sim.cfg.latest_minor) {
                Ok(t) => t,
                Err(e) => return error(e),
            };
            if !track.strict && !classic {
                return error(snap::needs_classic());
            }
            let id = new_change(
                &ctx,
                "install-snap",
                format!("Install \"microk8s\" snap from \"{}\" channel", ch.full()),
                Effect::Install {
                    channel: ch.full(),
                    track,
                    classic: !track.strict,
                },
                delay,
            );
            accepted(id)
        }
        "refresh" => {
            let Some(current) = installed else {
                return error(not_installed("microk8s"));
            };
            let Some(channel) = channel else {
                let id = new_change(
                    &ctx,
                    "refresh-snap",
                    "Refresh \"microk8s\" snap".into(),
                    Effect::Nothing,
                    delay,
                );
                return accepted(id);
            };
            let ch = match snap::parse_channel(channel) {
                Ok(c) => c,
                Err(e) => return error(e),
            };
            let track = match snap::track(&ch, ctx.sim.cfg.latest_minor) {
                Ok(t) => t,
                Err(e) => return error(e),
            };
            if !track.strict && current.track.strict && !classic {
                return error(snap::needs_classic());
            }
            let id = new_change(
                &ctx,
                "refresh-snap",
                format!("Refresh \"microk8s\" snap from \"{}\" channel", ch.full()),
                Effect::Refresh {
                    channel: ch.full(),
                    track,
                },
                delay,
            );
            accepted(id)
        }
        "hold" => {
            let time = req["time"].as_str().unwrap_or("");
            let valid = time == "forever" || time.parse::<jiff::Timestamp>().is_ok();
            if !valid {
                return bad(format!(
                    "hold action requires a valid \"time\" (forever or RFC 3339), got {time:?}"
                ));
            }
            let level = req["hold-level"].as_str().unwrap_or("");
            if level != "auto-refresh" && level != "general" {
                return bad("hold action requires \"hold-level\" to be \"auto-refresh\" or \"general\"");
            }
            let mut st = lock(&ctx.node.st);
            match st.snap.as_mut() {
                Some(s) => {
                    s.hold = Some(time.to_string());
                    drop(st);
                    sync(Value::Null)
                }
                None => error(not_installed("microk8s")),
            }
        }
        "unhold" => {
            if let Some(s) = lock(&ctx.node.st).snap.as_mut() {
                s.hold = None;
            }
            sync(Value::Null)
        }
        "remove" => {
            if installed.is_none() {
                return error(not_installed("microk8s"));
            }
            accepted(new_change(
                &ctx,
                "remove-snap",
                "Remove \"microk8s\" snap".into(),
                Effect::Remove,
                Duration::ZERO,
            ))
        }
        other => bad(format!("unknown action {other:?}")),
    }
}

async fn get_conf(State(ctx): State<Ctx>, Path(name): Path<String>) -> Response {
    let prefix = format!("{name}.");
    let conf: serde_json::Map<String, Value> = lock(&ctx.node.st)
        .conf
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|k| (k.to_string(), json!(v))))
        .collect();
    sync(Value::Object(conf))
}

async fn set_conf(State(ctx): State<Ctx>, Path(name): Path<String>, body: Bytes) -> Response {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&body) else {
        return bad("cannot decode request body into patch values");
    };
    ctx.node.record(
        "snapd",
        &[
            "PUT".into(),
            format!("/v2/snaps/{name}/conf"),
            Value::Object(map.clone()).to_string(),
        ],
    );
    let known = name == "system" || name == "core" || (name == "microk8s" && lock(&ctx.node.st).snap.is_some());
    if !known {
        return error(not_installed(&name));
    }
    {
        let mut st = lock(&ctx.node.st);
        for (k, v) in &map {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            st.conf.insert(format!("{name}.{k}"), v);
        }
    }
    accepted(new_change(
        &ctx,
        "configure-snap",
        format!("Change configuration of \"{name}\" snap"),
        Effect::Nothing,
        Duration::ZERO,
    ))
}

async fn apps(State(ctx): State<Ctx>) -> Response {
    let installed = lock(&ctx.node.st).snap.is_some();
    let services: Vec<Value> = if installed {
        snap::SERVICES
            .iter()
            .map(|s| json!({"snap": "microk8s", "name": s, "daemon": "simple", "enabled": true, "active": true}))
            .collect()
    } else {
        vec![]
    };
    sync(json!(services))
}

async fn apps_action(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad("cannot decode request body into service operation");
    };
    ctx.node
        .record("snapd", &["POST".into(), "/v2/apps".into(), req.to_string()]);
    let act = req["action"].as_str().unwrap_or("");
    if !matches!(act, "restart" | "start" | "stop") {
        return bad(format!("unknown action {act:?}"));
    }
    let installed = lock(&ctx.node.st).snap.is_some();
    let mut services = Vec::new();
    for n in req["names"].as_array().cloned().unwrap_or_default() {
        let n = n.as_str().unwrap_or("");
        match n.split_once('.') {
            Some(("microk8s", svc)) if installed && snap::SERVICES.contains(&svc) => services.push(svc.to_string()),
            None if n == "microk8s" && installed => services.extend(snap::SERVICES.iter().map(|s| s.to_string())),
            _ => {
                return error(SnapError {
                    status: 404,
                    kind: "app-not-found",
                    message: format!(
                        "snap \"{}\" has no service \"{}\"",
                        n.split('.').next().unwrap_or(n),
                        n.split_once('.').map_or(n, |(_, s)| s)
                    ),
                });
            }
        }
    }
    let effect = if act == "stop" {
        Effect::Nothing
    } else {
        Effect::Restart(services.clone())
    };
    accepted(new_change(
        &ctx,
        act,
        format!("{act} of {}", services.join(", ")),
        effect,
        Duration::ZERO,
    ))
}

async fn assertions(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    ctx.node
        .record("snapd", &["POST".into(), "/v2/assertions".into(), text.to_string()]);
    if text.lines().any(|l| l.starts_with("type: ")) {
        sync(Value::Null)
    } else {
        bad("cannot decode request body into assertions")
    }
}

async fn change(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    let c = id
        .parse::<u64>()
        .ok()
        .and_then(|id| lock(&ctx.node.st).changes.get(&id).cloned());
    match c {
        Some(c) => {
            let ready = c.status != "Doing";
            let mut result = json!({"id": c.id.to_string(), "kind": c.kind, "summary": c.summary, "status": c.status,
                                    "ready": ready, "spawn-time": c.spawn_time});
            if let Some(e) = c.err {
                result["err"] = json!(e);
            }
            sync(result)
        }
        None => error(SnapError {
            status: 404,
            kind: "",
            message: format!("cannot find change with id \"{id}\""),
        }),
    }
}

async fn system_info() -> Response {
    sync(json!({"series": "16", "version": "2.67.1+mk8s-sim", "os-release": {"id": "ubuntu", "version-id": "24.04"}}))
}
