//! What MicroK8s does at the cluster level: the first node installs the cluster CA (and the
//! cluster's API server starts), nodes join through a cluster agent, machines stop,
//! clusters go.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::json;

use crate::state::{ApiServerRt, ClusterRt, Key, NodeRt, Role, Sim, lock};
use crate::{kubelet, node, snap, tls};

/// Where `microk8s kubectl` finds its kubeconfig inside the node.
pub const NODE_KUBECONFIG: &str = "/run/mk8s-sim/kubeconfig";

/// The cluster runtime of a node.
pub fn of(sim: &Sim, node: &NodeRt) -> Result<Arc<ClusterRt>, String> {
    sim.cluster(&node.cluster)
        .ok_or_else(|| format!("the simulated cluster {} is gone", node.cluster))
}

/// `microk8s refresh-certs <dir>` on a node: installs the cluster CA. On the first node of
/// the cluster this starts the workload API server (serving with a certificate signed by
/// that CA, trusting it for clients) and makes the node the first dqlite member.
pub async fn install_ca(sim: &Arc<Sim>, node: &Arc<NodeRt>, cert: &str, key: &str) -> Result<String, String> {
    let info = tls::check_ca(cert, key)?;
    let cluster = of(sim, node)?;
    let endpoint = (*lock(&cluster.endpoint)).ok_or("the cluster has no endpoint yet")?;
    let mut api = cluster.api.lock().await;
    if let Some(running) = api.as_ref() {
        if running.ca_cert.trim() != cert.trim() {
            return Err(format!(
                "the cluster's API server already serves with another CA ({}); this node would form a second \
                 cluster",
                lock(&cluster.st).ca_subject.clone().unwrap_or_default()
            ));
        }
        let others: Vec<String> = lock(&cluster.st)
            .members
            .iter()
            .filter(|m| m.machine != node.key)
            .map(|m| m.node.clone())
            .collect();
        if !node.in_cluster() && !others.is_empty() {
            sim.membership_event(
                &cluster,
                "SecondInit",
                None,
                Some(&node.node_name()),
                format!(
                    "refresh-certs on a node outside the cluster already formed by {}",
                    others.join(", ")
                ),
            );
            return Err(format!(
                "this node is not part of the cluster that {} already formed: a second init would create a \
                 second cluster",
                others.join(", ")
            ));
        }
        return Ok(format!("the cluster CA ({}) is already installed", info.subject));
    }
    {
        let mut st = lock(&cluster.st);
        st.api_phase = "Starting".into();
        st.started_by = Some(node.node_name());
        st.ca_subject = Some(info.subject.clone());
        st.api_message = None;
    }
    sim.trigger_cluster(&cluster);
    tracing::info!(cluster = %cluster.key, node = %node.key, %endpoint, "starting the workload API server");
    let started = sim.backend.start(endpoint, cert, key).await;
    let server = match started {
        Ok(s) => s,
        Err(e) => {
            let mut st = lock(&cluster.st);
            st.api_phase = "Failed".into();
            st.api_message = Some(e.clone());
            drop(st);
            sim.trigger_cluster(&cluster);
            return Err(format!("the API server did not start: {e}"));
        }
    };
    let admin_kubeconfig = server.admin_kubeconfig()?;
    let client = mk8s_testenv::client_from_kubeconfig_yaml(&admin_kubeconfig)
        .await
        .map_err(|e| e.to_string())?;
    let kubelet = tokio::spawn(kubelet::run(sim.clone(), cluster.clone(), client)).abort_handle();
    {
        let mut st = lock(&cluster.st);
        st.api_phase = "Running".into();
        st.api_url = Some(server.url().to_string());
        st.api_pids = server.pids();
    }
    *api = Some(Arc::new(ApiServerRt {
        server,
        admin_kubeconfig,
        ca_cert: cert.to_string(),
        kubelet,
    }));
    drop(api);
    enter(sim, &cluster, node, Role::ControlPlane).await?;
    sim.add_member(&cluster, node, "Init");
    Ok(format!("the cluster CA ({}) is installed", info.subject))
}

/// The admin kubeconfig of a cluster's running API server.
pub async fn admin_kubeconfig(cluster: &ClusterRt) -> Option<String> {
    cluster.api.lock().await.as_ref().map(|a| a.admin_kubeconfig.clone())
}

/// A workload admin client of a cluster.
pub async fn client(cluster: &ClusterRt) -> Option<kube::Client> {
    let yaml = admin_kubeconfig(cluster).await?;
    mk8s_testenv::client_from_kubeconfig_yaml(&yaml).await.ok()
}

/// A node enters its cluster (creating it or joining): role, files, kubeconfig, Node.
async fn enter(sim: &Arc<Sim>, cluster: &Arc<ClusterRt>, node: &Arc<NodeRt>, role: Role) -> Result<(), String> {
    let kubeconfig = admin_kubeconfig(cluster)
        .await
        .ok_or("the cluster's API server is not running")?;
    let path = node.host_path(NODE_KUBECONFIG);
    crate::control::write_private(&path, &kubeconfig)?;
    let current = snap::snap_current(&node.root);
    let dqlite_port = lock(&node.st).dqlite_port;
    if role == Role::ControlPlane {
        let info = current.join("var/kubernetes/backend/info.yaml");
        let text = std::fs::read_to_string(&info).unwrap_or_default();
        let rest: String = text
            .lines()
            .filter(|l| !l.starts_with("Address:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let _ = std::fs::write(&info, format!("Address: {}:{dqlite_port}\n{rest}", node.ip));
    } else {
        let args = current.join("args/kubelet");
        if let Ok(text) = std::fs::read_to_string(&args) {
            let _ = std::fs::write(&args, snap::set_role_labels(&text, snap::WORKER_LABELS));
        }
        let servers: String = lock(&cluster.st)
            .members
            .iter()
            .map(|m| {
                let ip = m.address.rsplit_once(':').map_or(m.address.as_str(), |(h, _)| h);
                format!("        - address: \"{ip}:16443\"\n")
            })
            .collect();
        let _ = std::fs::write(
            current.join("args/traefik/provider.yaml"),
            format!(
                "tcp:\n  routers:\n    Router-1:\n      rule: \"HostSNI(`*`)\"\n      service: \"kube-apiserver\"\n      \
                 tls:\n        passthrough: true\n  services:\n    kube-apiserver:\n      loadBalancer:\n        \
                 servers:\n{servers}"
            ),
        );
    }
    lock(&node.st).role = role;
    sim.trigger_machine(&node.key);
    if let Some(client) = client(cluster).await {
        kubelet::register_node(sim, node, &client).await?;
    }
    Ok(())
}

/// What a cluster agent answers to a join.
pub struct JoinRefused {
    /// HTTP status.
    pub status: u16,
    /// Message.
    pub message: String,
}

fn refuse(status: u16, message: impl Into<String>) -> JoinRefused {
    JoinRefused {
        status,
        message: message.into(),
    }
}

/// A join through `target`'s cluster agent by `joiner` with `token`.
pub async fn join(
    sim: &Arc<Sim>,
    target: &Arc<NodeRt>,
    joiner: Option<Arc<NodeRt>>,
    token: &str,
    worker: bool,
) -> Result<serde_json::Value, JoinRefused> {
    let cluster = of(sim, target).map_err(|e| refuse(500, e))?;
    let joiner_name = joiner.as_ref().map(|j| j.node_name());
    let refused = |message: String| {
        sim.membership_event(&cluster, "JoinRefused", None, joiner_name.as_deref(), message);
    };
    let valid = {
        let mut st = lock(&target.st);
        let now = SystemTime::now();
        let expired = st.tokens.get(token).is_some_and(|exp| *exp <= now);
        st.tokens.retain(|_, exp| *exp > now);
        if expired {
            Err("Invalid token (expired)")
        } else if st.tokens.contains_key(token) {
            Ok(())
        } else {
            Err("Invalid token")
        }
    };
    if let Err(msg) = valid {
        refused(format!("{msg} at {}", target.node_name()));
        return Err(refuse(500, msg));
    }
    match lock(&target.st).role {
        Role::ControlPlane => {}
        Role::Worker => {
            return Err(refuse(
                500,
                format!("{} is a worker node and does not accept joins", target.node_name()),
            ));
        }
        Role::Standalone => {
            return Err(refuse(
                503,
                format!("{} has not created or joined a cluster yet", target.node_name()),
            ));
        }
    }
    let Some(joiner) = joiner else {
        return Err(refuse(403, "the joining address is not a simulated node"));
    };
    if joiner.cluster != target.cluster {
        let msg = format!(
            "{} belongs to simulated cluster {}, not {}",
            joiner.node_name(),
            joiner.cluster,
            target.cluster
        );
        refused(msg.clone());
        return Err(refuse(403, msg));
    }
    if joiner.in_cluster() {
        return Err(refuse(
            409,
            format!("{} is already part of the cluster", joiner.node_name()),
        ));
    }
    if lock(&joiner.st).snap.is_none() {
        return Err(refuse(400, "MicroK8s is not installed on the joining node"));
    }
    let taken = sim
        .cluster_nodes(&cluster.key)
        .iter()
        .any(|n| n.key != joiner.key && lock(&n.st).running && n.in_cluster() && n.node_name() == joiner.node_name());
    if taken {
        let msg = format!(
            "the host name {} is already used by a node of the cluster",
            joiner.node_name()
        );
        refused(msg.clone());
        return Err(refuse(409, msg));
    }
    let role = if worker { Role::Worker } else { Role::ControlPlane };
    enter(sim, &cluster, &joiner, role).await.map_err(|e| refuse(500, e))?;
    if worker {
        sim.membership_event(
            &cluster,
            "WorkerJoined",
            None,
            Some(&joiner.node_name()),
            format!("through {}", target.node_name()),
        );
    } else {
        sim.add_member(&cluster, &joiner, "Joined");
    }
    let voters: Vec<String> = lock(&cluster.st).members.iter().map(|m| m.address.clone()).collect();
    let ca = cluster
        .api
        .lock()
        .await
        .as_ref()
        .map(|a| a.ca_cert.clone())
        .unwrap_or_default();
    Ok(json!({
        "ca": ca,
        "voters": voters,
        "hostname_override": joiner.ip.to_string(),
        "api_port": "16443",
    }))
}

/// A machine goes away: its node stops (a member stays a member: only a dqlite removal
/// takes it out), its Node turns NotReady, its address and tree are released.
pub async fn stop_node(sim: &Arc<Sim>, key: &Key) {
    let Some(n) = lock(&sim.nodes).remove(key) else {
        return;
    };
    let was_running = lock(&n.st).running;
    node::stop(&n);
    if was_running && let Some(cluster) = sim.cluster(&n.cluster) {
        let member = lock(&cluster.st)
            .members
            .iter()
            .find(|m| m.machine == n.key)
            .map(|m| m.address.clone());
        if let Some(m) = member {
            sim.membership_event(
                &cluster,
                "MemberStopped",
                Some(&m),
                Some(&n.node_name()),
                "machine deleted".into(),
            );
        }
        if n.in_cluster()
            && let Some(client) = client(&cluster).await
        {
            kubelet::node_lost(&client, &n.node_name()).await;
        }
        sim.trigger_cluster(&cluster);
    }
    lock(&sim.alloc).release(n.ip);
    if !sim.cfg.keep_trees {
        let dir = n.dir.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    }
    tracing::info!(machine = %key, "machine stopped");
}

/// A cluster goes away: every node of it stops, then its API server (and its etcd).
pub async fn delete_cluster(sim: &Arc<Sim>, key: &Key) {
    let Some(cluster) = sim.cluster(key) else {
        return;
    };
    lock(&cluster.st).deleted = true;
    for n in sim.cluster_nodes(key) {
        stop_node(sim, &n.key).await;
        sim.trigger_machine(&n.key);
    }
    let api = cluster.api.lock().await.take();
    if let Some(api) = api {
        api.kubelet.abort();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        // Dropping the server kills its processes and waits for them.
        let _ = tokio::task::spawn_blocking(move || drop(api)).await;
    }
    {
        let mut st = lock(&cluster.st);
        st.api_phase = "Stopped".into();
        st.api_pids.clear();
    }
    if let Some(ep) = lock(&cluster.endpoint).take() {
        lock(&sim.alloc).release(*ep.ip());
    }
    lock(&sim.clusters).remove(key);
    tracing::info!(cluster = %key, "cluster deleted");
}
