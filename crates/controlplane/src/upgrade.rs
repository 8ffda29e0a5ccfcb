//! Out-of-date detection and the in-place upgrade state machine.
//!
//! A Machine is out of date when (KCP's approach, no hash):
//! - its Kubernetes track (major.minor) differs from the spec's;
//! - its MicroK8sConfig spec differs from `controlPlaneConfig` (both normalised: defaults
//!   applied, so a spec written with and without defaults compares equal);
//! - its infrastructure machine was cloned from another template;
//! - it was created before `spec.rollout.after`, once that time has passed.
//!
//! Machines this provider did not create (Canonical's, adopted) are judged on their track and
//! `rollout.after` only: taking over a running cluster replaces nothing.
//!
//! In-place upgrades refresh one node's snap at a time, one minor version at a time, through a
//! node action pod; the state lives in an annotation on the Machine ([`InPlaceState`]) so it
//! survives restarts and `clusterctl move`. A step is done when the node's kubelet reports the
//! target track; the pod's result is secondary (a snap refresh restarts the node's container
//! runtime, which can take the pod down with it).

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use mk8s_api::version::{KubeVersion, Track};
use serde::{Deserialize, Serialize};

use crate::model::{ControlPlane, MachineView};

/// Why a Machine is out of date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outdated {
    /// Its track differs from the spec's.
    Version {
        /// The machine's track (`None`: unknown version).
        from: Option<Track>,
        /// The spec's track.
        to: Track,
    },
    /// Its MicroK8sConfig differs from `controlPlaneConfig`.
    Config,
    /// Its infrastructure machine was cloned from another template.
    Template {
        /// The template it was cloned from.
        from: String,
    },
    /// Created before `spec.rollout.after`.
    RolloutAfter,
}

impl Outdated {
    /// A short explanation for conditions.
    pub fn describe(&self) -> String {
        match self {
            Outdated::Version { from: Some(f), to } => format!("Kubernetes {f} instead of {to}"),
            Outdated::Version { from: None, to } => format!("unknown Kubernetes version instead of {to}"),
            Outdated::Config => "its MicroK8sConfig differs from spec.controlPlaneConfig".into(),
            Outdated::Template { from } => format!("cloned from infrastructure template {from}"),
            Outdated::RolloutAfter => "created before spec.rollout.after".into(),
        }
    }
}

/// Why a Machine is out of date (empty: up to date).
pub fn outdated(cp: &ControlPlane, m: &MachineView) -> Vec<Outdated> {
    let mut out = vec![];
    let to = cp.desired.track();
    match m.track() {
        Some(t) if t == to => {}
        from => out.push(Outdated::Version { from, to }),
    }
    if m.ours {
        if let Some(cfg) = &m.config
            && cfg.normalized() != cp.desired.config
        {
            out.push(Outdated::Config);
        }
        if let Some(cf) = &m.cloned_from
            && (cf.name != cp.desired.template.name || cf.group_kind != cp.desired.template.group_kind())
        {
            out.push(Outdated::Template { from: cf.name.clone() });
        }
    }
    if let Some(after) = cp.desired.rollout_after
        && cp.now >= after
        && m.created < after
    {
        out.push(Outdated::RolloutAfter);
    }
    out
}

/// Whether a Machine is up to date.
pub fn up_to_date(cp: &ControlPlane, m: &MachineView) -> bool {
    outdated(cp, m).is_empty()
}

/// Whether only the version is out of date (what an in-place upgrade can fix).
pub fn only_version(reasons: &[Outdated]) -> bool {
    !reasons.is_empty() && reasons.iter().all(|r| matches!(r, Outdated::Version { .. }))
}

/// What is wrong with a version change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionProblem {
    /// A machine runs a newer track than the spec.
    Downgrade {
        /// The newest track running.
        running: Track,
        /// The spec's track.
        spec: Track,
    },
    /// The spec is more than one minor ahead of the oldest machine (rolling upgrades only).
    Skip {
        /// The oldest track running.
        running: Track,
        /// The spec's track.
        spec: Track,
    },
}

impl VersionProblem {
    /// Condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            VersionProblem::Downgrade { .. } => "DowngradeNotSupported",
            VersionProblem::Skip { .. } => "MinorVersionSkipNotSupported",
        }
    }

    /// Condition message: what is wrong and what to do.
    pub fn message(&self) -> String {
        match self {
            VersionProblem::Downgrade { running, spec } => format!(
                "spec.version asks for Kubernetes {spec} but control plane machines run {running}: MicroK8s cannot be downgraded (dqlite's data may not be readable by an older release); set spec.version back to {running}.x or newer"
            ),
            VersionProblem::Skip { running, spec } => format!(
                "spec.version skips minor versions ({running} to {spec}): a rolling upgrade adds a node of {spec} to a cluster of {running}, more skew than Kubernetes supports; upgrade one minor version at a time (next: {}.{}), or use upgradeStrategy InPlaceUpgrade, which steps through each minor version",
                running.major,
                running.minor + 1
            ),
        }
    }
}

/// Checks the spec's version against the running machines: downgrades are refused for every
/// strategy; skipping minor versions only for rolling upgrades (in-place upgrades step).
pub fn version_problem(cp: &ControlPlane, rolling: bool) -> Option<VersionProblem> {
    let spec = cp.desired.track();
    let tracks: Vec<Track> = cp.active().filter_map(MachineView::track).collect();
    let newest = tracks.iter().max().copied()?;
    if newest > spec {
        return Some(VersionProblem::Downgrade { running: newest, spec });
    }
    let oldest = tracks.iter().min().copied()?;
    if rolling && oldest < spec && (oldest.major != spec.major || spec.minor > oldest.minor + 1) {
        return Some(VersionProblem::Skip { running: oldest, spec });
    }
    None
}

/// The track the next in-place step goes to: one minor above the oldest machine, at most the
/// spec's track.
pub fn next_step(cp: &ControlPlane) -> Option<Track> {
    let spec = cp.desired.track();
    let oldest = cp.active().filter_map(MachineView::track).min()?;
    if oldest >= spec {
        return None;
    }
    if oldest.major == spec.major {
        Some(Track {
            major: oldest.major,
            minor: (oldest.minor + 1).min(spec.minor),
        })
    } else {
        Some(spec)
    }
}

/// The `spec.version` of a control plane machine created now: the spec's, except while an
/// in-place upgrade steps through minors — then its current step's (an existing machine's
/// version at that track, else `.0`), so that a new machine (a scale-up, a remediation's
/// replacement) never joins more than one minor above the oldest member; the in-place upgrade
/// then takes it along with the others.
pub fn creation_version(cp: &ControlPlane, rolling: bool) -> String {
    let spec = cp.desired.track();
    match next_step(cp) {
        Some(step) if !rolling && step < spec => cp
            .active()
            .filter(|m| m.track() == Some(step))
            .filter_map(|m| m.version.clone())
            .max_by_key(|v| KubeVersion::parse(v).map(|k| k.patch).unwrap_or(0))
            .unwrap_or_else(|| format!("v{}.{}.0", step.major, step.minor)),
        _ => cp.desired.version_string.clone(),
    }
}

/// The machine to refresh next: the oldest machine below the step's track whose only
/// difference is the version.
pub fn next_in_place_machine(cp: &ControlPlane, step: Track) -> Option<&MachineView> {
    cp.active()
        .filter(|m| m.track().is_some_and(|t| t < step))
        .find(|m| only_version(&outdated(cp, m)))
}

/// Phase of an in-place upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InPlacePhase {
    /// The snap refresh pod runs.
    Refreshing,
    /// The refresh pod finished; waiting for the kubelet to report the new version.
    WaitingForKubelet,
    /// Failed too often; waits for the user (remove the annotation to retry).
    Failed,
}

/// State of a Machine's in-place upgrade, kept in [`crate::names::ANNOTATION_IN_PLACE`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InPlaceState {
    /// Target track, e.g. `1.33`.
    pub track: String,
    /// Snap channel, e.g. `1.33/stable`.
    pub channel: String,
    /// Refresh with `classic: true`.
    pub classic: bool,
    /// Phase.
    pub phase: InPlacePhase,
    /// The refresh pod of the current attempt.
    pub pod: String,
    /// Node the pod runs on.
    pub node: String,
    /// When the current phase started (RFC 3339).
    pub since: Timestamp,
    /// Failed attempts so far.
    #[serde(default)]
    pub failures: u32,
    /// The last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl InPlaceState {
    /// The target track.
    pub fn target(&self) -> Option<Track> {
        let (ma, mi) = self.track.split_once('.')?;
        Some(Track {
            major: ma.parse().ok()?,
            minor: mi.parse().ok()?,
        })
    }
}

/// Phase of a node action pod, as observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodPhase {
    /// Not (yet) seen.
    Missing,
    /// Pending or Running.
    Running,
    /// Succeeded.
    Succeeded,
    /// Failed.
    Failed,
}

/// What to do next for an in-place upgrade in progress.
#[derive(Clone, Debug, PartialEq)]
pub enum InPlaceNext {
    /// Nothing to do now; look again after this long (or on a watch event).
    Wait(Option<Duration>, String),
    /// (Re)create the refresh pod named in the state.
    CreatePod,
    /// The refresh pod succeeded: delete it, move to `WaitingForKubelet`.
    PodDone,
    /// The node runs the target: set the Machine's version, clear the state, delete the pod.
    Done {
        /// The Machine's new `spec.version`.
        version: String,
    },
    /// This attempt failed: delete the pod, and retry with a new pod (or give up).
    Failed {
        /// Why.
        message: String,
        /// Give up (too many failures).
        give_up: bool,
    },
    /// The recorded upgrade is not one this provider would run now (see
    /// [`recorded_in_place_problem`]): forget it; the plan decides again.
    Restart(String),
}

/// The snap channel a Machine's node is refreshed to for `track`: its own MicroK8sConfig's
/// confinement and risk level (the control plane's for a machine without one).
pub fn refresh_channel(
    cp: &ControlPlane,
    m: &MachineView,
    track: Track,
) -> Result<mk8s_cloudinit::Channel, mk8s_cloudinit::RenderError> {
    let init = m.config.clone().unwrap_or_else(|| cp.desired.config.clone()).init();
    mk8s_cloudinit::install_channel(&format!("v{}.{}.0", track.major, track.minor), &init)
}

/// Why an in-place upgrade recorded on the Machine (its annotation, read back) is not one
/// this provider would run now, if it is not: the node is not the machine's, the target is not
/// the next minor of what the node runs or lies beyond the spec, or the channel is not the one
/// for that target. Anyone allowed to patch Machines can edit the annotation — it must not
/// choose the node, the channel or a downgrade for a privileged snap refresh. `channel` gives
/// the channel for a track ([`refresh_channel`]). A failed upgrade waiting for its user is left
/// as it is.
pub fn recorded_in_place_problem(
    st: &InPlaceState,
    node: Option<&str>,
    running: Option<Track>,
    desired: Track,
    channel: impl Fn(Track) -> Option<mk8s_cloudinit::Channel>,
) -> Option<String> {
    if st.phase == InPlacePhase::Failed {
        return None;
    }
    let prefix = format!("mk8s-{}-", crate::names::ACTION_SNAP_REFRESH);
    if !st.pod.starts_with(&prefix) {
        return Some(format!("pod name {:?} is not one this provider gives", st.pod));
    }
    if node != Some(st.node.as_str()) {
        return Some(format!(
            "node {} is not the machine's ({})",
            st.node,
            node.unwrap_or("none")
        ));
    }
    let Some(target) = st.target() else {
        return Some(format!("target track {:?} is unreadable", st.track));
    };
    if target > desired {
        return Some(format!("target {target} is beyond the spec's {desired}"));
    }
    if let Some(r) = running
        && target > r
        && (target.major != r.major || target.minor != r.minor + 1)
    {
        return Some(format!("target {target} is not the next minor version after {r}"));
    }
    match channel(target) {
        Some(c) if c.channel == st.channel && c.classic == st.classic => None,
        Some(c) => Some(format!(
            "channel {} (classic {}) is not {target}'s ({}, classic {})",
            st.channel, st.classic, c.channel, c.classic
        )),
        None => Some(format!("no snap channel for {target}")),
    }
}

/// Limits of node actions.
#[derive(Clone, Copy, Debug)]
pub struct ActionLimits {
    /// A pod running longer has failed.
    pub pod_timeout: Duration,
    /// A node not reporting the new kubelet version this long after the pod has failed.
    pub kubelet_timeout: Duration,
    /// Attempts before giving up.
    pub attempts: u32,
}

/// The pause before the next attempt of a node action after `failures` failed ones: 15 s
/// per failure, at most 3 minutes. An attempt the workload cluster refuses fails at once, so
/// without it every attempt would be spent within a second.
pub fn retry_pause(failures: u32) -> Duration {
    Duration::from_secs(15 * u64::from(failures.clamp(1, 12)))
}

/// The time from `since` to `now` (zero if `now` is earlier), to the nanosecond: whole
/// seconds would cut a pause short by up to one second when `since` has a fraction.
pub(crate) fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO)
}

/// What the node of an upgrading Machine shows now.
#[derive(Clone, Copy, Debug)]
pub struct NodeNow<'a> {
    /// The track its kubelet reports.
    pub running: Option<Track>,
    /// Its kubelet's version.
    pub kubelet_version: Option<&'a str>,
    /// It is Ready.
    pub ready: bool,
}

/// Decides the next move of a Machine's in-place upgrade.
///
/// The Machine version set at the end is the spec's (`spec.1`) when the target is the spec's
/// track, else the kubelet's own. A timeout on a node that is not Ready ends the upgrade at
/// once: another pod bound to it would only wait out its own timeout, holding remediation and
/// every other step of the control plane meanwhile.
pub fn in_place_next(
    st: &InPlaceState,
    node: NodeNow<'_>,
    pod: PodPhase,
    spec: (Track, &str),
    now: Timestamp,
    limits: ActionLimits,
) -> InPlaceNext {
    let NodeNow {
        running,
        kubelet_version,
        ready: node_ready,
    } = node;
    let Some(target) = st.target() else {
        return InPlaceNext::Failed {
            message: format!("unreadable target track {:?}", st.track),
            give_up: true,
        };
    };
    if running.is_some_and(|r| r >= target) {
        let version = if target == spec.0 {
            spec.1.to_string()
        } else {
            kubelet_version
                .map(str::to_string)
                .unwrap_or_else(|| format!("v{}.{}.0", target.major, target.minor))
        };
        return InPlaceNext::Done { version };
    }
    let fail = |message: String| InPlaceNext::Failed {
        give_up: st.failures + 1 >= limits.attempts,
        message,
    };
    let timed_out = |message: String| {
        if node_ready {
            fail(message)
        } else {
            InPlaceNext::Failed {
                give_up: true,
                message: format!("{message}; node {} is not Ready, so no retry", st.node),
            }
        }
    };
    let age = elapsed(st.since, now);
    match st.phase {
        InPlacePhase::Failed => InPlaceNext::Wait(
            None,
            format!(
                "in-place upgrade failed {} times: {}",
                st.failures,
                st.message.as_deref().unwrap_or("unknown error")
            ),
        ),
        InPlacePhase::Refreshing => match pod {
            PodPhase::Missing if st.failures > 0 && age < retry_pause(st.failures) => InPlaceNext::Wait(
                Some(retry_pause(st.failures) - age),
                format!(
                    "retrying the snap refresh of node {} to {} after {} failed attempt(s): {}",
                    st.node,
                    st.channel,
                    st.failures,
                    st.message.as_deref().unwrap_or("unknown error")
                ),
            ),
            PodPhase::Missing => InPlaceNext::CreatePod,
            PodPhase::Succeeded => InPlaceNext::PodDone,
            PodPhase::Failed => fail(format!(
                "the snap refresh to {} on node {} failed (see the pod's log)",
                st.channel, st.node
            )),
            PodPhase::Running if age >= limits.pod_timeout => timed_out(format!(
                "the snap refresh to {} on node {} did not finish within {}s",
                st.channel,
                st.node,
                limits.pod_timeout.as_secs()
            )),
            PodPhase::Running => InPlaceNext::Wait(
                Some(limits.pod_timeout.saturating_sub(age)),
                format!("refreshing the snap of node {} to {}", st.node, st.channel),
            ),
        },
        InPlacePhase::WaitingForKubelet if age >= limits.kubelet_timeout => timed_out(format!(
            "node {} did not report Kubernetes {} within {}s of the snap refresh",
            st.node,
            st.track,
            limits.kubelet_timeout.as_secs()
        )),
        InPlacePhase::WaitingForKubelet => InPlaceNext::Wait(
            Some(limits.kubelet_timeout.saturating_sub(age)),
            format!("waiting for node {} to report Kubernetes {}", st.node, st.track),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ClonedFrom;
    use crate::model::fixtures::*;
    use mk8s_api::bootstrap::{InitConfiguration, MicroK8sConfigSpec};

    fn t(s: &str) -> Track {
        let (a, b) = s.split_once('.').unwrap();
        Track {
            major: a.parse().unwrap(),
            minor: b.parse().unwrap(),
        }
    }

    #[test]
    fn out_of_date_reasons() {
        let a = healthy("a", 1, "v1.33.2");
        let cp0 = cp(1, "v1.33.9", vec![a.clone()]);
        let cp = cp0.clone();
        assert!(outdated(&cp, &a).is_empty(), "patch versions do not matter");

        let cp2 = crate::model::fixtures::cp(1, "v1.34.0", vec![a.clone()]);
        assert_eq!(
            outdated(&cp2, &a),
            vec![Outdated::Version {
                from: Some(t("1.33")),
                to: t("1.34")
            }]
        );

        let mut c = a.clone();
        c.config = Some(MicroK8sConfigSpec {
            init_configuration: Some(InitConfiguration {
                addons: Some(vec!["ingress".into()]),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(outdated(&cp, &c), vec![Outdated::Config]);

        let mut d = a.clone();
        d.config = Some(MicroK8sConfigSpec::default()); // defaults not applied: still equal
        assert!(outdated(&cp, &d).is_empty());

        let mut e = a.clone();
        e.cloned_from = Some(ClonedFrom {
            name: "old".into(),
            group_kind: "SimMachineTemplate.infrastructure.cluster.x-k8s.io".into(),
        });
        assert_eq!(outdated(&cp, &e), vec![Outdated::Template { from: "old".into() }]);

        let mut cp3 = cp.clone();
        cp3.desired.rollout_after = Some(Timestamp::from_second(50).unwrap());
        assert_eq!(outdated(&cp3, &a), vec![Outdated::RolloutAfter]);
        cp3.desired.rollout_after = Some(Timestamp::from_second(200_000).unwrap());
        assert!(outdated(&cp3, &a).is_empty(), "not yet");
    }

    #[test]
    fn canonical_machines_are_judged_on_their_track() {
        let mut a = healthy("a", 1, "v1.33.0");
        a.ours = false;
        a.config = Some(MicroK8sConfigSpec {
            init_configuration: Some(InitConfiguration {
                addons: Some(vec!["dns".into()]),
                ..Default::default()
            }),
            ..Default::default()
        });
        a.cloned_from = Some(ClonedFrom {
            name: "somewhere-else".into(),
            group_kind: "X.y".into(),
        });
        let cp = cp(1, "v1.33.4", vec![a.clone()]);
        assert!(up_to_date(&cp, &a));
        let cp = crate::model::fixtures::cp(1, "v1.34.0", vec![a.clone()]);
        assert!(only_version(&outdated(&cp, &a)));
    }

    #[test]
    fn downgrades_and_skips() {
        let cp1 = cp(3, "v1.32.0", vec![healthy("a", 1, "v1.33.0")]);
        assert!(matches!(
            version_problem(&cp1, false),
            Some(VersionProblem::Downgrade { .. })
        ));
        let cp2 = cp(3, "v1.35.0", vec![healthy("a", 1, "v1.33.0")]);
        assert!(matches!(version_problem(&cp2, true), Some(VersionProblem::Skip { .. })));
        assert_eq!(version_problem(&cp2, false), None, "in place steps through");
        let cp3 = cp(3, "v1.34.0", vec![healthy("a", 1, "v1.33.0")]);
        assert_eq!(version_problem(&cp3, true), None);
        assert!(
            VersionProblem::Skip {
                running: t("1.33"),
                spec: t("1.35")
            }
            .message()
            .contains("next: 1.34")
        );
    }

    #[test]
    fn in_place_steps_one_minor_at_a_time_oldest_first() {
        let cp = cp(
            2,
            "v1.35.1",
            vec![healthy("a", 1, "v1.33.0"), healthy("b", 2, "v1.34.2")],
        );
        assert_eq!(next_step(&cp), Some(t("1.34")));
        assert_eq!(
            next_in_place_machine(&cp, t("1.34")).map(|m| m.name.as_str()),
            Some("a")
        );
        let cp = crate::model::fixtures::cp(
            2,
            "v1.35.1",
            vec![healthy("a", 1, "v1.34.0"), healthy("b", 2, "v1.34.2")],
        );
        assert_eq!(next_step(&cp), Some(t("1.35")));
        assert_eq!(
            next_in_place_machine(&cp, t("1.35")).map(|m| m.name.as_str()),
            Some("a")
        );
        let cp = crate::model::fixtures::cp(1, "v1.35.1", vec![healthy("a", 1, "v1.35.0")]);
        assert_eq!(next_step(&cp), None);
    }

    fn state(phase: InPlacePhase, since: i64, failures: u32) -> InPlaceState {
        InPlaceState {
            track: "1.34".into(),
            channel: "1.34/stable".into(),
            classic: true,
            phase,
            pod: "p".into(),
            node: "n".into(),
            since: Timestamp::from_second(since).unwrap(),
            failures,
            message: None,
        }
    }

    /// An upgrade state edited on the Machine never chooses the node, the channel or a
    /// downgrade: it is dropped and the plan decides again.
    #[test]
    fn a_recorded_upgrade_that_does_not_match_is_dropped() {
        let channel = |t: Track| {
            Some(mk8s_cloudinit::Channel {
                channel: format!("{t}/stable"),
                classic: true,
            })
        };
        let mut good = state(InPlacePhase::Refreshing, 990, 0);
        good.pod = "mk8s-snap-refresh-abcde".into();
        good.channel = "1.34/stable".into();
        let check = |st: &InPlaceState| recorded_in_place_problem(st, Some("n"), Some(t("1.33")), t("1.35"), channel);
        assert_eq!(check(&good), None);
        type Edit = (&'static str, fn(&mut InPlaceState));
        let edits: [Edit; 7] = [
            ("another node", |s| s.node = "other".into()),
            ("a foreign pod", |s| s.pod = "kube-proxy-abcde".into()),
            ("beyond the spec", |s| {
                s.track = "1.36".into();
                s.channel = "1.36/stable".into()
            }),
            ("a skipped minor", |s| {
                s.track = "1.35".into();
                s.channel = "1.35/stable".into()
            }),
            ("another channel", |s| s.channel = "1.34/edge".into()),
            ("strict confinement", |s| s.classic = false),
            ("an unreadable track", |s| s.track = "x".into()),
        ];
        for (what, edit) in edits {
            let mut st = good.clone();
            edit(&mut st);
            assert!(check(&st).is_some(), "{what}");
        }
        // A target at or below what runs (a step that has finished) is not an attack.
        let mut done = good.clone();
        done.track = "1.33".into();
        done.channel = "1.33/stable".into();
        assert_eq!(check(&done), None);
        // A failed upgrade waits for its user as it is.
        let mut failed = good.clone();
        failed.phase = InPlacePhase::Failed;
        failed.node = "other".into();
        assert_eq!(check(&failed), None);
    }

    #[test]
    fn in_place_state_machine() {
        let limits = ActionLimits {
            pod_timeout: Duration::from_secs(100),
            kubelet_timeout: Duration::from_secs(50),
            attempts: 3,
        };
        let now = Timestamp::from_second(1000).unwrap();
        let spec = (t("1.35"), "v1.35.1");
        let next = |st: &InPlaceState, running: &str, pod| {
            let node = NodeNow {
                running: Some(t(running)),
                kubelet_version: Some("v1.34.7"),
                ready: true,
            };
            in_place_next(st, node, pod, spec, now, limits)
        };
        let s = state(InPlacePhase::Refreshing, 990, 0);
        assert_eq!(next(&s, "1.33", PodPhase::Missing), InPlaceNext::CreatePod);
        assert!(matches!(
            next(&s, "1.33", PodPhase::Running),
            InPlaceNext::Wait(Some(_), _)
        ));
        assert_eq!(next(&s, "1.33", PodPhase::Succeeded), InPlaceNext::PodDone);
        assert_eq!(
            next(&s, "1.34", PodPhase::Failed),
            InPlaceNext::Done {
                version: "v1.34.7".into()
            },
            "the node's version decides, not the pod"
        );
        assert!(matches!(
            next(&s, "1.33", PodPhase::Failed),
            InPlaceNext::Failed { give_up: false, .. }
        ));
        // After a failed attempt the next pod waits for the pause (15 s per failure).
        let retried = state(InPlacePhase::Refreshing, 990, 1);
        assert!(matches!(
            next(&retried, "1.33", PodPhase::Missing),
            InPlaceNext::Wait(Some(d), m) if d == Duration::from_secs(5) && m.contains("after 1 failed attempt")
        ));
        let retried = state(InPlacePhase::Refreshing, 985, 1);
        assert_eq!(next(&retried, "1.33", PodPhase::Missing), InPlaceNext::CreatePod);
        // A failure recorded at 985.9 s has not paused 15 s at 1000 s: whole seconds would
        // have cut the pause to 14.1 s.
        let mut late = state(InPlacePhase::Refreshing, 985, 1);
        late.since = Timestamp::new(985, 900_000_000).unwrap();
        assert!(matches!(
            next(&late, "1.33", PodPhase::Missing),
            InPlaceNext::Wait(Some(d), _) if d == Duration::from_millis(900)
        ));
        let retried = state(InPlacePhase::Refreshing, 975, 2);
        assert!(matches!(
            next(&retried, "1.33", PodPhase::Missing),
            InPlaceNext::Wait(Some(d), _) if d == Duration::from_secs(5)
        ));
        let old = state(InPlacePhase::Refreshing, 800, 2);
        assert!(matches!(
            next(&old, "1.33", PodPhase::Running),
            InPlaceNext::Failed { give_up: true, .. }
        ));
        let w = state(InPlacePhase::WaitingForKubelet, 990, 0);
        assert!(matches!(
            next(&w, "1.33", PodPhase::Missing),
            InPlaceNext::Wait(Some(_), _)
        ));
        let w = state(InPlacePhase::WaitingForKubelet, 900, 0);
        assert!(matches!(
            next(&w, "1.33", PodPhase::Missing),
            InPlaceNext::Failed { .. }
        ));
        let mut f = state(InPlacePhase::Refreshing, 900, 0);
        f.track = "1.35".into();
        assert_eq!(
            in_place_next(
                &f,
                NodeNow {
                    running: Some(t("1.35")),
                    kubelet_version: Some("v1.35.0"),
                    ready: true
                },
                PodPhase::Missing,
                spec,
                now,
                limits
            ),
            InPlaceNext::Done {
                version: "v1.35.1".into()
            },
            "the final step sets the spec's version"
        );
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<InPlaceState>(&json).unwrap(), s);

        // Timeouts on a node that is not Ready end the upgrade at the first attempt; a failed
        // pod (the refresh restarts the node's services) is still retried.
        let node = NodeNow {
            running: Some(t("1.33")),
            kubelet_version: None,
            ready: false,
        };
        let down = |st: &InPlaceState, pod| in_place_next(st, node, pod, spec, now, limits);
        let w = state(InPlacePhase::WaitingForKubelet, 900, 0);
        assert!(matches!(
            down(&w, PodPhase::Missing),
            InPlaceNext::Failed { give_up: true, message } if message.contains("node n is not Ready")
        ));
        let r = state(InPlacePhase::Refreshing, 800, 0);
        assert!(matches!(
            down(&r, PodPhase::Running),
            InPlaceNext::Failed { give_up: true, .. }
        ));
        let r = state(InPlacePhase::Refreshing, 990, 0);
        assert!(matches!(
            down(&r, PodPhase::Failed),
            InPlaceNext::Failed { give_up: false, .. }
        ));
        assert!(matches!(down(&r, PodPhase::Running), InPlaceNext::Wait(Some(_), _)));
    }
}
