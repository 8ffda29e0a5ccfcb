//! Metrics of the control plane controller (in addition to the shared reconcile metrics):
//! machines by state, rollout and remediation progress, workload cluster reachability, node
//! actions.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use mk8s_runtime::Metrics;

/// Labels naming a control plane.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CpLabels {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Labels of machine counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MachineLabels {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `ready`, `not_ready`, `provisioning`, `deleting`, `outdated`, `upgrading`.
    pub state: String,
}

/// Labels of node actions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// `dqlite-remove` or `snap-refresh`.
    pub action: String,
    /// `started`, `succeeded`, `failed`.
    pub result: String,
}

/// The controller's metrics.
#[derive(Clone, Default)]
pub struct CpMetrics {
    /// Machines per control plane and state.
    pub machines: Family<MachineLabels, Gauge>,
    /// 1 when the workload cluster's Nodes are watched successfully.
    pub workload_reachable: Family<CpLabels, Gauge>,
    /// Desired replicas.
    pub desired_replicas: Family<CpLabels, Gauge>,
    /// Remediations started.
    pub remediations: Family<CpLabels, Counter>,
    /// 1 while a remediation is refused or deferred.
    pub remediation_blocked: Family<CpLabels, Gauge>,
    /// Node action pods by action and result.
    pub node_actions: Family<ActionLabels, Counter>,
}

/// Machine states reported.
pub const STATES: [&str; 6] = [
    "ready",
    "not_ready",
    "provisioning",
    "deleting",
    "outdated",
    "upgrading",
];

impl CpMetrics {
    /// Registers the metrics.
    pub fn register(metrics: &Metrics) -> Self {
        let m = CpMetrics::default();
        metrics.register(
            "controlplane_machines",
            "Control plane machines by state (a machine counts in every state that applies)",
            m.machines.clone(),
        );
        metrics.register(
            "controlplane_workload_reachable",
            "Whether the workload cluster's API server is reachable (1) or not (0)",
            m.workload_reachable.clone(),
        );
        metrics.register(
            "controlplane_desired_replicas",
            "spec.replicas of the control plane",
            m.desired_replicas.clone(),
        );
        metrics.register(
            "controlplane_remediations",
            "Remediations of unhealthy control plane machines started",
            m.remediations.clone(),
        );
        metrics.register(
            "controlplane_remediation_blocked",
            "Whether a needed remediation is refused or deferred (1)",
            m.remediation_blocked.clone(),
        );
        metrics.register(
            "controlplane_node_actions",
            "Node action pods (dqlite member removal, snap refresh) by result",
            m.node_actions.clone(),
        );
        m
    }

    /// Counts a node action.
    pub fn action(&self, action: &str, result: &str) {
        self.node_actions
            .get_or_create(&ActionLabels {
                action: action.into(),
                result: result.into(),
            })
            .inc();
    }

    /// Forgets a deleted control plane.
    pub fn forget(&self, namespace: &str, name: &str) {
        let cp = CpLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.workload_reachable.remove(&cp);
        self.desired_replicas.remove(&cp);
        self.remediation_blocked.remove(&cp);
        self.remediations.remove(&cp);
        for s in STATES {
            self.machines.remove(&MachineLabels {
                namespace: namespace.into(),
                name: name.into(),
                state: s.into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgetting_a_control_plane_drops_every_series_of_it() {
        let registry = Metrics::new();
        let m = CpMetrics::register(&registry);
        let cp = CpLabels {
            namespace: "ns".into(),
            name: "gone-cp".into(),
        };
        m.remediations.get_or_create(&cp).inc();
        m.remediation_blocked.get_or_create(&cp).set(1);
        m.workload_reachable.get_or_create(&cp).set(1);
        m.desired_replicas.get_or_create(&cp).set(3);
        m.machines
            .get_or_create(&MachineLabels {
                namespace: "ns".into(),
                name: "gone-cp".into(),
                state: "ready".into(),
            })
            .set(3);
        assert_eq!(registry.encode().matches("gone-cp").count(), 5);
        m.forget("ns", "gone-cp");
        assert!(!registry.encode().contains("gone-cp"), "{}", registry.encode());
    }
}
