//! Safety gates before each step, from observable facts only.
//!
//! - Before adding a machine: the cluster is initialised (beyond the first machine), the
//!   workload cluster is watched, and every existing control plane machine has its Node,
//!   Ready — one machine at a time, each waiting for the previous one.
//! - Before removing or refreshing a member: additionally, every *other* control plane Node is
//!   Ready, their Machines are not marked unhealthy, and the workload API server answers
//!   `/readyz`.

use crate::model::ControlPlane;

/// Result of a gate: `Err` explains the wait.
pub type Gate = Result<(), String>;

fn reachable(cp: &ControlPlane) -> Gate {
    match &cp.reachability {
        crate::model::Reachability::Reachable => Ok(()),
        crate::model::Reachability::NoKubeconfig => Err("waiting for the workload cluster's kubeconfig".into()),
        crate::model::Reachability::Connecting => Err("connecting to the workload cluster's API server".into()),
        crate::model::Reachability::Unreachable(e) => {
            Err(format!("the workload cluster's API server is unreachable: {e}"))
        }
    }
}

/// May a control plane machine be added?
pub fn can_add(cp: &ControlPlane) -> Gate {
    if cp.active_count() == 0 {
        return Ok(());
    }
    if !cp.initialized() {
        return Err("waiting for the first control plane node to accept joins".into());
    }
    reachable(cp)?;
    for m in cp.active() {
        if cp.node_of(m).is_none() {
            return Err(format!("waiting for machine {} to get its node", m.name));
        }
        if !cp.node_ready(m) {
            return Err(format!("waiting for machine {}'s node to be Ready", m.name));
        }
    }
    Ok(())
}

/// May `subject`'s member be removed or its node refreshed? `api_ready` is the workload
/// API server's `/readyz` (`None`: not checked yet).
pub fn can_disrupt(cp: &ControlPlane, subject: &str, api_ready: Option<bool>) -> Gate {
    reachable(cp)?;
    for m in cp.active().filter(|m| m.name != subject) {
        if !cp.node_ready(m) {
            return Err(format!("control plane machine {}'s node is not Ready", m.name));
        }
        if m.health_check_failed {
            return Err(format!("control plane machine {} is unhealthy", m.name));
        }
    }
    match api_ready {
        Some(true) => Ok(()),
        Some(false) => Err("the workload API server does not report /readyz ok".into()),
        None => Err("the workload API server's /readyz has not been checked".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Reachability;
    use crate::model::fixtures::*;

    #[test]
    fn adding_waits_for_every_node() {
        let mut cp = cp(
            3,
            "v1.33.0",
            vec![healthy("a", 1, "v1.33.0"), healthy("b", 2, "v1.33.0")],
        );
        assert_eq!(can_add(&cp), Ok(()));
        cp.nodes[1].ready = false;
        assert!(can_add(&cp).unwrap_err().contains("b's node"));
        cp.nodes.pop();
        cp.machines[1].node_ref = None;
        cp.machines[1].ips.clear();
        assert!(can_add(&cp).unwrap_err().contains("get its node"));
        cp.was_initialized = false;
        assert!(can_add(&cp).unwrap_err().contains("accept joins"));
        let empty = crate::model::fixtures::cp(3, "v1.33.0", vec![]);
        assert_eq!(can_add(&empty), Ok(()));
    }

    #[test]
    fn disrupting_needs_the_others_ready_and_readyz() {
        let mut cp = cp(
            3,
            "v1.33.0",
            vec![healthy("a", 1, "v1.33.0"), healthy("b", 2, "v1.33.0")],
        );
        assert_eq!(can_disrupt(&cp, "a", Some(true)), Ok(()));
        assert!(can_disrupt(&cp, "a", None).is_err());
        assert!(can_disrupt(&cp, "a", Some(false)).is_err());
        cp.nodes[0].ready = false;
        assert_eq!(
            can_disrupt(&cp, "a", Some(true)),
            Ok(()),
            "the subject's own node may be down"
        );
        assert!(can_disrupt(&cp, "b", Some(true)).is_err());
        cp.reachability = Reachability::Unreachable("timeout".into());
        assert!(can_disrupt(&cp, "a", Some(true)).unwrap_err().contains("unreachable"));
    }
}
