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
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt as _, watcher};
use mk8s_api::capi::{Cluster, Machine, ObjRef};

use crate::state::{CapiStores, Sim, Triggers, lock};
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
    // CAPI Clusters and Machines: one reflector each, whose store the reconcilers read and
    // whose changes (after the store took them) trigger the SimClusters and SimMachines.
    let cluster_writer = reflector::store::Writer::<Cluster>::new(core.cluster());
    let machine_writer = reflector::store::Writer::<Machine>::new(core.machine());
    let _ = sim.capi.set(CapiStores {
        clusters: cluster_writer.as_reader(),
        machines: machine_writer.as_reader(),
    });
    let (cluster_tx, cluster_changes) = futures::channel::mpsc::unbounded::<ObjectRef<SimCluster>>();
    let (machine_tx, machine_changes) = futures::channel::mpsc::unbounded::<ObjectRef<SimMachine>>();
    let machine_ctrl = Controller::new(sim_machines, wc.clone()).with_config(ctrl_cfg.clone());
    let sim_machine_store = machine_ctrl.store();
    {
        let machine_tx = machine_tx.clone();
        tasks.push(feed(
            clusters,
            wc.clone(),
            cluster_writer,
            stopped(),
            move |c: &Cluster| {
                let ns = c.metadata.namespace.clone().unwrap_or_default();
                if let Some(r) = referenced(c.spec.infrastructure_ref.as_ref(), &ns) {
                    let _ = cluster_tx.unbounded_send(r);
                }
                let name = c.metadata.name.clone().unwrap_or_default();
                for m in sim_machine_store.state() {
                    if m.metadata.namespace.as_deref() == Some(ns.as_str())
                        && m.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(mk8s_api::consts::LABEL_CLUSTER_NAME))
                            == Some(&name)
                    {
                        let _ = machine_tx.unbounded_send(ObjectRef::from_obj(&*m));
                    }
                }
            },
        ));
    }
    tasks.push(feed(
        machines,
        wc.clone(),
        machine_writer,
        stopped(),
        move |m: &Machine| {
            let ns = m.metadata.namespace.clone().unwrap_or_default();
            if let Some(r) = referenced(m.spec.infrastructure_ref.as_ref(), &ns) {
                let _ = machine_tx.unbounded_send(r);
            }
        },
    ));
    let cluster_ctrl = Controller::new(sim_clusters, wc)
        .with_config(ctrl_cfg)
        .reconcile_on(cluster_changes)
        .reconcile_on(cluster_rx)
        .graceful_shutdown_on(stopped())
        .run(controller::reconcile_cluster, controller::error_policy, sim.clone())
        .for_each(|_| futures::future::ready(()));
    tasks.push(tokio::spawn(cluster_ctrl));
    let machine_ctrl = machine_ctrl
        .reconcile_on(machine_changes)
        .reconcile_on(machine_rx)
        .graceful_shutdown_on(stopped())
        .run(controller::reconcile_machine, controller::error_policy, sim.clone())
        .for_each(|_| futures::future::ready(()));
    tasks.push(tokio::spawn(machine_ctrl));
    tasks
}

/// The simulator object an infrastructure reference in namespace `ns` names, when it is of
/// the simulator's kind `K`.
fn referenced<K: kube::Resource<DynamicType = ()>>(r: Option<&ObjRef>, ns: &str) -> Option<ObjectRef<K>> {
    r.filter(|r| r.kind == K::kind(&()))
        .map(|r| ObjectRef::new(&r.name).within(ns))
}

/// Follows `api` into `writer` until `stop` resolves, calling `changed` with every object
/// added, changed or deleted after the store took the change.
fn feed<K>(
    api: Api<K>,
    wc: watcher::Config,
    mut writer: reflector::store::Writer<K>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    changed: impl Fn(&K) + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    tokio::spawn(async move {
        let mut events = watcher(api, wc).default_backoff().take_until(stop).boxed();
        while let Some(ev) = events.next().await {
            match ev {
                Ok(ev) => {
                    writer.apply_watcher_event(&ev);
                    if let watcher::Event::Apply(o) | watcher::Event::InitApply(o) | watcher::Event::Delete(o) = &ev {
                        changed(o);
                    }
                }
                Err(e) => tracing::warn!("watch failed: {e}; retrying"),
            }
        }
    })
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
            capi: Default::default(),
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
