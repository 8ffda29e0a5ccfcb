//! Which failure domain a new machine goes to, and which machine goes on scale-down.

use std::collections::BTreeMap;

use crate::model::{ControlPlane, MachineView};
use crate::upgrade;

/// The failure domain for a new machine: among control-plane-eligible domains, the one with
/// the fewest up-to-date machines, then the fewest machines, then by name. `None` when the
/// cluster has no failure domains.
pub fn failure_domain_for_new(cp: &ControlPlane) -> Option<String> {
    if cp.failure_domains.is_empty() {
        return None;
    }
    let mut counts: BTreeMap<&str, (usize, usize)> = cp.failure_domains.iter().map(|f| (f.as_str(), (0, 0))).collect();
    for m in cp.active() {
        if let Some(c) = m.failure_domain.as_deref().and_then(|f| counts.get_mut(f)) {
            c.1 += 1;
            if upgrade::up_to_date(cp, m) {
                c.0 += 1;
            }
        }
    }
    counts
        .into_iter()
        .min_by_key(|(name, c)| (c.0, c.1, *name))
        .map(|(name, _)| name.to_string())
}

/// The machine to remove on scale-down: machines carrying `cluster.x-k8s.io/delete-machine`
/// first, else out-of-date machines, else all; among those, unhealthy ones (node not Ready,
/// or a failed health check) if any — removing one costs nothing that works, while removing
/// another would wait for it to recover; among those, when the cluster has failure domains,
/// the ones in none of them (a domain removed from the Cluster, or none set), as KCP does;
/// else the ones in the failure domain holding the most machines; among those the oldest.
pub fn victim(cp: &ControlPlane) -> Option<&MachineView> {
    let active: Vec<&MachineView> = cp.active().collect();
    let annotated: Vec<&MachineView> = active.iter().copied().filter(|m| m.delete_annotation).collect();
    let outdated: Vec<&MachineView> = active.iter().copied().filter(|m| !upgrade::up_to_date(cp, m)).collect();
    let candidates = if !annotated.is_empty() {
        annotated
    } else if !outdated.is_empty() {
        outdated
    } else {
        active.clone()
    };
    let unhealthy: Vec<&MachineView> = candidates
        .iter()
        .copied()
        .filter(|m| !cp.node_ready(m) || m.health_check_failed)
        .collect();
    let candidates = if unhealthy.is_empty() { candidates } else { unhealthy };
    if !cp.failure_domains.is_empty()
        && let Some(stray) = candidates.iter().find(|m| {
            m.failure_domain
                .as_ref()
                .is_none_or(|f| !cp.failure_domains.contains(f))
        })
    {
        return Some(stray);
    }
    let mut per_domain: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    for m in &active {
        *per_domain.entry(m.failure_domain.as_deref()).or_default() += 1;
    }
    let crowded = candidates
        .iter()
        .map(|m| per_domain.get(&m.failure_domain.as_deref()).copied().unwrap_or(0))
        .max()?;
    // `cp.machines` is sorted oldest first, and so are the candidates.
    candidates
        .into_iter()
        .find(|m| per_domain.get(&m.failure_domain.as_deref()).copied().unwrap_or(0) == crowded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::*;

    fn in_fd(mut m: MachineView, fd: &str) -> MachineView {
        m.failure_domain = Some(fd.to_string());
        m
    }

    #[test]
    fn new_machines_balance_domains() {
        let mut cp = cp(
            3,
            "v1.33.0",
            vec![
                in_fd(healthy("a", 1, "v1.33.0"), "z1"),
                in_fd(healthy("b", 2, "v1.33.0"), "z2"),
            ],
        );
        assert_eq!(failure_domain_for_new(&cp), None);
        cp.failure_domains = vec!["z1".into(), "z2".into(), "z3".into()];
        assert_eq!(failure_domain_for_new(&cp).as_deref(), Some("z3"));
        cp.failure_domains = vec!["z1".into(), "z2".into()];
        assert_eq!(failure_domain_for_new(&cp).as_deref(), Some("z1"), "ties by name");
        // During a rollout, count up-to-date machines: z1's machine is outdated.
        cp.machines[0].version = Some("v1.32.0".into());
        assert_eq!(failure_domain_for_new(&cp).as_deref(), Some("z1"));
        cp.machines[0].version = Some("v1.33.0".into());
        cp.machines[1].version = Some("v1.32.0".into());
        assert_eq!(failure_domain_for_new(&cp).as_deref(), Some("z2"));
    }

    #[test]
    fn victim_order() {
        let base = vec![
            in_fd(healthy("a", 1, "v1.33.0"), "z1"),
            in_fd(healthy("b", 2, "v1.33.0"), "z2"),
            in_fd(healthy("c", 3, "v1.33.0"), "z2"),
            in_fd(healthy("d", 4, "v1.33.0"), "z1"),
            in_fd(healthy("e", 5, "v1.33.0"), "z2"),
        ];
        let cp0 = cp(3, "v1.33.0", base.clone());
        assert_eq!(victim(&cp0).unwrap().name, "b", "oldest in the most crowded domain");

        let mut with_outdated = base.clone();
        with_outdated[3].version = Some("v1.32.0".into());
        let cp1 = cp(3, "v1.33.0", with_outdated.clone());
        assert_eq!(victim(&cp1).unwrap().name, "d", "outdated before crowded");

        // An outdated machine whose node is down goes before healthy outdated ones (removing
        // a healthy one would wait for it), but after annotated ones.
        let mut broken = with_outdated.clone();
        broken[1].version = Some("v1.32.0".into());
        let mut cp_broken = cp(3, "v1.33.0", broken.clone());
        assert_eq!(victim(&cp_broken).unwrap().name, "b");
        cp_broken.nodes[3].ready = false;
        assert_eq!(victim(&cp_broken).unwrap().name, "d", "unhealthy first");
        broken[1].health_check_failed = true;
        let cp_checked = cp(3, "v1.33.0", broken);
        assert_eq!(victim(&cp_checked).unwrap().name, "b", "a failed health check counts");

        with_outdated[4].delete_annotation = true;
        let cp2 = cp(3, "v1.33.0", with_outdated);
        assert_eq!(victim(&cp2).unwrap().name, "e", "the annotation wins");

        // A machine in a failure domain the Cluster no longer lists (or in none) goes first.
        let mut listed = cp(3, "v1.33.0", base.clone());
        listed.failure_domains = vec!["z1".into(), "z2".into()];
        assert_eq!(victim(&listed).unwrap().name, "b", "all listed: the crowded domain");
        listed.failure_domains = vec!["z2".into()];
        assert_eq!(victim(&listed).unwrap().name, "a", "z1 was removed");
        listed.failure_domains = vec!["z1".into(), "z2".into()];
        listed.machines[3].failure_domain = None;
        assert_eq!(victim(&listed).unwrap().name, "d", "no failure domain");

        let no_fd = cp(
            1,
            "v1.33.0",
            vec![healthy("x", 9, "v1.33.0"), healthy("y", 3, "v1.33.0")],
        );
        assert_eq!(victim(&no_fd).unwrap().name, "y", "oldest");
    }
}
