//! Safety gates before each step, from observable facts only.
//!
//! - Before adding a machine: the cluster is initialised (beyond the first machine), the
//!   workload cluster is watched, and every existing control plane machine has its Node,
//!   Ready — one machine at a time, each waiting for the previous one.
//! - Before removing a healthy member or refreshing a node: additionally, every *other*
//!   control plane Node is Ready, their Machines are not marked unhealthy, and the workload API
//!   server answers `/readyz`. A refresh also needs its own node Ready and healthy.
//! - Before removing a member that is down already (its node not Ready, or its Machine marked
//!   unhealthy): a Ready, healthy majority among the other members instead of all of them —
//!   so two failed machines of five can be removed one after the other — and `/readyz`.

use crate::model::{ControlPlane, MachineView};

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

/// May `subject`'s member be removed? `api_ready` is the workload API server's `/readyz`
/// (`None`: not checked yet).
pub fn can_disrupt(cp: &ControlPlane, subject: &str, api_ready: Option<bool>) -> Gate {
    reachable(cp)?;
    let down = cp
        .machine(subject)
        .is_none_or(|m| !cp.node_ready(m) || m.health_check_failed);
    let healthy = |m: &MachineView| cp.node_ready(m) && !m.health_check_failed;
    if down {
        // Its member serves nothing now: what counts is the majority that stays.
        let members: Vec<&MachineView> = cp
            .active()
            .filter(|m| m.name != subject && cp.node_of(m).is_some())
            .collect();
        let ok = members.iter().filter(|m| healthy(m)).count();
        if ok * 2 <= members.len() {
            return Err(format!(
                "only {ok} of the other {} control plane nodes are Ready and healthy, no majority",
                members.len()
            ));
        }
    } else {
        for m in cp.active().filter(|m| m.name != subject) {
            if !cp.node_ready(m) {
                return Err(format!("control plane machine {}'s node is not Ready", m.name));
            }
            if m.health_check_failed {
                return Err(format!("control plane machine {} is unhealthy", m.name));
            }
        }
    }
    readyz(api_ready)
}

/// May `subject`'s node be refreshed in place? Its own node must be Ready and healthy (a
/// refresh pod cannot run on a node that is down), and every other one too.
pub fn can_refresh(cp: &ControlPlane, subject: &str, api_ready: Option<bool>) -> Gate {
    reachable(cp)?;
    match cp.machine(subject) {
        Some(m) if m.health_check_failed => return Err(format!("machine {subject} is unhealthy")),
        Some(m) if cp.node_ready(m) => {}
        _ => return Err(format!("machine {subject}'s node is not Ready")),
    }
    can_disrupt(cp, subject, api_ready)
}

fn readyz(api_ready: Option<bool>) -> Gate {
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
        assert!(
            can_refresh(&cp, "a", Some(true)).unwrap_err().contains("a's node"),
            "a node that is down is not refreshed"
        );
        assert!(can_refresh(&cp, "b", Some(true)).unwrap_err().contains("a's node"));
        cp.reachability = Reachability::Unreachable("timeout".into());
        assert!(can_disrupt(&cp, "a", Some(true)).unwrap_err().contains("unreachable"));
    }

    #[test]
    fn a_member_that_is_down_goes_while_a_majority_of_the_others_is_up() {
        let mut cp = cp(
            3,
            "v1.33.0",
            ["a", "b", "c", "d", "e"]
                .iter()
                .zip(1..)
                .map(|(n, i)| healthy(n, i, "v1.33.0"))
                .collect(),
        );
        // Two of five down: each may go, the other one counted among the others.
        cp.nodes[3].ready = false;
        cp.machines[4].health_check_failed = true;
        assert_eq!(can_disrupt(&cp, "d", Some(true)), Ok(()));
        assert_eq!(can_disrupt(&cp, "e", Some(true)), Ok(()));
        assert!(can_disrupt(&cp, "d", None).is_err(), "still needs /readyz");
        // A healthy one may not while others are down.
        assert!(can_disrupt(&cp, "a", Some(true)).unwrap_err().contains("d's node"));
        assert!(can_refresh(&cp, "e", Some(true)).unwrap_err().contains("unhealthy"));
        // Three of five down: the two Ready ones of the other four are no majority.
        cp.nodes[2].ready = false;
        assert!(can_disrupt(&cp, "d", Some(true)).unwrap_err().contains("no majority"));
        // A machine without a node is no member.
        cp.nodes[2].ready = true;
        cp.nodes.remove(0);
        cp.machines[0].node_ref = None;
        cp.machines[0].ips.clear();
        cp.machines[0].provider_id = None;
        assert_eq!(can_disrupt(&cp, "d", Some(true)), Ok(()), "b, c of b, c, e");
    }
}
