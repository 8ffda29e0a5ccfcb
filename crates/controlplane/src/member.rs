//! Removing a deleted control plane Machine's node from dqlite, from the Machine's
//! pre-terminate hook: CAPI drains the node, then waits for the hook; this provider asks the
//! MicroK8s cluster agent of a surviving control plane node to remove the member, checks the
//! result, and only then drops the hook so that CAPI deletes the machine.
//!
//! The state of the removal lives in an annotation on the Machine ([`RemovalState`]).

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use mk8s_api::consts::node_ports;
use serde::{Deserialize, Serialize};

use crate::model::{ControlPlane, MachineView};
use crate::upgrade::{ActionLimits, PodPhase};

/// State of a member removal, kept in [`crate::names::ANNOTATION_MEMBER_REMOVAL`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemovalState {
    /// The pod of the current attempt.
    pub pod: String,
    /// The surviving node it runs on.
    pub node: String,
    /// `<ip>:<dqlite port>` of the member being removed.
    pub endpoint: String,
    /// `<ip>:<cluster agent port>` of the survivor.
    pub agent: String,
    /// When the current attempt started.
    pub since: Timestamp,
    /// Failed attempts so far.
    #[serde(default)]
    pub failures: u32,
    /// The last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where to send the removal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemovalPlan {
    /// `<victim address>:<victim dqlite port>` (address by [`crate::model::node_ips`]) (IPv6 bracketed).
    pub endpoint: String,
    /// Node name of the survivor (the pod is bound to it).
    pub survivor_node: String,
    /// `<survivor address>:<survivor cluster agent port>` (IPv6 bracketed).
    pub agent: String,
}

/// `host:port`, bracketing IPv6 addresses.
pub fn host_port(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// What to do for a deleting Machine that carries our hook.
#[derive(Clone, Debug, PartialEq)]
pub enum HookNext {
    /// CAPI has not drained it yet, or the removal runs: wait.
    Wait(Option<Duration>, String),
    /// No member to remove (it never joined, or it is the last control plane machine): drop
    /// the hook.
    Release(String),
    /// Start (or retry) a removal with a new pod.
    Start(RemovalPlan),
    /// The pod named in the state is not there: create it.
    CreatePod,
    /// The removal succeeded: delete the pod, drop the hook.
    Done,
    /// The attempt failed: delete the pod; retry after a pause.
    Failed {
        /// Why.
        message: String,
    },
    /// The recorded removal is not one this provider would run now (see
    /// [`recorded_removal_problem`]): forget it and start over.
    Restart(String),
}

/// The dqlite ports of a machine, from its own MicroK8sConfig (absent: remapped, as the
/// bootstrap provider renders).
fn ports(m: &MachineView) -> (u16, u16) {
    node_ports(m.config.as_ref().is_none_or(|c| c.port_compatibility_remap()))
}

/// Picks the survivor that will run the removal: a control plane machine that is not being
/// deleted, whose node is Ready, with an address; the oldest such.
pub fn survivor<'a>(cp: &'a ControlPlane, victim: &str) -> Option<(&'a MachineView, String)> {
    cp.active()
        .filter(|m| m.name != victim && cp.node_ready(m))
        .find_map(|m| {
            let node = cp.node_of(m)?.name.clone();
            m.ips.first().map(|_| (m, node))
        })
}

/// The address a machine's member is known by: the Machine's first, else its Node's.
fn address<'a>(cp: &'a ControlPlane, m: &'a MachineView) -> Option<&'a str> {
    m.ips.first().or_else(|| cp.node_of(m)?.ips.first()).map(String::as_str)
}

/// Whether the victim may be a dqlite member: it has an address and either CAPI matched
/// its Node or a Node with its address exists.
fn may_be_member(cp: &ControlPlane, m: &MachineView) -> bool {
    address(cp, m).is_some() && (m.node_ref.is_some() || cp.node_of(m).is_some())
}

/// A machine with an address but no Node. `microk8s join` adds the dqlite member before the
/// kubelet registers the Node (which a broken kubelet never does), so it may hold a member —
/// releasing it unremoved could leave dqlite a dead voter — or may never have joined.
fn maybe_joined_without_node(cp: &ControlPlane, m: &MachineView) -> bool {
    !m.ips.is_empty() && m.node_ref.is_none() && cp.node_of(m).is_none()
}

/// Why a removal recorded on the Machine (its annotation, read back) is not one this provider
/// would run now, if it is not: its member is not the victim's, or its node and cluster agent
/// are no other control plane machine's. Anyone allowed to patch Machines can edit the
/// annotation — it must not choose which member is removed or where the agent token goes —
/// and a survivor can be gone since the attempt began; either way the removal starts over from
/// what is known now.
pub fn recorded_removal_problem(cp: &ControlPlane, m: &MachineView, st: &RemovalState) -> Option<String> {
    if let Some(why) = foreign_pod(st) {
        return Some(why);
    }
    let expected = address(cp, m).map(|ip| host_port(ip, ports(m).1));
    if expected.as_deref() != Some(st.endpoint.as_str()) {
        return Some(format!(
            "member {} is not machine {}'s ({})",
            st.endpoint,
            m.name,
            expected.as_deref().unwrap_or("no address")
        ));
    }
    let survivor = |s: &MachineView| {
        s.name != m.name
            && cp.node_of(s).is_some_and(|n| n.name == st.node)
            && s.ips.first().is_some_and(|ip| host_port(ip, ports(s).0) == st.agent)
    };
    if !cp.machines.iter().any(survivor) {
        return Some(format!(
            "node {} with cluster agent {} is no other control plane machine's",
            st.node, st.agent
        ));
    }
    None
}

/// Why the pod a recorded removal names is none this provider gives, if it is not.
fn foreign_pod(st: &RemovalState) -> Option<String> {
    let prefix = format!("mk8s-{}-", crate::names::ACTION_DQLITE_REMOVE);
    (!st.pod.starts_with(&prefix)).then(|| format!("pod name {:?} is not one this provider gives", st.pod))
}

/// Decides the next move of a deleting Machine's member removal.
pub fn hook_next(cp: &ControlPlane, m: &MachineView, pod: PodPhase, limits: ActionLimits) -> HookNext {
    // A removal whose pod succeeded is done, whatever changed since among the machines (its
    // survivor gone, say): starting it over would remove a member that is no more, and fail.
    let problem = m.removal.as_ref().and_then(|st| match pod {
        PodPhase::Succeeded => foreign_pod(st),
        _ => recorded_removal_problem(cp, m, st),
    });
    if let Some(why) = problem {
        return HookNext::Restart(why);
    }
    if let Some(st) = &m.removal {
        let age = crate::upgrade::elapsed(st.since, cp.now);
        return match pod {
            PodPhase::Succeeded => HookNext::Done,
            PodPhase::Failed => HookNext::Failed {
                message: format!(
                    "removing dqlite member {} through node {} failed (see the pod's log)",
                    st.endpoint, st.node
                ),
            },
            // A possible member without a Node gets one attempt (below).
            PodPhase::Missing if st.message.is_some() && maybe_joined_without_node(cp, m) => plan_removal(cp, m),
            PodPhase::Missing if st.message.is_some() => {
                // A failed attempt: retry with a new pod after a pause growing with failures.
                let pause = crate::upgrade::retry_pause(st.failures);
                if age < pause {
                    HookNext::Wait(
                        Some(pause - age),
                        format!(
                            "retrying the removal of dqlite member {} after {} failures: {}",
                            st.endpoint,
                            st.failures,
                            st.message.as_deref().unwrap_or_default()
                        ),
                    )
                } else {
                    plan_removal(cp, m)
                }
            }
            PodPhase::Missing => HookNext::CreatePod,
            PodPhase::Running if age >= limits.pod_timeout => HookNext::Failed {
                message: format!(
                    "removing dqlite member {} through node {} did not finish within {}s",
                    st.endpoint,
                    st.node,
                    limits.pod_timeout.as_secs()
                ),
            },
            PodPhase::Running => HookNext::Wait(
                Some(limits.pod_timeout.saturating_sub(age)),
                format!("removing dqlite member {} through node {}", st.endpoint, st.node),
            ),
        };
    }
    if !m.waiting_for_hook {
        return HookNext::Wait(None, format!("machine {} is being drained by Cluster API", m.name));
    }
    plan_removal(cp, m)
}

fn plan_removal(cp: &ControlPlane, m: &MachineView) -> HookNext {
    if maybe_joined_without_node(cp, m) {
        return plan_uncertain_removal(cp, m);
    }
    if !may_be_member(cp, m) {
        return HookNext::Release(format!(
            "machine {} never joined the cluster (no node, or no address): no dqlite member to remove",
            m.name
        ));
    }
    if let Some(why) = removal_loses_quorum(cp, m) {
        return HookNext::Wait(None, why);
    }
    let others = cp.machines.iter().any(|o| o.name != m.name && !o.deleting);
    match (survivor(cp, &m.name), address(cp, m)) {
        (Some((s, node)), Some(ip)) => HookNext::Start(removal_plan(m, ip, s, node)),
        (_, None) => HookNext::Release(format!("machine {} has no address: no dqlite member to remove", m.name)),
        (None, _) if !others => last_machine(m),
        (None, _) => HookNext::Wait(
            None,
            format!(
                "waiting for a Ready control plane node to remove machine {}'s dqlite member from",
                m.name
            ),
        ),
    }
}

fn removal_plan(m: &MachineView, victim_ip: &str, s: &MachineView, survivor_node: String) -> RemovalPlan {
    let (_, victim_dqlite) = ports(m);
    let (survivor_agent, _) = ports(s);
    RemovalPlan {
        endpoint: host_port(victim_ip, victim_dqlite),
        survivor_node,
        agent: host_port(&s.ips[0], survivor_agent),
    }
}

/// One attempt at removing the member a machine without a Node may hold. The cluster agent
/// answers a failure alike whether the address is no member or the removal failed, so a
/// failed attempt releases the machine (it most likely never joined) rather than hold its
/// deletion forever; the message says how to remove a member by hand. Removing a member that
/// is not Ready never costs the majority, so no quorum check holds it.
fn plan_uncertain_removal(cp: &ControlPlane, m: &MachineView) -> HookNext {
    let ip = &m.ips[0];
    if let Some(st) = m.removal.as_ref().filter(|s| s.failures > 0) {
        return HookNext::Release(format!(
            "machine {} has no Node and removing the dqlite member it may hold ({}) failed: {}. It most likely never joined; if it did, run `microk8s remove-node {ip} --force` on a control plane node",
            m.name,
            st.endpoint,
            st.message.as_deref().unwrap_or("unknown error")
        ));
    }
    match survivor(cp, &m.name) {
        Some((s, node)) => HookNext::Start(removal_plan(m, ip, s, node)),
        None => HookNext::Release(format!(
            "machine {} has no Node and no Ready control plane node can remove a dqlite member it may hold: released",
            m.name
        )),
    }
}

/// Why removing the victim's member now would cost dqlite its majority, if it would: the
/// members (every control plane machine that may be one, the victim and other deleting ones
/// included) have a majority of Ready nodes now and would not have one without the victim.
/// Our own scale-downs and rollouts check this before they delete a machine; this catches
/// deletions by anyone else and nodes failing while the victim is drained. The victim's node
/// keeps serving meanwhile (CAPI waits for the hook); a node becoming Ready again wakes the
/// control plane. When the majority is lost already, removing a member cannot make it worse
/// (nor succeed until it is back), so nothing is held.
fn removal_loses_quorum(cp: &ControlPlane, victim: &MachineView) -> Option<String> {
    let members: Vec<&MachineView> = cp.machines.iter().filter(|o| may_be_member(cp, o)).collect();
    let ready = members.iter().filter(|o| cp.node_ready(o)).count();
    let victim_ready = cp.node_ready(victim);
    let majority = |ready: usize, of: usize| ready * 2 > of;
    let (after, after_of) = (ready - usize::from(victim_ready), members.len().saturating_sub(1));
    // No member left afterwards: the last machine, released without a removal.
    (after_of > 0 && majority(ready, members.len()) && !majority(after, after_of)).then(|| {
        format!(
            "holding machine {}: removing its dqlite member now would leave {after} of {after_of} members Ready, no majority; waiting for another control plane node to be Ready",
            victim.name
        )
    })
}

fn last_machine(m: &MachineView) -> HookNext {
    HookNext::Release(format!(
        "machine {} is the last control plane machine: no dqlite member to remove",
        m.name
    ))
}

/// What can be decided for a deleting Machine waiting for the hook while the workload cluster
/// cannot be observed (unreachable, or its API server never came up): only that the last
/// control plane machine has no member to remove from anyone — so a control plane whose only
/// machine is deleted before it initializes gets a new one. `None`: wait for the workload
/// cluster (a removal is under way, or other members may need this one removed).
pub fn hook_next_unobserved(cp: &ControlPlane, m: &MachineView) -> Option<HookNext> {
    let others = cp.machines.iter().any(|o| o.name != m.name && !o.deleting);
    (m.waiting_for_hook && m.removal.is_none() && !others).then(|| last_machine(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::*;
    use mk8s_api::bootstrap::{ClusterConfiguration, MicroK8sConfigSpec};

    fn limits() -> ActionLimits {
        ActionLimits {
            pod_timeout: Duration::from_secs(100),
            kubelet_timeout: Duration::from_secs(100),
            attempts: 3,
        }
    }

    /// A deleting machine CAPI has drained (waiting for our hook).
    fn drained(name: &str, created: i64) -> MachineView {
        let mut m = healthy(name, created, "v1.33.0");
        m.deleting = true;
        m.waiting_for_hook = true;
        m
    }

    /// A removal of machine c's member (10.0.0.3) through node a's agent, begun 10 s ago.
    fn removal_of_c_through_a() -> RemovalState {
        RemovalState {
            pod: "mk8s-dqlite-remove-p".into(),
            node: "a".into(),
            endpoint: "10.0.0.3:2379".into(),
            agent: "10.0.0.1:30000".into(),
            since: Timestamp::from_second(100_000 - 10).unwrap(),
            failures: 0,
            message: None,
        }
    }

    fn no_remap() -> MicroK8sConfigSpec {
        MicroK8sConfigSpec {
            cluster_configuration: Some(ClusterConfiguration {
                port_compatibility_remap: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ports_come_from_each_machines_own_config() {
        let a = healthy("a", 1, "v1.33.0");
        let mut b = healthy("b", 2, "v1.33.0");
        b.config = Some(no_remap());
        let victim = drained("c", 3);
        let mut cp = cp(3, "v1.33.0", vec![a, b, victim.clone(), healthy("d", 4, "v1.33.0")]);
        assert_eq!(
            hook_next(&cp, &victim, PodPhase::Missing, limits()),
            HookNext::Start(RemovalPlan {
                endpoint: "10.0.0.3:2379".into(),
                survivor_node: "a".into(),
                agent: "10.0.0.1:30000".into()
            })
        );
        cp.nodes[0].ready = false;
        assert_eq!(
            hook_next(&cp, &victim, PodPhase::Missing, limits()),
            HookNext::Start(RemovalPlan {
                endpoint: "10.0.0.3:2379".into(),
                survivor_node: "b".into(),
                agent: "10.0.0.2:25000".into()
            })
        );
        let mut v2 = victim.clone();
        v2.config = Some(no_remap());
        v2.ips = vec!["fd00::3".into()];
        let HookNext::Start(p) = hook_next(&cp, &v2, PodPhase::Missing, limits()) else {
            panic!()
        };
        assert_eq!(p.endpoint, "[fd00::3]:19001");
    }

    #[test]
    fn waits_for_drain_then_releases_or_waits_for_a_survivor() {
        let mut victim = healthy("c", 3, "v1.33.0");
        victim.deleting = true;
        let mut cp = cp(1, "v1.33.0", vec![healthy("a", 1, "v1.33.0"), victim.clone()]);
        assert!(matches!(
            hook_next(&cp, &victim, PodPhase::Missing, limits()),
            HookNext::Wait(None, _)
        ));
        victim.waiting_for_hook = true;
        cp.nodes[0].ready = false;
        assert!(matches!(
            hook_next(&cp, &victim, PodPhase::Missing, limits()),
            HookNext::Wait(None, _)
        ));
        let last = cp.machines.iter().find(|m| m.name == "c").cloned().unwrap();
        let mut alone = crate::model::fixtures::cp(1, "v1.33.0", vec![last.clone()]);
        alone.machines[0].waiting_for_hook = true;
        assert!(matches!(
            hook_next(&alone, &alone.machines[0].clone(), PodPhase::Missing, limits()),
            HookNext::Release(_)
        ));
        let mut never = MachineView::new("n", 9);
        never.deleting = true;
        never.waiting_for_hook = true;
        assert!(matches!(
            hook_next(&cp, &never, PodPhase::Missing, limits()),
            HookNext::Release(_)
        ));
    }

    /// A machine with an address but no Node may have joined dqlite (join adds the member
    /// before the kubelet registers): one removal attempt, then released; a machine whose
    /// Machine lacks addresses is removed by its Node's.
    #[test]
    fn a_machine_without_a_node_gets_one_removal_attempt() {
        let mut victim = drained("c", 3);
        victim.node_ref = None;
        victim.provider_id = None;
        let mut cp = cp(1, "v1.33.0", vec![healthy("a", 1, "v1.33.0"), victim.clone()]);
        cp.nodes.retain(|n| n.name != "c");
        let HookNext::Start(p) = hook_next(&cp, &victim, PodPhase::Missing, limits()) else {
            panic!(
                "one attempt: {:?}",
                hook_next(&cp, &victim, PodPhase::Missing, limits())
            )
        };
        assert_eq!(p.endpoint, "10.0.0.3:2379");
        // The attempt failed: released at once, with the way to do it by hand.
        victim.removal = Some(RemovalState {
            pod: "mk8s-dqlite-remove-p2".into(),
            node: "a".into(),
            endpoint: p.endpoint.clone(),
            agent: p.agent.clone(),
            since: Timestamp::from_second(100_000 - 1).unwrap(),
            failures: 1,
            message: Some("HTTP 500".into()),
        });
        let HookNext::Release(why) = hook_next(&cp, &victim, PodPhase::Missing, limits()) else {
            panic!("released after the failed attempt")
        };
        assert!(
            why.contains("HTTP 500") && why.contains("microk8s remove-node 10.0.0.3 --force"),
            "{why}"
        );
        // No Ready survivor: released as before.
        victim.removal = None;
        cp.nodes[0].ready = false;
        assert!(matches!(
            hook_next(&cp, &victim, PodPhase::Missing, limits()),
            HookNext::Release(_)
        ));
        // A Node but no addresses on the Machine: the Node's address names the member.
        cp.nodes[0].ready = true;
        let mut bare = healthy("d", 4, "v1.33.0");
        bare.deleting = true;
        bare.waiting_for_hook = true;
        let mut cp2 = crate::model::fixtures::cp(1, "v1.33.0", vec![healthy("a", 1, "v1.33.0"), bare.clone()]);
        bare.ips.clear();
        cp2.machines[1].ips.clear();
        let HookNext::Start(p) = hook_next(&cp2, &bare, PodPhase::Missing, limits()) else {
            panic!("removed through the Node's address")
        };
        assert_eq!(p.endpoint, "10.0.0.4:2379");
    }

    /// A removal state edited on the Machine (or left by a survivor that is gone) never
    /// chooses the member removed or where the agent token goes: the removal starts over.
    #[test]
    fn a_recorded_removal_that_does_not_match_starts_over() {
        let mut victim = drained("c", 3);
        let cp = cp(1, "v1.33.0", vec![healthy("a", 1, "v1.33.0"), victim.clone()]);
        let good = removal_of_c_through_a();
        victim.removal = Some(good.clone());
        assert!(matches!(
            hook_next(&cp, &victim, PodPhase::Running, limits()),
            HookNext::Wait(..)
        ));
        type Edit = (&'static str, fn(&mut RemovalState));
        let edits: [Edit; 5] = [
            ("another member", |s| s.endpoint = "10.0.0.1:2379".into()),
            ("the agent elsewhere", |s| s.agent = "203.0.113.9:443".into()),
            ("another machine's agent", |s| s.agent = "10.0.0.3:30000".into()),
            ("an unknown node", |s| s.node = "x".into()),
            ("a foreign pod", |s| s.pod = "kube-proxy-abcde".into()),
        ];
        for (what, edit) in edits {
            let mut st = good.clone();
            edit(&mut st);
            victim.removal = Some(st);
            assert!(
                matches!(
                    hook_next(&cp, &victim, PodPhase::Missing, limits()),
                    HookNext::Restart(_)
                ),
                "{what}"
            );
        }
        // A removal whose pod succeeded is done even if its survivor has gone since.
        let mut st = good.clone();
        st.node = "gone".into();
        victim.removal = Some(st);
        assert_eq!(hook_next(&cp, &victim, PodPhase::Succeeded, limits()), HookNext::Done);
    }

    #[test]
    fn without_the_workload_cluster_only_the_last_machine_is_released() {
        let mut victim = healthy("c", 3, "v1.33.0");
        victim.deleting = true;
        let mut alone = cp(1, "v1.33.0", vec![victim.clone()]);
        assert_eq!(hook_next_unobserved(&alone, &victim), None, "not drained yet");
        victim.waiting_for_hook = true;
        alone.machines[0].waiting_for_hook = true;
        assert!(matches!(
            hook_next_unobserved(&alone, &victim),
            Some(HookNext::Release(why)) if why.contains("last control plane machine")
        ));
        // Another deleting machine is no survivor either.
        let mut other = healthy("d", 4, "v1.33.0");
        other.deleting = true;
        let both = cp(1, "v1.33.0", vec![victim.clone(), other]);
        assert!(hook_next_unobserved(&both, &victim).is_some());
        // A live machine may still hold this one as a member: wait for the workload cluster.
        let pair = cp(1, "v1.33.0", vec![healthy("a", 1, "v1.33.0"), victim.clone()]);
        assert_eq!(hook_next_unobserved(&pair, &victim), None);
        // A removal under way is followed through the workload cluster.
        victim.removal = Some(removal_of_c_through_a());
        assert_eq!(hook_next_unobserved(&alone, &victim), None);
    }

    #[test]
    fn a_removal_that_would_cost_the_majority_waits() {
        // Three members, one NotReady; a user deletes a healthy one.
        let mut victim = healthy("a", 1, "v1.33.0");
        victim.deleting = true;
        victim.waiting_for_hook = true;
        let mut cp = cp(
            3,
            "v1.33.0",
            vec![victim.clone(), healthy("b", 2, "v1.33.0"), healthy("c", 3, "v1.33.0")],
        );
        cp.nodes[1].ready = false;
        let HookNext::Wait(None, why) = hook_next(&cp, &victim, PodPhase::Missing, limits()) else {
            panic!("must hold the hook")
        };
        assert!(why.contains("1 of 2 members Ready"), "{why}");
        // b is back: the removal goes ahead.
        cp.nodes[1].ready = true;
        assert!(matches!(
            hook_next(&cp, &victim, PodPhase::Missing, limits()),
            HookNext::Start(_)
        ));
        // The victim itself is down: removing it only helps.
        cp.nodes[0].ready = false;
        assert!(matches!(
            hook_next(&cp, &victim, PodPhase::Missing, limits()),
            HookNext::Start(_)
        ));
        // The majority is gone already (two of three down): nothing to protect, go ahead.
        cp.nodes[0].ready = true;
        cp.nodes[1].ready = false;
        cp.nodes[2].ready = false;
        assert!(!matches!(
            hook_next(&cp, &victim, PodPhase::Missing, limits()),
            HookNext::Wait(None, ref w) if w.contains("majority")
        ));
        // Two members, both Ready, one deleted: one of one is a majority.
        let mut pair = cp.clone();
        pair.machines.truncate(2);
        pair.nodes.truncate(2);
        pair.nodes[1].ready = true;
        assert!(matches!(
            hook_next(&pair, &victim, PodPhase::Missing, limits()),
            HookNext::Start(_)
        ));
    }

    #[test]
    fn follows_the_pod() {
        let mut victim = drained("c", 3);
        let cp = cp(1, "v1.33.0", vec![healthy("a", 1, "v1.33.0"), victim.clone()]);
        victim.removal = Some(removal_of_c_through_a());
        assert_eq!(
            hook_next(&cp, &victim, PodPhase::Missing, limits()),
            HookNext::CreatePod
        );
        assert!(matches!(
            hook_next(&cp, &victim, PodPhase::Running, limits()),
            HookNext::Wait(Some(_), _)
        ));
        assert_eq!(hook_next(&cp, &victim, PodPhase::Succeeded, limits()), HookNext::Done);
        assert!(matches!(
            hook_next(&cp, &victim, PodPhase::Failed, limits()),
            HookNext::Failed { .. }
        ));
        let st = victim.removal.as_mut().unwrap();
        st.failures = 1;
        st.message = Some("boom".into());
        assert!(matches!(
            hook_next(&cp, &victim, PodPhase::Missing, limits()),
            HookNext::Wait(Some(_), _)
        ));
        victim.removal.as_mut().unwrap().since = Timestamp::from_second(1).unwrap();
        assert!(matches!(
            hook_next(&cp, &victim, PodPhase::Missing, limits()),
            HookNext::Start(_)
        ));
    }
}
