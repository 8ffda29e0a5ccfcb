//! The stub MicroK8s cluster agent of a node: HTTPS with a self-signed certificate, bound to
//! the node's own address on the port of `--bind` in its `args/cluster-agent` (re-read on
//! `snap restart microk8s.daemon-cluster-agent`).
//!
//! * `POST /cluster/api/v2.0/join` (also `/cluster/api/v1.0/join`), JSON
//!   `{"token": T, "hostname": H, "worker": bool}`: the joiner is the simulated node whose
//!   address the connection comes from (`microk8s join` binds to it). The token must have
//!   been registered on THIS node by `microk8s add-node` and not be expired (else 500
//!   `{"error": "Invalid token"}`); this node must run the control plane of a cluster (else
//!   500/503); the joiner must belong to the same simulated cluster (else 403). A control
//!   plane join makes the joiner a dqlite member (`<ip>:<its dqlite port>`); a worker join
//!   does not. 200 `{"ca", "voters", …}` on success.
//! * `POST /cluster/api/v2.0/dqlite/remove`, header `capi-auth-token`, JSON
//!   `{"remove_endpoint": "<ip>:<port>"}`: the header must equal this node's
//!   `/capi/etc/token` (else 401); this node must run dqlite (else 500); the endpoint must be
//!   a member (else 500, as MicroK8s' agent answers whatever made its dqlite shell fail). 200
//!   and the member is gone.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::cluster;
use crate::state::{NodeRt, Role, Sim, lock};

#[derive(Clone)]
struct Ctx {
    sim: Arc<Sim>,
    node: Arc<NodeRt>,
}

/// (Re)starts the agent of `node` on `port` (at its own address). Errors when the port is
/// taken.
pub async fn start(sim: &Arc<Sim>, node: &Arc<NodeRt>, port: u16) -> Result<(), String> {
    let old = lock(&node.agent).take();
    if let Some(old) = old {
        old.abort();
        // Let the aborted task drop its listener.
        tokio::task::yield_now().await;
    }
    lock(&node.st).agent_port = None;
    let addr = SocketAddr::from((node.ip, port));
    let mut listener = None;
    for _ in 0..50 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => return Err(format!("cluster agent: binding {addr}: {e}")),
        }
    }
    let listener = listener.ok_or_else(|| format!("cluster agent: {addr} is in use"))?;
    let tls = crate::tls::self_signed_server(&[node.ip.to_string(), node.node_name()])?;
    let router = Router::new()
        .route("/cluster/api/v2.0/join", post(join))
        .route("/cluster/api/v1.0/join", post(join))
        .route("/cluster/api/v2.0/dqlite/remove", post(remove))
        .with_state(Ctx {
            sim: sim.clone(),
            node: node.clone(),
        });
    let task = tokio::spawn(crate::httpx::serve_tls(listener, tls, router));
    *lock(&node.agent) = Some(task.abort_handle());
    lock(&node.st).agent_port = Some(port);
    tracing::debug!(node = %node.key, %addr, "cluster agent listening");
    Ok(())
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

#[derive(Deserialize)]
struct JoinRequest {
    #[serde(default)]
    token: String,
    #[serde(default)]
    worker: bool,
}

async fn join(
    State(ctx): State<Ctx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Option<Json<JoinRequest>>,
) -> Response {
    let Some(Json(req)) = body else {
        return error(StatusCode::BAD_REQUEST, "invalid join request");
    };
    let joiner = match peer.ip() {
        std::net::IpAddr::V4(ip) => ctx.sim.node_by_ip(ip),
        std::net::IpAddr::V6(_) => None,
    };
    match cluster::join(&ctx.sim, &ctx.node, joiner, &req.token, req.worker).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => error(
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            r.message,
        ),
    }
}

#[derive(Deserialize)]
struct RemoveRequest {
    remove_endpoint: String,
}

async fn remove(State(ctx): State<Ctx>, headers: HeaderMap, body: Option<Json<RemoveRequest>>) -> Response {
    let expected = std::fs::read_to_string(ctx.node.host_path(mk8s_cloudinit::paths::AUTH_TOKEN)).ok();
    let given = headers.get("capi-auth-token").and_then(|v| v.to_str().ok());
    match (expected.as_deref().map(str::trim), given) {
        (Some(e), Some(g)) if !e.is_empty() && e == g.trim() => {}
        _ => return error(StatusCode::UNAUTHORIZED, "Invalid token"),
    }
    let Some(Json(req)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid request: {\"remove_endpoint\": \"<ip>:<port>\"} expected",
        );
    };
    if lock(&ctx.node.st).role != Role::ControlPlane {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "this node does not run dqlite");
    }
    let Ok(cluster) = cluster::of(&ctx.sim, &ctx.node) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "the cluster is gone");
    };
    if ctx
        .sim
        .remove_member(&cluster, &req.remove_endpoint, &ctx.node.node_name())
    {
        Json(json!({"result": "ok"})).into_response()
    } else {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "failed to remove {} from dqlite: it is not a member of the cluster",
                req.remove_endpoint
            ),
        )
    }
}
