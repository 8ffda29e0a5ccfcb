//! One simulator, several management clusters: [`SimHandle::serve`] starts another set of
//! controllers against a second management cluster, sharing the simulated world (clusters,
//! nodes, addresses, workload API servers) with the first.
//!
//! This is what `clusterctl move` needs: the simulated machines (node namespaces, the
//! workload kube-apiserver) keep running in this process while their objects move from one
//! management cluster to another. When a SimMachine (same namespace and name) appears in
//! another management cluster with `spec.providerID` naming a running machine, that
//! management cluster's controller **adopts** the machine (it records the new owner, see
//! [`crate::state::NodeRt::owner`]) and reports its status there; nothing is booted again,
//! no cloud-init runs twice. A SimCluster is keyed by (namespace, Cluster name), so the
//! moved copy finds its simulated cluster (endpoint, API server, dqlite members) as it is.
//!
//! On the source side, `clusterctl move` pauses the Cluster, then deletes each copy with the
//! annotation `clusterctl.cluster.x-k8s.io/delete-for-move`: the controllers do nothing for
//! paused objects and only drop their finalizer from copies deleted for a move, so no
//! machine is stopped. Changes of a node requeue its objects in every management cluster
//! served (a management cluster that does not hold them skips the requeue).

use std::sync::Arc;

use futures::StreamExt as _;
use kube::api::Api;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use mk8s_api::capi::{Cluster, Machine};

use crate::state::{Sim, Triggers, lock};
use crate::{Error, SimCluster, SimHandle, SimMachine, controller};

/// New requeue channels for one management cluster's controllers, registered with the
/// shared list; returns the receivers.
pub(crate) fn new_triggers(
    sim_triggers: &std::sync::Mutex<Vec<Triggers>>,
    plane: u64,
) -> (
    futures::channel::mpsc::UnboundedReceiver<ObjectRef<SimCluster>>,
    futures::channel::mpsc::UnboundedReceiver<ObjectRef<SimMachine>>,
) {
    let (clusters, cluster_rx) = futures::channel::mpsc::unbounded::<ObjectRef<SimCluster>>();
    let (machines, machine_rx) = futures::channel::mpsc::unbounded::<ObjectRef<SimMachine>>();
    lock(sim_triggers).push(Triggers {
        plane,
        clusters,
        machines,
    });
    (cluster_rx, machine_rx)
}

/// Starts the SimCluster and SimMachine controllers of `sim`'s management cluster; they
/// stop when `shutdown` turns true.
pub(crate) fn start_controllers(
    sim: &Arc<Sim>,
    cluster_rx: futures::channel::mpsc::UnboundedReceiver<ObjectRef<SimCluster>>,
    machine_rx: futures::channel::mpsc::UnboundedReceiver<ObjectRef<SimMachine>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let stopped = move || {
        let mut rx = shutdown.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let (client, core) = (sim.mgmt.clone(), sim.core);
    let wc = watcher::Config::default();
    let ctrl_cfg = ControllerConfig::default().concurrency(sim.cfg.concurrency);
    let (sim_clusters, sim_machines, clusters, machines) = match &sim.cfg.namespace {
        Some(ns) => (
            Api::<SimCluster>::namespaced(client.clone(), ns),
            Api::<SimMachine>::namespaced(client.clone(), ns),
            Api::<Cluster>::namespaced_with(client.clone(), ns, &core.cluster()),
            Api::<Machine>::namespaced_with(client.clone(), ns, &core.machine()),
        ),
        None => (
            Api::<SimCluster>::all(client.clone()),
            Api::<SimMachine>::all(client.clone()),
            Api::<Cluster>::all_with(client.clone(), &core.cluster()),
            Api::<Machine>::all_with(client.clone(), &core.machine()),
        ),
    };
    let mut tasks = Vec::new();
    let cluster_ctrl = Controller::new(sim_clusters, wc.clone())
        .with_config(ctrl_cfg.clone())
        .watches_with(clusters.clone(), core.cluster(), wc.clone(), |c: Cluster| {
            let ns = c.metadata.namespace.clone().unwrap_or_default();
            c.spec
                .infrastructure_ref
                .filter(|r| r.kind == "SimCluster")
                .map(|r| ObjectRef::new(&r.name).within(&ns))
        })
        .reconcile_on(cluster_rx)
        .graceful_shutdown_on(stopped())
        .run(controller::reconcile_cluster, controller::error_policy, sim.clone())
        .for_each(|_| futures::future::ready(()));
    tasks.push(tokio::spawn(cluster_ctrl));
    let machine_ctrl = Controller::new(sim_machines, wc.clone()).with_config(ctrl_cfg);
    let store = machine_ctrl.store();
    let machine_ctrl = machine_ctrl
        .watches_with(machines, core.machine(), wc.clone(), |m: Machine| {
            let ns = m.metadata.namespace.clone().unwrap_or_default();
            m.spec
                .infrastructure_ref
                .filter(|r| r.kind == "SimMachine")
                .map(|r| ObjectRef::new(&r.name).within(&ns))
        })
        .watches_with(clusters, core.cluster(), wc, move |c: Cluster| {
            let ns = c.metadata.namespace.clone().unwrap_or_default();
            let name = c.metadata.name.clone().unwrap_or_default();
            store
                .state()
                .into_iter()
                .filter(|m| {
                    m.metadata.namespace.as_deref() == Some(ns.as_str())
                        && m.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(mk8s_api::consts::LABEL_CLUSTER_NAME))
                            == Some(&name)
                })
                .map(|m| ObjectRef::from_obj(&*m))
                .collect::<Vec<_>>()
        })
        .reconcile_on(machine_rx)
        .graceful_shutdown_on(stopped())
        .run(controller::reconcile_machine, controller::error_policy, sim.clone())
        .for_each(|_| futures::future::ready(()));
    tasks.push(tokio::spawn(machine_ctrl));
    tasks
}

impl SimHandle {
    /// Serves one more management cluster (e.g. the target of `clusterctl move`) from this
    /// simulator: starts its controllers with `client`, sharing every simulated cluster and
    /// machine. Returns the management cluster's number (`Sim::plane`, the first is 0).
    /// The simulator's CRDs must be installed there. [`SimHandle::shutdown`] stops them too.
    pub async fn serve(&mut self, client: kube::Client) -> Result<u64, Error> {
        let core = crate::core_version(&client).await;
        let plane = lock(&self.sim.triggers).iter().map(|t| t.plane).max().unwrap_or(0) + 1;
        let s = &self.sim;
        let sim = Arc::new(Sim {
            cfg: s.cfg.clone(),
            stub_dir: s.stub_dir.clone(),
            kubectl: s.kubectl.clone(),
            mgmt: client,
            core,
            plane,
            alloc: s.alloc.clone(),
            clusters: s.clusters.clone(),
            nodes: s.nodes.clone(),
            backend: s.backend.clone(),
            tls_client: s.tls_client.clone(),
            triggers: s.triggers.clone(),
            change_ids: s.change_ids.clone(),
            node_ids: s.node_ids.clone(),
            sock_dir: s.sock_dir.clone(),
        });
        let (cluster_rx, machine_rx) = new_triggers(&sim.triggers, plane);
        let tasks = start_controllers(&sim, cluster_rx, machine_rx, self.shutdown.subscribe());
        self.tasks.extend(tasks);
        tracing::info!(
            plane,
            core = core.as_str(),
            "mk8s-sim serves another management cluster"
        );
        Ok(plane)
    }
}
