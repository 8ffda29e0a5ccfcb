//! The simulated kubelet of a cluster: registers each node's Node (as MicroK8s' kubelite
//! does: no providerID, labels from `args/kubelet`, the version of the snap track) and runs
//! the pods bound to simulated nodes.
//!
//! A pod is run by executing its single container's `command` + `args` (with `$(VAR)`
//! references expanded from its `env`, including `secretKeyRef`/`configMapKeyRef`/
//! `fieldRef` values) directly, with `nsenter`, in the namespaces of the node it is bound to,
//! with an environment of the pod's variables only. `hostPath` volumes are the node's own
//! paths (the node's `/run/snapd.socket` is its stub snapd). The pod's status follows
//! (`Running`, then `Succeeded`/`Failed` with the container's exit code; the last lines of
//! its output are the termination message). A pod still running after the pod timeout is
//! killed and failed (`DeadlineExceeded`). Deleting a pod kills it and then removes the
//! object, as a kubelet confirms a deletion.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Node, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use crate::node::{self, NODE_PATH};
use crate::snap;
use crate::state::{ClusterRt, NodeRt, Sim, lock, now_rfc3339};

/// Registers (or refreshes) the Node of a node in its cluster's API server.
pub async fn register_node(sim: &Sim, n: &NodeRt, client: &kube::Client) -> Result<(), String> {
    let name = n.node_name();
    let version = n
        .kubelet_version(sim.cfg.kubelet_patch)
        .ok_or("MicroK8s is not installed")?;
    let args = std::fs::read_to_string(snap::snap_current(&n.root).join("args/kubelet")).unwrap_or_default();
    let mut labels: BTreeMap<String, String> = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), "amd64".to_string()),
    ]);
    labels.extend(snap::node_labels(&args));
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true"},
        },
        "spec": {},
    });
    let node: Node = serde_json::from_value(node).map_err(|e| e.to_string())?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(format!("registering Node {name}: {e}")),
    }
    set_node_status(sim, n, client).await?;
    lock(&n.st).registered = true;
    if let Some(c) = sim.cluster(&n.cluster) {
        lock(&c.st).known_nodes.insert(name.clone());
    }
    tracing::info!(node = %name, %version, "Node registered");
    Ok(())
}

/// Writes the Node's status: Ready, addresses, node info (kubelet version).
pub async fn set_node_status(sim: &Sim, n: &NodeRt, client: &kube::Client) -> Result<(), String> {
    let name = n.node_name();
    let version = n
        .kubelet_version(sim.cfg.kubelet_patch)
        .ok_or("MicroK8s is not installed")?;
    let now = now_rfc3339();
    let cond = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let status = json!({"status": {
        "addresses": [{"type": "InternalIP", "address": n.ip.to_string()}],
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status (simulated)"),
        ],
        "capacity": {"cpu": "2", "memory": "4014252Ki", "pods": "110", "ephemeral-storage": "20470Mi"},
        "allocatable": {"cpu": "2", "memory": "3911852Ki", "pods": "110", "ephemeral-storage": "19444Mi"},
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": n.key.to_string(), "systemUUID": n.uid, "bootID": n.uid,
            "kernelVersion": "6.8.0-mk8s-sim", "osImage": "Ubuntu 24.04 LTS (mk8s-sim)",
            "containerRuntimeVersion": "containerd://1.7.27", "kubeletVersion": version,
            "kubeProxyVersion": version, "operatingSystem": "linux", "architecture": "amd64",
        },
    }});
    Api::<Node>::all(client.clone())
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(|e| format!("updating the status of Node {name}: {e}"))?;
    Ok(())
}

/// The node of a deleted machine: as the node lifecycle controller would after the grace
/// period, Ready turns Unknown and the node is tainted unreachable.
pub async fn node_lost(client: &kube::Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = now_rfc3339();
    let status = json!({"status": {"conditions": [
        {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
         "message": "Kubelet stopped posting node status.", "lastHeartbeatTime": now, "lastTransitionTime": now}
    ]}});
    if let Err(e) = nodes
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&status))
        .await
    {
        tracing::debug!(node = name, "marking the Node unreachable: {e}");
        return;
    }
    let taints = json!({"spec": {"taints": [
        {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule", "timeAdded": now},
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": now},
    ]}});
    let _ = nodes.patch(name, &PatchParams::default(), &Patch::Merge(&taints)).await;
}

/// Pods currently run, by uid: the process group to kill.
type Running = Arc<Mutex<HashMap<String, Option<i32>>>>;

/// Watches the cluster's pods and runs those bound to its simulated nodes (until aborted).
pub async fn run(sim: Arc<Sim>, cluster: Arc<ClusterRt>, client: kube::Client) {
    let pods: Api<Pod> = Api::all(client.clone());
    let running: Running = Arc::default();
    let mut stream = watcher(pods, watcher::Config::default()).boxed();
    while let Some(event) = stream.next().await {
        let pod = match event {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
            Ok(watcher::Event::Delete(p)) => {
                if let Some(uid) = p.metadata.uid.as_ref()
                    && let Some(Some(pgid)) = lock(&running).remove(uid)
                {
                    node::kill(-pgid, libc::SIGKILL);
                }
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(cluster = %cluster.key, "pod watch: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        handle(&sim, &cluster, &client, &running, pod).await;
    }
}

async fn handle(sim: &Arc<Sim>, cluster: &ClusterRt, client: &kube::Client, running: &Running, pod: Pod) {
    let (Some(uid), Some(name), Some(ns)) = (
        pod.metadata.uid.clone(),
        pod.metadata.name.clone(),
        pod.metadata.namespace.clone(),
    ) else {
        return;
    };
    let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let Some(n) = sim
        .cluster_nodes(&cluster.key)
        .into_iter()
        .find(|n| n.node_name() == node_name && lock(&n.st).running && n.in_cluster())
    else {
        // A pod on a simulated node that is gone: as the pod garbage collector would,
        // finish its deletion.
        if pod.metadata.deletion_timestamp.is_some() && lock(&cluster.st).known_nodes.contains(&node_name) {
            let _ = api.delete(&name, &DeleteParams::default().grace_period(0)).await;
        }
        return;
    };
    if pod.metadata.deletion_timestamp.is_some() {
        if let Some(Some(pgid)) = lock(running).remove(&uid) {
            node::kill(-pgid, libc::SIGKILL);
        }
        let _ = api.delete(&name, &DeleteParams::default().grace_period(0)).await;
        return;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        return;
    }
    {
        let mut r = lock(running);
        if r.contains_key(&uid) {
            return;
        }
        r.insert(uid.clone(), None);
    }
    let sim = sim.clone();
    let running = running.clone();
    let client = client.clone();
    tokio::spawn(async move {
        run_pod(&sim, &n, &client, &running, &pod).await;
        lock(&running).remove(&uid);
    });
}

struct Exit {
    code: i32,
    reason: &'static str,
    output: String,
}

async fn run_pod(sim: &Sim, n: &NodeRt, client: &kube::Client, running: &Running, pod: &Pod) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let spec = pod.spec.clone().unwrap_or_default();
    let start = now_rfc3339();
    let containers = &spec.containers;
    let fail_now = |reason: &str, message: String| {
        let api = api.clone();
        let name = name.clone();
        let reason = reason.to_string();
        async move {
            let status = json!({"status": {"phase": "Failed", "reason": reason, "message": message}});
            let _ = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await;
        }
    };
    if containers.len() != 1 || spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
        fail_now(
            "Unsupported",
            "the simulated kubelet runs pods with exactly one container".into(),
        )
        .await;
        return;
    }
    let c = &containers[0];
    let deadline = tokio::time::Instant::now() + sim.cfg.pod_timeout;
    // The environment, waiting (like a kubelet) for referenced Secrets/ConfigMaps.
    let env = loop {
        match resolve_env(client, &ns, pod, n, c).await {
            Ok(env) => break env,
            Err(msg) => {
                let status = json!({"status": {"phase": "Pending", "containerStatuses": [{
                    "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "", "ready": false,
                    "restartCount": 0, "started": false,
                    "state": {"waiting": {"reason": "CreateContainerConfigError", "message": msg}}}]}});
                let _ = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
                if tokio::time::Instant::now() >= deadline {
                    fail_now("DeadlineExceeded", msg).await;
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut argv: Vec<String> = c.command.clone().unwrap_or_default();
    argv.extend(c.args.clone().unwrap_or_default());
    let argv: Vec<String> = argv.iter().map(|a| expand(a, &env)).collect();
    if argv.is_empty() {
        fail_now(
            "Unsupported",
            "the container has no command: the simulated kubelet has no images to take an entrypoint from".into(),
        )
        .await;
        return;
    }
    let mounts = match host_mounts(n, &spec, c) {
        Ok(m) => m,
        Err(e) => {
            fail_now("Unsupported", e).await;
            return;
        }
    };
    let image = c.image.clone().unwrap_or_default();
    let ip = n.ip.to_string();
    let running_status = json!({"status": {
        "phase": "Running", "hostIP": ip, "hostIPs": [{"ip": ip}], "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": start,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": start},
            {"type": "Initialized", "status": "True", "lastTransitionTime": start},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": start},
            {"type": "Ready", "status": "True", "lastTransitionTime": start},
        ],
        "containerStatuses": [{"name": c.name, "image": image, "imageID": "", "ready": true, "restartCount": 0,
                               "started": true, "state": {"running": {"startedAt": start}}}],
    }});
    if let Err(e) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&running_status))
        .await
    {
        tracing::debug!(pod = %name, "setting Running: {e}");
    }
    tracing::info!(pod = %format!("{ns}/{name}"), node = %n.node_name(), "running pod");
    let workdir = c.working_dir.clone().unwrap_or_else(|| "/".into());
    let log = n.dir.join(format!("pod-{ns}-{name}-{uid}.log"));
    let exit = exec(
        n,
        running,
        &uid,
        &workdir,
        &argv,
        &env,
        &mounts,
        &log,
        sim.cfg.pod_timeout,
    )
    .await;
    let end = now_rfc3339();
    let phase = if exit.code == 0 { "Succeeded" } else { "Failed" };
    let ready = if exit.code == 0 { "PodCompleted" } else { "PodFailed" };
    let status = json!({"status": {
        "phase": phase,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": start},
            {"type": "Initialized", "status": "True", "lastTransitionTime": start},
            {"type": "ContainersReady", "status": "False", "reason": ready, "lastTransitionTime": end},
            {"type": "Ready", "status": "False", "reason": ready, "lastTransitionTime": end},
        ],
        "containerStatuses": [{"name": c.name, "image": image, "imageID": "", "ready": false, "restartCount": 0,
            "started": false, "state": {"terminated": {
                "exitCode": exit.code, "reason": exit.reason, "startedAt": start, "finishedAt": end,
                "message": exit.output}}}],
    }});
    if let Err(e) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
    {
        tracing::debug!(pod = %name, "setting the final status: {e}");
    }
    tracing::info!(pod = %format!("{ns}/{name}"), exit = exit.code, "pod finished");
}

#[allow(clippy::too_many_arguments)]
async fn exec(
    n: &NodeRt,
    running: &Running,
    uid: &str,
    workdir: &str,
    argv: &[String],
    env: &[(String, String)],
    mounts: &[(String, String)],
    log: &std::path::Path,
    timeout: Duration,
) -> Exit {
    let Some(ns_pid) = lock(&n.st).ns_pid else {
        return Exit {
            code: 128,
            reason: "ContainerCannotRun",
            output: "the node is not running".into(),
        };
    };
    let (program, args): (String, Vec<String>) = if mounts.is_empty() {
        (argv[0].clone(), argv[1..].to_vec())
    } else {
        // A private mount namespace for the pod with its hostPath mounts, then exec.
        let mut script = String::from("set -e\n");
        for (i, _) in mounts.iter().enumerate() {
            script.push_str(&format!("mount --bind \"$MK8S_SRC_{i}\" \"$MK8S_DST_{i}\"\n"));
        }
        script.push_str("exec \"$@\"\n");
        let mut a = vec![
            "-m".to_string(),
            "--propagation".into(),
            "private".into(),
            "--".into(),
            "/bin/sh".into(),
            "-c".into(),
            script,
            "pod".into(),
        ];
        a.extend(argv.iter().cloned());
        ("unshare".to_string(), a)
    };
    let out = match std::fs::File::create(log) {
        Ok(f) => f,
        Err(e) => {
            return Exit {
                code: 128,
                reason: "ContainerCannotRun",
                output: format!("creating the pod log: {e}"),
            };
        }
    };
    let Ok(err) = out.try_clone() else {
        return Exit {
            code: 128,
            reason: "ContainerCannotRun",
            output: "cannot duplicate the log".into(),
        };
    };
    let mut cmd = node::ns_command(ns_pid, workdir, &program, &args);
    use std::os::unix::process::CommandExt as _;
    cmd.envs(env.iter().map(|(k, v)| (k.clone(), v.clone())))
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0);
    if !env.iter().any(|(k, _)| k == "PATH") {
        cmd.env("PATH", NODE_PATH);
    }
    cmd.env("HOSTNAME", n.node_name());
    for (i, (src, dst)) in mounts.iter().enumerate() {
        cmd.env(format!("MK8S_SRC_{i}"), src).env(format!("MK8S_DST_{i}"), dst);
    }
    let mut child = match mk8s_testenv::spawn_with_pdeathsig(cmd) {
        Ok(c) => c,
        Err(e) => {
            return Exit {
                code: 128,
                reason: "ContainerCannotRun",
                output: format!("starting the container: {e}"),
            };
        }
    };
    let pgid = child.id() as i32;
    if let Some(slot) = lock(running).get_mut(uid) {
        *slot = Some(pgid);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(10);
    let (code, reason) = loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                use std::os::unix::process::ExitStatusExt as _;
                let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(9));
                break (code, if code == 0 { "Completed" } else { "Error" });
            }
            Ok(None) => {}
            Err(_) => break (128, "Error"),
        }
        if !lock(running).contains_key(uid) {
            node::kill(-pgid, libc::SIGKILL);
            let _ = child.wait();
            break (137, "Error");
        }
        if tokio::time::Instant::now() >= deadline {
            node::kill(-pgid, libc::SIGKILL);
            let _ = child.wait();
            break (137, "DeadlineExceeded");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut output = lines[lines.len().saturating_sub(40)..].join("\n");
    if reason == "DeadlineExceeded" {
        output.push_str(&format!("\n(killed by the simulated kubelet after {timeout:?})"));
    }
    if output.len() > 4096 {
        let cut = output.len() - 4096;
        let cut = (cut..output.len()).find(|i| output.is_char_boundary(*i)).unwrap_or(0);
        output = output[cut..].to_string();
    }
    Exit { code, reason, output }
}

/// The hostPath mounts a container needs beyond the node's own view: `(source, target)`
/// inside the node. A mount of a node path onto the same path needs nothing.
fn host_mounts(
    n: &NodeRt,
    spec: &k8s_openapi::api::core::v1::PodSpec,
    c: &Container,
) -> Result<Vec<(String, String)>, String> {
    let volumes = spec.volumes.clone().unwrap_or_default();
    let mut out = Vec::new();
    for m in c.volume_mounts.clone().unwrap_or_default() {
        let Some(v) = volumes.iter().find(|v| v.name == m.name) else {
            return Err(format!("volume {} is not defined", m.name));
        };
        let Some(hp) = &v.host_path else {
            return Err(format!(
                "volume {}: the simulated kubelet only mounts hostPath volumes",
                m.name
            ));
        };
        let source = hp.path.clone();
        let private = NodeRt::is_private(&source);
        let host = n.host_path(&source);
        match hp.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" if private => {
                let _ = std::fs::create_dir_all(&host);
            }
            "FileOrCreate" if private => {
                if let Some(d) = host.parent() {
                    let _ = std::fs::create_dir_all(d);
                }
                let _ = std::fs::OpenOptions::new().create(true).append(true).open(&host);
            }
            "Socket" | "File" | "Directory" | "CharDevice" | "BlockDevice" if !host.exists() => {
                return Err(format!("hostPath {source} does not exist on node {}", n.node_name()));
            }
            _ => {}
        }
        if !private {
            return Err(format!(
                "hostPath {source}: only the node's private paths can be mounted ({})",
                crate::state::BOUND_DIRS.join(", ")
            ));
        }
        if source != m.mount_path {
            if !NodeRt::is_private(&m.mount_path) && !std::path::Path::new(&m.mount_path).exists() {
                return Err(format!(
                    "mountPath {} cannot be created on the simulated node",
                    m.mount_path
                ));
            }
            out.push((source, m.mount_path.clone()));
        }
    }
    Ok(out)
}

/// The container's environment, in order, values with `$(VAR)` expanded.
async fn resolve_env(
    client: &kube::Client,
    ns: &str,
    pod: &Pod,
    n: &NodeRt,
    c: &Container,
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = Vec::new();
    for e in c.env.clone().unwrap_or_default() {
        let value = if let Some(v) = &e.value {
            expand(v, &env)
        } else if let Some(from) = &e.value_from {
            if let Some(r) = &from.secret_key_ref {
                let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
                match secrets.get_opt(&r.name).await.map_err(|e| e.to_string())? {
                    Some(s) => match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                        None if r.optional == Some(true) => continue,
                        None => return Err(format!("couldn't find key {} in Secret {ns}/{}", r.key, r.name)),
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(format!("secret \"{}\" not found", r.name)),
                }
            } else if let Some(r) = &from.config_map_key_ref {
                let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
                match cms.get_opt(&r.name).await.map_err(|e| e.to_string())? {
                    Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => v.clone(),
                        None if r.optional == Some(true) => continue,
                        None => return Err(format!("couldn't find key {} in ConfigMap {ns}/{}", r.key, r.name)),
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(format!("configmap \"{}\" not found", r.name)),
                }
            } else if let Some(f) = &from.field_ref {
                match f.field_path.as_str() {
                    "metadata.name" => pod.metadata.name.clone().unwrap_or_default(),
                    "metadata.namespace" => ns.to_string(),
                    "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
                    "spec.nodeName" => n.node_name(),
                    "spec.serviceAccountName" => pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.service_account_name.clone())
                        .unwrap_or_default(),
                    "status.hostIP" | "status.podIP" => n.ip.to_string(),
                    other => return Err(format!("fieldRef {other} is not supported by the simulated kubelet")),
                }
            } else {
                return Err(format!("env {}: unsupported valueFrom", e.name));
            }
        } else {
            String::new()
        };
        env.retain(|(k, _)| k != &e.name);
        env.push((e.name.clone(), value));
    }
    Ok(env)
}

/// Kubernetes' `$(VAR)` expansion: defined variables are replaced, `$$` is a `$`, anything
/// else stays as written.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(inner) = tail.strip_prefix("$(")
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&tail[..end + 3]),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_kubernetes() {
        let env = vec![("A".to_string(), "x".to_string()), ("B".to_string(), "y z".to_string())];
        assert_eq!(expand("$(A)-$(B)", &env), "x-y z");
        assert_eq!(expand("$$(A) $(C) $ $A", &env), "$(A) $(C) $ $A");
        assert_eq!(expand("$(A", &env), "$(A");
    }
}
