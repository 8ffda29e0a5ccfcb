//! The reconcilers of `SimCluster` and `SimMachine` (infrastructure provider contract
//! v1beta2, v1beta1 fields too).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use mk8s_api::capi::ClusterExt as _;
use mk8s_api::conditions::{self as cond, Condition};
use mk8s_api::consts::{ANNOTATION_PAUSED, LABEL_CLUSTER_NAME};
use serde_json::json;

use crate::api::{
    self, ApiEndpoint, ApiServerStatus, DqliteStatus, Initialization, MachineAddress, NodeStatus, NodeSummary,
    STATUS_HISTORY_LIMIT, SimCluster, SimClusterStatus, SimMachine, SimMachineStatus, conditions,
};
use crate::state::{ClusterRt, Key, NodeRt, NodeState, Phase, Role, Sim, lock};
use crate::{cluster, node};

/// Reconciliation errors (retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Requeue after a failed reconcile.
pub fn error_policy<K>(_obj: Arc<K>, err: &Error, _sim: Arc<Sim>) -> Action {
    tracing::warn!("reconcile failed: {err}");
    Action::requeue(Duration::from_secs(2))
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

fn paused_by_annotation<K: Resource>(obj: &K) -> bool {
    obj.meta()
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_PAUSED))
}

/// clusterctl's annotation on the source copies it deletes after a `clusterctl move`.
pub const ANNOTATION_DELETE_FOR_MOVE: &str = "clusterctl.cluster.x-k8s.io/delete-for-move";

/// The source copy of an object `clusterctl move` carried to another management cluster is
/// being deleted: the simulated machines live on (with the copy in the target).
fn deleted_for_move<K: Resource>(obj: &K) -> bool {
    obj.meta().deletion_timestamp.is_some()
        && obj
            .meta()
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANNOTATION_DELETE_FOR_MOVE))
}

fn has_finalizer<K: Resource>(obj: &K, f: &str) -> bool {
    obj.meta().finalizers.as_ref().is_some_and(|l| l.iter().any(|x| x == f))
}

async fn set_finalizers<K>(api: &Api<K>, obj: &K, finalizers: Vec<String>) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.meta().resource_version}});
    let name = obj.meta().name.clone().unwrap_or_default();
    match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn add_finalizer<K>(api: &Api<K>, obj: &K, f: &str) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut list = obj.meta().finalizers.clone().unwrap_or_default();
    list.push(f.to_string());
    set_finalizers(api, obj, list).await
}

async fn remove_finalizer<K>(api: &Api<K>, obj: &K, f: &str) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let list: Vec<String> = obj
        .meta()
        .finalizers
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|x| x != f)
        .collect();
    set_finalizers(api, obj, list).await
}

/// The CAPI Cluster a SimCluster belongs to: its `cluster.x-k8s.io/cluster-name` label, else
/// its owner Cluster.
fn cluster_name_of(obj: &SimCluster) -> Option<String> {
    obj.labels().get(LABEL_CLUSTER_NAME).cloned().or_else(|| {
        obj.owner_references()
            .iter()
            .find(|o| o.kind == "Cluster" && o.api_version.starts_with("cluster.x-k8s.io/"))
            .map(|o| o.name.clone())
    })
}

async fn patch_cluster_status(api: &Api<SimCluster>, obj: &SimCluster, status: SimClusterStatus) -> Result<(), Error> {
    if obj.status.as_ref() == Some(&status) {
        return Ok(());
    }
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": status})),
    )
    .await?;
    Ok(())
}

/// Reconciles a SimCluster.
pub async fn reconcile_cluster(obj: Arc<SimCluster>, sim: Arc<Sim>) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<SimCluster> = Api::namespaced(sim.mgmt.clone(), &ns);
    let cluster_name = cluster_name_of(&obj);
    if deleted_for_move(&*obj) {
        if has_finalizer(&*obj, api::CLUSTER_FINALIZER) {
            remove_finalizer(&api, &*obj, api::CLUSTER_FINALIZER).await?;
        }
        return Ok(Action::await_change());
    }
    // Paused (clusterctl move pauses the Cluster first): nothing is done, deletion included.
    let capi = match &cluster_name {
        Some(n) => sim.capi_cluster(&ns, n).await?,
        None => None,
    };
    let paused = capi.as_ref().is_some_and(|c| c.paused()) || paused_by_annotation(&*obj);
    if obj.metadata.deletion_timestamp.is_some() {
        if paused {
            return Ok(Action::await_change());
        }
        if has_finalizer(&*obj, api::CLUSTER_FINALIZER) {
            let keys: Vec<Key> = lock(&sim.clusters)
                .iter()
                .filter(|(k, c)| {
                    k.namespace == ns
                        && (Some(&k.name) == cluster_name.as_ref() || lock(&c.sim_cluster).as_deref() == Some(&name))
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in keys {
                cluster::delete_cluster(&sim, &k).await;
            }
            remove_finalizer(&api, &*obj, api::CLUSTER_FINALIZER).await?;
        }
        return Ok(Action::await_change());
    }
    if !paused && !has_finalizer(&*obj, api::CLUSTER_FINALIZER) {
        add_finalizer(&api, &*obj, api::CLUSTER_FINALIZER).await?;
        return Ok(Action::await_change());
    }
    let mut status = obj.status.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
    let t = now();
    let Some(cluster_name) = cluster_name else {
        cond::set(
            &mut status.conditions,
            Condition::false_(
                conditions::READY,
                "WaitingForCluster",
                "waiting for a CAPI Cluster to own this SimCluster",
            ),
            generation,
            &t,
        );
        patch_cluster_status(&api, &obj, status).await?;
        return Ok(Action::await_change());
    };
    if paused {
        cond::set(
            &mut status.conditions,
            Condition::true_(
                conditions::PAUSED,
                "Paused",
                if paused_by_annotation(&*obj) {
                    "SimCluster has the cluster.x-k8s.io/paused annotation"
                } else {
                    "Cluster spec.paused is set to true"
                },
            ),
            generation,
            &t,
        );
        patch_cluster_status(&api, &obj, status).await?;
        return Ok(Action::await_change());
    }
    cond::set(
        &mut status.conditions,
        Condition::false_(conditions::PAUSED, "NotPaused", ""),
        generation,
        &t,
    );

    let key = Key::new(&ns, &cluster_name);
    let rt = {
        let mut clusters = lock(&sim.clusters);
        clusters
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(ClusterRt {
                    key: key.clone(),
                    sim_cluster: std::sync::Mutex::new(Some(name.clone())),
                    endpoint: std::sync::Mutex::new(None),
                    st: std::sync::Mutex::new(crate::state::ClusterState {
                        quorum: true,
                        api_phase: "NotStarted".into(),
                        ..Default::default()
                    }),
                    api: tokio::sync::Mutex::new(None),
                })
            })
            .clone()
    };
    *lock(&rt.sim_cluster) = Some(name.clone());

    // The endpoint.
    let spec_ep = obj.spec.control_plane_endpoint.clone().filter(|e| !e.host.is_empty());
    let current = *lock(&rt.endpoint);
    let endpoint = match (&spec_ep, current) {
        (Some(e), Some(c)) if e.host == c.ip().to_string() && e.port == i32::from(c.port()) => c,
        (Some(e), _) => {
            let Ok(ip) = e.host.parse::<std::net::Ipv4Addr>() else {
                cond::set(
                    &mut status.conditions,
                    Condition::false_(
                        conditions::READY,
                        "InvalidEndpoint",
                        format!(
                            "spec.controlPlaneEndpoint.host {:?} is not a loopback IPv4 address",
                            e.host
                        ),
                    ),
                    generation,
                    &t,
                );
                patch_cluster_status(&api, &obj, status).await?;
                return Ok(Action::await_change());
            };
            if !ip.is_loopback() {
                return Err(Error::Other(format!("{ip} is not a loopback address")));
            }
            lock(&sim.alloc).claim(ip);
            let port = if e.port > 0 {
                e.port
            } else {
                i32::from(sim.cfg.endpoint_port)
            };
            std::net::SocketAddrV4::new(ip, u16::try_from(port).unwrap_or(sim.cfg.endpoint_port))
        }
        (None, Some(c)) => c,
        (None, None) => {
            let ip = lock(&sim.alloc)
                .allocate()
                .ok_or_else(|| Error::Other("no free loopback address left".into()))?;
            std::net::SocketAddrV4::new(ip, sim.cfg.endpoint_port)
        }
    };
    *lock(&rt.endpoint) = Some(endpoint);
    let wanted = ApiEndpoint {
        host: endpoint.ip().to_string(),
        port: i32::from(endpoint.port()),
    };
    if spec_ep.as_ref() != Some(&wanted) {
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"controlPlaneEndpoint": wanted}})),
        )
        .await?;
    }

    // Status.
    status.initialization = Some(Initialization {
        provisioned: Some(true),
    });
    status.ready = true;
    status.observed_generation = generation;
    status.failure_domains = obj.spec.failure_domains.clone();
    cond::set(
        &mut status.conditions,
        Condition::true_(conditions::READY, "Provisioned", format!("endpoint {endpoint}")),
        generation,
        &t,
    );
    let st = lock(&rt.st).clone();
    let api_cond = match st.api_phase.as_str() {
        "Running" => Condition::true_(
            conditions::API_SERVER_AVAILABLE,
            "Running",
            st.api_url.clone().unwrap_or_default(),
        ),
        "Failed" => Condition::false_(
            conditions::API_SERVER_AVAILABLE,
            "Failed",
            st.api_message.clone().unwrap_or_default(),
        ),
        other => Condition::false_(
            conditions::API_SERVER_AVAILABLE,
            other,
            "the API server starts when the first node installs the cluster CA (microk8s refresh-certs)",
        ),
    };
    cond::set(&mut status.conditions, api_cond, generation, &t);
    let live = st.history.last().map_or(0, |e| e.live);
    let quorum_cond = if st.quorum {
        Condition::true_(
            conditions::DQLITE_QUORUM,
            "Quorum",
            format!("{live} of {} members live", st.members.len()),
        )
    } else {
        Condition::false_(
            conditions::DQLITE_QUORUM,
            "QuorumLost",
            format!("{live} of {} members live", st.members.len()),
        )
    };
    cond::set(&mut status.conditions, quorum_cond, generation, &t);
    status.api_server = Some(ApiServerStatus {
        phase: st.api_phase.clone(),
        url: st.api_url.clone(),
        started_by: st.started_by.clone(),
        ca_subject: st.ca_subject.clone(),
        message: st.api_message.clone(),
    });
    status.dqlite = Some(DqliteStatus {
        members: st.members.iter().map(|m| m.address.clone()).collect(),
        live_members: live,
        quorum: st.quorum,
        quorum_lost_count: st.quorum_lost_count as i32,
        history: st.history[st.history.len().saturating_sub(STATUS_HISTORY_LIMIT)..].to_vec(),
    });
    status.nodes = sim
        .cluster_nodes(&key)
        .iter()
        .map(|n| {
            let s = lock(&n.st);
            NodeSummary {
                name: n.node_name(),
                machine: n.key.name.clone(),
                address: n.ip.to_string(),
                role: s.role.as_str().into(),
                channel: s.snap.as_ref().map(|s| s.channel.clone()),
                running: s.running,
            }
        })
        .collect();
    status.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    patch_cluster_status(&api, &obj, status).await?;
    Ok(Action::await_change())
}

/// The name of the Machine owning a SimMachine.
fn owner_machine(obj: &SimMachine) -> Option<String> {
    obj.owner_references()
        .iter()
        .find(|o| o.kind == "Machine" && o.api_version.starts_with("cluster.x-k8s.io/"))
        .map(|o| o.name.clone())
}

async fn patch_machine_status(api: &Api<SimMachine>, obj: &SimMachine, status: SimMachineStatus) -> Result<(), Error> {
    if obj.status.as_ref() == Some(&status) {
        return Ok(());
    }
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": status})),
    )
    .await?;
    Ok(())
}

fn wait(status: &mut SimMachineStatus, generation: Option<i64>, reason: &str, message: impl Into<String>) {
    let t = now();
    let message = message.into();
    cond::set(
        &mut status.conditions,
        Condition::false_(conditions::READY, reason, message.clone()),
        generation,
        &t,
    );
    if status.initialization.is_none() {
        status.node = Some(NodeStatus {
            phase: Phase::Pending.as_str().into(),
            ..Default::default()
        });
    }
}

/// Reconciles a SimMachine.
pub async fn reconcile_machine(obj: Arc<SimMachine>, sim: Arc<Sim>) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let key = Key::new(&ns, &name);
    let api: Api<SimMachine> = Api::namespaced(sim.mgmt.clone(), &ns);
    if deleted_for_move(&*obj) {
        if has_finalizer(&*obj, api::MACHINE_FINALIZER) {
            remove_finalizer(&api, &*obj, api::MACHINE_FINALIZER).await?;
        }
        return Ok(Action::await_change());
    }
    if obj.metadata.deletion_timestamp.is_some() {
        // Paused (the Cluster, from its label, or the object): nothing is done.
        let paused = paused_by_annotation(&*obj)
            || match obj.labels().get(LABEL_CLUSTER_NAME) {
                Some(c) => sim.capi_cluster(&ns, c).await?.is_some_and(|c| c.paused()),
                None => false,
            };
        if !paused && has_finalizer(&*obj, api::MACHINE_FINALIZER) {
            cluster::stop_node(&sim, &key).await;
            remove_finalizer(&api, &*obj, api::MACHINE_FINALIZER).await?;
        }
        return Ok(Action::await_change());
    }
    if !has_finalizer(&*obj, api::MACHINE_FINALIZER) && !paused_by_annotation(&*obj) {
        add_finalizer(&api, &*obj, api::MACHINE_FINALIZER).await?;
        return Ok(Action::await_change());
    }
    let mut status = obj.status.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
    let t = now();
    let Some(machine_name) = owner_machine(&obj) else {
        wait(
            &mut status,
            generation,
            "WaitingForMachine",
            "waiting for a CAPI Machine to own this SimMachine",
        );
        patch_machine_status(&api, &obj, status).await?;
        return Ok(Action::await_change());
    };
    let Some(machine) = sim.capi_machine(&ns, &machine_name).await? else {
        wait(
            &mut status,
            generation,
            "WaitingForMachine",
            format!("Machine {machine_name} not found"),
        );
        patch_machine_status(&api, &obj, status).await?;
        return Ok(Action::requeue(Duration::from_secs(5)));
    };
    let cluster_name = Some(machine.spec.cluster_name.clone())
        .filter(|c| !c.is_empty())
        .or_else(|| obj.labels().get(LABEL_CLUSTER_NAME).cloned())
        .unwrap_or_default();
    let capi = sim.capi_cluster(&ns, &cluster_name).await?;
    if capi.as_ref().is_some_and(|c| c.paused()) || paused_by_annotation(&*obj) {
        cond::set(
            &mut status.conditions,
            Condition::true_(conditions::PAUSED, "Paused", "reconciliation is paused"),
            generation,
            &t,
        );
        patch_machine_status(&api, &obj, status).await?;
        return Ok(Action::await_change());
    }
    cond::set(
        &mut status.conditions,
        Condition::false_(conditions::PAUSED, "NotPaused", ""),
        generation,
        &t,
    );
    let Some(capi) = capi else {
        wait(
            &mut status,
            generation,
            "WaitingForCluster",
            format!("Cluster {cluster_name} not found"),
        );
        patch_machine_status(&api, &obj, status).await?;
        return Ok(Action::requeue(Duration::from_secs(5)));
    };
    let cluster_key = Key::new(&ns, &cluster_name);
    let rt_ready = sim.cluster(&cluster_key).is_some_and(|c| lock(&c.endpoint).is_some());
    if !capi.infrastructure_ready() || !rt_ready {
        wait(
            &mut status,
            generation,
            "WaitingForClusterInfrastructure",
            format!("waiting for the infrastructure of Cluster {cluster_name}"),
        );
        patch_machine_status(&api, &obj, status).await?;
        return Ok(Action::await_change());
    }
    let uid = obj.uid().unwrap_or_default();
    if let Some(old) = sim.node(&key) {
        let (plane, owner) = lock(&old.owner).clone();
        if owner != uid {
            if plane != sim.plane && obj.spec.provider_id.as_deref() == Some(old.provider_id().as_str()) {
                // `clusterctl move` carried this SimMachine (its spec names the running
                // machine) from another management cluster this simulator serves: adopt
                // the running machine instead of booting a new one.
                *lock(&old.owner) = (sim.plane, uid.clone());
                tracing::info!(machine = %key, from = plane, to = sim.plane, "adopted a machine moved between management clusters");
            } else {
                cluster::stop_node(&sim, &key).await;
            }
        }
    }
    let node = match sim.node(&key) {
        Some(n) => n,
        None => {
            if status.initialization.as_ref().and_then(|i| i.provisioned) == Some(true) {
                cond::set(
                    &mut status.conditions,
                    Condition::false_(
                        conditions::READY,
                        "SimulatorRestarted",
                        "the machine was provisioned by an earlier run of the simulator; its processes are gone",
                    ),
                    generation,
                    &t,
                );
                if let Some(n) = status.node.as_mut() {
                    n.phase = Phase::Stopped.as_str().into();
                }
                patch_machine_status(&api, &obj, status).await?;
                return Ok(Action::await_change());
            }
            let Some(secret_name) = machine
                .spec
                .bootstrap
                .data_secret_name
                .clone()
                .filter(|s| !s.is_empty())
            else {
                wait(
                    &mut status,
                    generation,
                    "WaitingForBootstrapData",
                    "waiting for the Machine's bootstrap data secret",
                );
                patch_machine_status(&api, &obj, status).await?;
                return Ok(Action::await_change());
            };
            let secrets: Api<Secret> = Api::namespaced(sim.mgmt.clone(), &ns);
            let Some(secret) = secrets.get_opt(&secret_name).await? else {
                wait(
                    &mut status,
                    generation,
                    "WaitingForBootstrapData",
                    format!("Secret {secret_name} not found"),
                );
                patch_machine_status(&api, &obj, status).await?;
                return Ok(Action::requeue(Duration::from_secs(2)));
            };
            let Some(value) = secret
                .data
                .as_ref()
                .and_then(|d| d.get(mk8s_api::consts::KEY_BOOTSTRAP_VALUE))
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            else {
                wait(
                    &mut status,
                    generation,
                    "BootstrapDataInvalid",
                    format!("Secret {secret_name} has no key `value`"),
                );
                patch_machine_status(&api, &obj, status).await?;
                return Ok(Action::await_change());
            };
            start_node(
                &sim,
                &obj,
                &key,
                cluster_key,
                uid,
                machine.spec.failure_domain.clone(),
                value,
            )?
        }
    };
    let snapshot = lock(&node.st).clone();
    if snapshot.vm_up && obj.spec.provider_id.as_deref() != Some(node.provider_id().as_str()) {
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"providerID": node.provider_id()}})),
        )
        .await?;
    }
    machine_status(&mut status, &node, &snapshot, generation, &t);
    patch_machine_status(&api, &obj, status).await?;
    Ok(Action::await_change())
}

fn start_node(
    sim: &Arc<Sim>,
    obj: &SimMachine,
    key: &Key,
    cluster: Key,
    uid: String,
    failure_domain: Option<String>,
    user_data: String,
) -> Result<Arc<NodeRt>, Error> {
    let ip = lock(&sim.alloc)
        .allocate()
        .ok_or_else(|| Error::Other("no free loopback address left".into()))?;
    let mut hostname: String = key.name.clone();
    hostname.truncate(63);
    let hostname = hostname.trim_end_matches(['-', '.']).to_string();
    let dir = sim.cfg.state_dir.join("machines").join(&key.namespace).join(&key.name);
    let _ = std::fs::remove_dir_all(&dir);
    let secs = |v: Option<i32>, d: Duration| v.map_or(d, |s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
    let boot_delay = secs(obj.spec.boot_delay_seconds, sim.cfg.boot_delay);
    let node = Arc::new(NodeRt {
        key: key.clone(),
        owner: std::sync::Mutex::new((sim.plane, uid.clone())),
        uid,
        cluster,
        ip,
        hostname,
        root: dir.join("root"),
        dir,
        install_delay: secs(obj.spec.install_delay_seconds, sim.cfg.install_delay),
        failure_domain,
        st: std::sync::Mutex::new(NodeState {
            phase: Phase::Pending,
            vm_up: false,
            running: true,
            ns_pid: None,
            snap: None,
            role: Role::Standalone,
            tokens: Default::default(),
            agent_port: None,
            dqlite_port: mk8s_api::consts::DQLITE_PORT_DEFAULT,
            changes: Default::default(),
            calls: vec![],
            iptables: vec![],
            conf: Default::default(),
            addons: vec![],
            registered: false,
            failure: None,
            failed_step: None,
            exit_code: None,
        }),
        tasks: std::sync::Mutex::new(vec![]),
        agent: std::sync::Mutex::new(None),
        holder: std::sync::Mutex::new(None),
        sock_prefix: sim.sock_dir.join(
            sim.node_ids
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .to_string(),
        ),
    });
    std::fs::create_dir_all(&node.dir).map_err(|e| Error::Other(format!("{}: {e}", node.dir.display())))?;
    lock(&sim.nodes).insert(key.clone(), node.clone());
    tracing::info!(machine = %key, %ip, ?boot_delay, "booting machine");
    let task = tokio::spawn(node::boot(sim.clone(), node.clone(), user_data, boot_delay));
    lock(&node.tasks).push(task.abort_handle());
    Ok(node)
}

fn machine_status(status: &mut SimMachineStatus, node: &NodeRt, st: &NodeState, generation: Option<i64>, t: &Time) {
    status.observed_generation = generation;
    if st.vm_up {
        status.initialization = Some(Initialization {
            provisioned: Some(true),
        });
        status.ready = true;
        status.addresses = vec![
            MachineAddress {
                type_: "InternalIP".into(),
                address: node.ip.to_string(),
            },
            MachineAddress {
                type_: "Hostname".into(),
                address: node.hostname.clone(),
            },
        ];
        status.failure_domain = node.failure_domain.clone();
    }
    let ready = match (&st.failure, st.vm_up, st.phase) {
        (Some(f), _, _) => Condition::false_(conditions::READY, "BootstrapFailed", truncate(f, 10_000)),
        (None, _, Phase::Stopped) => Condition::false_(conditions::READY, "Stopped", "the machine is stopped"),
        (None, true, _) => Condition::true_(conditions::READY, "Provisioned", format!("running at {}", node.ip)),
        (None, false, Phase::Pending) => {
            Condition::false_(conditions::READY, "Provisioning", "waiting for the boot delay")
        }
        (None, false, _) => Condition::false_(conditions::READY, "Provisioning", "the machine is booting"),
    };
    cond::set(&mut status.conditions, ready, generation, t);
    let boot = match st.phase {
        Phase::Bootstrapped => Condition::true_(
            conditions::BOOTSTRAP_SUCCEEDED,
            "Succeeded",
            "runcmd wrote /run/cluster-api/bootstrap-success.complete",
        ),
        Phase::BootstrapFailed => Condition::false_(
            conditions::BOOTSTRAP_SUCCEEDED,
            "BootstrapFailed",
            truncate(st.failure.as_deref().unwrap_or("bootstrap failed"), 10_000),
        ),
        Phase::Stopped => Condition::false_(conditions::BOOTSTRAP_SUCCEEDED, "Stopped", ""),
        _ => Condition::unknown(
            conditions::BOOTSTRAP_SUCCEEDED,
            "Bootstrapping",
            "cloud-init is running",
        ),
    };
    cond::set(&mut status.conditions, boot, generation, t);
    status.node = Some(NodeStatus {
        phase: st.phase.as_str().into(),
        hostname: node.hostname.clone(),
        role: st.role.as_str().into(),
        channel: st.snap.as_ref().map(|s| s.channel.clone()),
        agent_port: st.agent_port.map(i32::from),
        dqlite_address: (st.role == Role::ControlPlane).then(|| format!("{}:{}", node.ip, st.dqlite_port)),
        failed_step: st.failed_step.clone(),
        log_path: Some(node.log_path().display().to_string()),
        root: Some(node.root.display().to_string()),
    });
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let cut = (s.len() - max..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(0);
    format!("…{}", &s[cut..])
}
