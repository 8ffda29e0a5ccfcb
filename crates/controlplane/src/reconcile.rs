//! The reconciler: gather the facts, ask the pure modules, apply one step, write status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use mk8s_api::capi::{Cluster, ClusterExt};
use mk8s_api::conditions::{self, Condition};
use mk8s_api::consts;
use mk8s_api::{MicroK8sControlPlane, MicroK8sControlPlaneStatus};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::controller::{Context, Expect, StoreWait};
use crate::error::{Error, Result, is_not_found};
use crate::infra;
use crate::kubeconfig;
use crate::machines::{self, CpMachine, NewMachine};
use crate::member::{self, HookNext, RemovalState};
use crate::model::{ControlPlane, Desired, MachineView, Reachability};
use crate::names;
use crate::node_action;
use crate::plan::{self, CreateWhy, DeleteWhy, Plan, Step};
use crate::remediation::{RemediationData, RemediationDecision};
use crate::spec;
use crate::status::{self, types};
use crate::upgrade::{self, ActionLimits, InPlaceNext, InPlacePhase, InPlaceState, PodPhase};
use crate::workload::Workload;

/// Entry point of a reconcile.
pub async fn reconcile(mcp: Arc<MicroK8sControlPlane>, ctx: Arc<Context>) -> Result<Action> {
    // Taken before the watch filter too: a filtered-out control plane's triggers must not
    // stay noted.
    let cause = ctx
        .wakes
        .take(&mk8s_runtime::wakes::key_of(&ObjectRef::from_obj(&*mcp)));
    if !ctx.rt.passes_watch_filter(&mcp.metadata) {
        return Ok(Action::await_change());
    }
    let timer = ctx.rt.metrics.start(names::CONTROLLER);
    let r = Rec::new(&mcp, &ctx);
    let key = r.key.clone();
    ctx.rt.metrics.cause(names::CONTROLLER, cause);
    let res = r.run().await;
    match &res {
        Ok(_) => {
            ctx.backoff.reset(&key);
            timer.finish("success");
        }
        Err(e) => {
            ctx.rt.metrics.error(names::CONTROLLER, e.metric_reason());
            timer.finish("error");
        }
    }
    res
}

/// One reconcile of one control plane.
pub(crate) struct Rec<'a> {
    pub(crate) mcp: &'a MicroK8sControlPlane,
    pub(crate) ctx: &'a Context,
    pub(crate) ns: String,
    pub(crate) name: String,
    pub(crate) key: String,
    pub(crate) api: Api<MicroK8sControlPlane>,
    pub(crate) now: Timestamp,
    pub(crate) tnow: Time,
    pub(crate) generation: Option<i64>,
    /// The status to start from (see [`crate::controller::effective_status`]).
    pub(crate) status: Option<MicroK8sControlPlaneStatus>,
    /// The metadata our last patch of the control plane's metadata in this reconcile
    /// answered with: the version a later status write supersedes too.
    own_patch: std::sync::Mutex<Option<ObjectMeta>>,
}

/// When to look again without a trigger, and why (the cause the next reconcile reports,
/// `timer_<why>`, unless a trigger wakes it first).
type Wait = Option<(Duration, &'static str)>;

/// The earlier of two waits.
fn min_wait(a: Wait, b: Wait) -> Wait {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.0 < x.0 { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

fn pp() -> PostParams {
    PostParams {
        field_manager: Some(names::FIELD_MANAGER.into()),
        ..Default::default()
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(names::FIELD_MANAGER.into()),
        ..Default::default()
    }
}

impl<'a> Rec<'a> {
    fn new(mcp: &'a MicroK8sControlPlane, ctx: &'a Context) -> Self {
        let ns = mcp.namespace().unwrap_or_default();
        let name = mcp.name_any();
        let now = Timestamp::now();
        let key = format!("{ns}/{name}");
        let status = {
            let written = ctx.written.lock().ok();
            crate::controller::effective_status(
                mcp.metadata.resource_version.as_deref(),
                mcp.status.as_ref(),
                written.as_ref().and_then(|w| w.get(&key)),
            )
        };
        Rec {
            api: Api::namespaced(ctx.rt.client.clone(), &ns),
            key,
            ns,
            name,
            now,
            tnow: Time(now),
            generation: mcp.metadata.generation,
            status,
            own_patch: std::sync::Mutex::new(None),
            mcp,
            ctx,
        }
    }

    pub(crate) fn prev(&self) -> MicroK8sControlPlaneStatus {
        self.status.clone().unwrap_or_default()
    }

    /// The expectations the API server's Machines meet (the store lags behind them).
    async fn shown_by_the_api_server(&self, expects: Vec<Expect>) -> Result<Vec<Expect>> {
        let api = self.machines_api();
        let mut lagging = vec![];
        for e in expects {
            let (Expect::Created(name) | Expect::Gone(name) | Expect::Patched(name, _)) = &e;
            let live = api.get_opt(name).await?.map(serde_json::to_value).transpose()?;
            if crate::controller::shows(&e, live.as_ref()) {
                lagging.push(e);
            }
        }
        Ok(lagging)
    }

    fn machines_api(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.ctx.rt.client.clone(),
            &self.ns,
            &self.ctx.rt.core_version.machine(),
        )
    }

    pub(crate) fn cluster_machines(&self, cluster: &str) -> Vec<Arc<CpMachine>> {
        let mut out: Vec<Arc<CpMachine>> = self
            .ctx
            .machines
            .state()
            .into_iter()
            .filter(|m| {
                m.metadata.namespace.as_deref() == Some(self.ns.as_str()) && machines::is_of_cluster(m, cluster)
            })
            .collect();
        out.sort_by_key(|m| m.name_any());
        out
    }

    /// Writes status with server-side apply, only when it changed.
    pub(crate) async fn patch_status(&self, st: MicroK8sControlPlaneStatus) -> Result<()> {
        if self.status.as_ref() == Some(&st) {
            return Ok(());
        }
        let body = json!({
            "apiVersion": MicroK8sControlPlane::api_version(&()),
            "kind": MicroK8sControlPlane::kind(&()),
            "status": st,
        });
        let patched = self
            .api
            .patch_status(
                &self.name,
                &PatchParams::apply(names::FIELD_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await?;
        let own = self.own_patch.lock().ok().and_then(|m| m.clone());
        if let (Some(from), Ok(mut w)) = (self.mcp.metadata.resource_version.clone(), self.ctx.written.lock()) {
            // Compared with what our own metadata patch of this reconcile answered, if any:
            // that change is no one else's.
            let before = own.as_ref().unwrap_or(&self.mcp.metadata);
            let status_only = crate::controller::same_but_status(before, &patched.metadata);
            let mut next = crate::controller::Written::next(
                w.get(&self.key),
                from,
                patched.metadata.resource_version,
                status_only,
                st,
            );
            // The version our metadata patch produced still shows the status this write
            // replaces: a reconcile woken by it must start from this write.
            if let Some(v) = own.and_then(|m| m.resource_version) {
                next.also_supersedes(v);
            }
            w.insert(self.key.clone(), next);
        }
        Ok(())
    }

    /// The action of a reconcile that looks again after `wait` (noting why), or on the next
    /// change.
    fn after(&self, wait: Wait) -> Action {
        match wait {
            Some((d, why)) => {
                self.ctx.wakes.timer(&self.key, why);
                Action::requeue(d)
            }
            None => Action::await_change(),
        }
    }

    fn condition_changed(&self, type_: &str, reason: &str) -> bool {
        self.status
            .as_ref()
            .and_then(|s| conditions::find(&s.conditions, type_))
            .is_none_or(|c| c.reason != reason)
    }

    async fn run(self) -> Result<Action> {
        match self.ctx.store_wait(&self.key, &self.ns) {
            StoreWait::CaughtUp => {}
            // Woken by the Machine event that shows our write; the timer is the fallback.
            StoreWait::Waiting(fallback) => return Ok(self.after(Some((fallback, "timer_store_wait")))),
            StoreWait::Overdue(expects) => {
                let lagging = match self.shown_by_the_api_server(expects.clone()).await {
                    Ok(l) => l,
                    Err(e) => {
                        // Unanswered: keep waiting for them (the next reconcile asks again).
                        self.ctx.rearm(&self.key, expects);
                        return Err(e);
                    }
                };
                if !lagging.is_empty() {
                    warn!(control_plane = %self.key, expectations = ?lagging, "the Machine store lags the API server by more than 30 s; waiting for it before deciding");
                    self.ctx.rearm(&self.key, lagging);
                    return Ok(self.after(Some((Duration::from_secs(1), "timer_store_lag"))));
                }
                debug!(control_plane = %self.key, "writes the Machine store never showed were undone since; deciding on the store");
            }
        }
        if self.mcp.metadata.deletion_timestamp.is_some() {
            return crate::deletion::reconcile(&self).await;
        }
        let Some(cluster) = self.ctx.cluster_of(self.mcp) else {
            self.patch_status(status::waiting(
                &self.prev(),
                None,
                0,
                "WaitingForCluster",
                "waiting for a Cluster whose spec.controlPlaneRef names this control plane",
                self.generation,
                &self.tnow,
            ))
            .await?;
            return Ok(Action::await_change());
        };
        let cluster_name = cluster.name_any();
        let all = self.cluster_machines(&cluster_name);
        let cp_count = all
            .iter()
            .filter(|m| machines::is_control_plane_of(m, &cluster_name))
            .count();
        let paused_annotation = self.mcp.annotations().contains_key(consts::ANNOTATION_PAUSED);
        if cluster.paused() || paused_annotation {
            let why = if cluster.paused() {
                format!("Cluster {cluster_name} has spec.paused set")
            } else {
                format!("the control plane has the {} annotation", consts::ANNOTATION_PAUSED)
            };
            self.patch_status(status::paused(&self.prev(), &why, self.generation, &self.tnow))
                .await?;
            return Ok(Action::await_change());
        }
        // After the pause check: clusterctl move pauses, removes the finalizers and deletes
        // the source objects; adding ours back then would hold the deletion behind the pause.
        if !self
            .mcp
            .finalizers()
            .iter()
            .any(|f| f == consts::CONTROL_PLANE_FINALIZER)
        {
            let mut finalizers = self.mcp.finalizers().to_vec();
            finalizers.push(consts::CONTROL_PLANE_FINALIZER.to_string());
            let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": self.mcp.resource_version()}});
            self.api
                .patch(&self.name, &patch_params(), &Patch::Merge(patch))
                .await?;
            return Ok(Action::await_change());
        }
        // A spec that cannot be used holds every step that creates, deletes or upgrades a
        // machine, but not what keeps the cluster reachable and its deletions moving.
        let (desired, held) = match spec::validate(&self.mcp.spec) {
            Ok(d) => (d, None),
            Err(problems) => {
                if let Some(p) = problems.first()
                    && self.condition_changed(types::SPEC_VALID, p.reason)
                {
                    self.ctx.events.warning(self.mcp, p.reason, p.message.clone()).await;
                }
                (spec::held(&self.mcp.spec), Some(problems))
            }
        };
        if let Some(problems) = &held
            && (!cluster.infrastructure_ready() || cluster.endpoint().is_none())
        {
            self.patch_status(status::invalid(
                &self.prev(),
                Some(&cluster_name),
                cp_count,
                problems,
                self.generation,
                &self.tnow,
            ))
            .await?;
            return Ok(Action::await_change());
        }
        if !cluster.infrastructure_ready() {
            self.patch_status(status::waiting(
                &self.prev(),
                Some(&cluster_name),
                cp_count,
                "WaitingForInfrastructure",
                &format!("waiting for Cluster {cluster_name}'s infrastructure to be provisioned"),
                self.generation,
                &self.tnow,
            ))
            .await?;
            return Ok(Action::await_change());
        }
        let Some(endpoint) = cluster.endpoint().cloned() else {
            self.patch_status(status::waiting(
                &self.prev(),
                Some(&cluster_name),
                cp_count,
                "WaitingForControlPlaneEndpoint",
                &format!("waiting for Cluster {cluster_name}'s spec.controlPlaneEndpoint (set by the infrastructure provider)"),
                self.generation,
                &self.tnow,
            ))
            .await?;
            return Ok(Action::await_change());
        };
        self.active(&cluster, &cluster_name, (&desired, held.as_deref()), &endpoint, &all)
            .await
    }

    /// Reconciles a control plane whose Cluster is ready for it. With `held` spec problems
    /// ([`spec::held`]'s `desired`), only the kubeconfig, the Nodes' providerIDs and the
    /// member removals in flight go on; the status says what is wrong and what waits.
    async fn active(
        &self,
        cluster: &Cluster,
        cluster_name: &str,
        (desired, held): (&Desired, Option<&[spec::SpecProblem]>),
        endpoint: &mk8s_api::capi::ApiEndpoint,
        all: &[Arc<CpMachine>],
    ) -> Result<Action> {
        let client = &self.ctx.rt.client;
        let uid = self.mcp.uid().unwrap_or_default();
        let template = match held {
            None => self.ensure_template_owner(desired, cluster).await,
            Some(_) => None,
        };

        // Kubeconfig and workload cluster.
        let kc = kubeconfig::reconcile(&kubeconfig::Inputs {
            client,
            secrets: &self.ctx.secrets,
            namespace: &self.ns,
            cluster: cluster_name,
            owner: cluster,
            mcp: (&self.name, &uid),
            host: &endpoint.host,
            port: endpoint.port,
            validity: self.ctx.cfg.kubeconfig_validity,
        })
        .await?;
        if let Some((reason, msg)) = &kc.event {
            self.ctx.events.normal(self.mcp, reason, msg.clone()).await;
        }
        let cluster_key = format!("{}/{cluster_name}", self.ns);
        let (workload, reachability) = match &kc.kubeconfig {
            None => (None, Reachability::NoKubeconfig),
            Some(yaml) => match self
                .ctx
                .workloads
                .ensure(&cluster_key, ObjectRef::new(&self.name).within(&self.ns), yaml)
                .await
            {
                Ok(w) => {
                    let r = w.state().reachability();
                    (Some(w), r)
                }
                Err(e) => (
                    None,
                    Reachability::Unreachable(format!("cannot build a client from the kubeconfig: {e}")),
                ),
            },
        };

        // The computed control plane.
        let cp_raw: Vec<&Arc<CpMachine>> = all
            .iter()
            .filter(|m| machines::is_control_plane_of(m, cluster_name))
            .collect();
        let mut views = vec![];
        let mut infra_objects = std::collections::HashMap::new();
        for m in &cp_raw {
            let (v, infra) = self.view(m).await;
            if let Some(o) = infra {
                infra_objects.insert(v.name.clone(), o);
            }
            views.push(v);
        }
        let workers = all
            .iter()
            .filter(|m| !machines::is_control_plane_of(m, cluster_name))
            .map(|m| machines::view(m, None, None))
            .collect();
        let remediation_in_progress = self
            .mcp
            .annotations()
            .get(names::ANNOTATION_REMEDIATION_IN_PROGRESS)
            .and_then(|v| serde_json::from_str::<RemediationData>(v).ok());
        let mut cp = ControlPlane {
            name: self.name.clone(),
            cluster: cluster_name.to_string(),
            desired: desired.clone(),
            machines: views,
            workers,
            failure_domains: cluster.control_plane_failure_domains(),
            nodes: workload.as_ref().map(Workload::node_views).unwrap_or_default(),
            reachability,
            was_initialized: self.status.as_ref().is_some_and(|s| s.initialized)
                || self.mcp.annotations().contains_key(names::ANNOTATION_INITIALIZED),
            remediation_in_progress,
            now: self.now,
        };
        cp.sort();
        if cp.initialized() && !cp.was_initialized {
            self.ctx
                .events
                .normal(
                    self.mcp,
                    "Initialized",
                    "the first control plane node accepts joins: the control plane is initialized",
                )
                .await;
        }
        if cp.initialized() && !self.mcp.annotations().contains_key(names::ANNOTATION_INITIALIZED) {
            let memo = format!(
                "{}/{}/{}",
                self.key,
                self.mcp.uid().unwrap_or_default(),
                names::ANNOTATION_INITIALIZED
            );
            let ttl = crate::controller::ANNOTATION_MEMO_TTL;
            let written = self
                .ctx
                .annotated
                .lock()
                .is_ok_and(|m| crate::controller::still_fresh(&m, &memo, Instant::now(), ttl));
            if !written {
                self.set_mcp_annotation(names::ANNOTATION_INITIALIZED, Some("true".into()))
                    .await?;
                if let Ok(mut m) = self.ctx.annotated.lock() {
                    crate::controller::record_fresh(&mut m, memo, Instant::now(), ttl);
                }
            }
        }

        if let Some(w) = &workload
            && cp.reachable()
        {
            self.sync_provider_ids(&cp, w).await;
        }

        // Operations in flight.
        let mut requeue: Wait = kc.renew_in.map(|d| (d, "timer_kubeconfig_renewal"));
        let mut in_flight = vec![];
        let mut busy: Option<String> = None;
        for m in cp.machines.iter().filter(|m| m.deleting && m.has_hook) {
            let (msg, wait) = self.progress_removal(&cp, m, workload.as_ref(), cluster_name).await?;
            requeue = min_wait(requeue, wait.map(|d| (d, "timer_member_removal")));
            if let Some(msg) = msg {
                in_flight.push(msg.clone());
                busy.get_or_insert(msg);
            }
        }
        if let Some(problems) = held {
            let mut problems = problems.to_vec();
            let mut what_goes_on = "until it is fixed, no control plane machine is created, deleted or upgraded; \
                the kubeconfig, the Nodes' providerIDs and the member removals of deleting machines go on"
                .to_string();
            if !in_flight.is_empty() {
                what_goes_on.push_str(&format!(" ({})", in_flight.join("; ")));
            }
            problems.push(spec::SpecProblem {
                reason: problems.first().map_or("Invalid", |p| p.reason),
                message: what_goes_on,
            });
            self.patch_status(status::held(&self.prev(), &cp, &problems, self.generation, &self.tnow))
                .await?;
            return Ok(self.after(requeue));
        }
        for m in cp.machines.iter().filter(|m| !m.deleting && m.in_place.is_some()) {
            let (msg, wait) = self.progress_in_place(&cp, m, workload.as_ref()).await?;
            requeue = min_wait(requeue, wait.map(|d| (d, "timer_in_place_upgrade")));
            if let Some(msg) = msg {
                in_flight.push(msg.clone());
                busy.get_or_insert(msg);
            }
        }

        // The next step.
        // Plan as if the workload API were ready; check `/readyz` only when the step needs it.
        let mut p = plan::plan(&cp, busy.clone(), Some(true));
        if p.step.needs_api_check() {
            let ready = match &workload {
                Some(w) => w.api_ready().await,
                None => false,
            };
            if !ready {
                p = plan::plan(&cp, busy, Some(false));
                // Nothing announces that /readyz recovered: look again soon.
                requeue = min_wait(requeue, Some((Duration::from_secs(15), "timer_api_not_ready")));
            }
        }
        let mut extra = status::Extra {
            certificates: Some(kc.condition.clone()),
            creation_error: None,
            in_flight,
        };
        if let RemediationDecision::Blocked { retry_after, .. } = &p.remediation {
            requeue = min_wait(requeue, retry_after.map(|d| (d, "timer_remediation")));
        }
        match p.step.clone() {
            Step::Create {
                version,
                failure_domain,
                why,
            } => {
                if let Err((reason, message)) = self
                    .create_machine(
                        &cp,
                        cluster,
                        template.as_ref(),
                        &version,
                        failure_domain.as_deref(),
                        &why,
                    )
                    .await
                {
                    let seen = self
                        .mcp
                        .status
                        .as_ref()
                        .and_then(|s| s.deprecated.as_ref())
                        .and_then(|d| d.v1beta1.as_ref())
                        .is_some_and(|v| {
                            v.conditions
                                .iter()
                                .any(|c| c.type_ == types::MACHINES_CREATED && c.reason == reason)
                        });
                    if !seen {
                        self.ctx.events.warning(self.mcp, reason, message.clone()).await;
                    }
                    extra.creation_error = Some((reason.to_string(), message));
                    requeue = min_wait(requeue, Some((Duration::from_secs(30), "timer_creation_failed")));
                }
            }
            Step::Delete { machine, why } => self.delete_machine(&machine, &why).await?,
            Step::InPlace { machine, track } => {
                if let Some(m) = cp.machine(&machine) {
                    self.start_in_place(&cp, m, track, workload.as_ref(), &mut extra)
                        .await?;
                }
            }
            Step::ClearRemediation => {
                self.set_mcp_annotation(names::ANNOTATION_REMEDIATION_IN_PROGRESS, None)
                    .await?;
            }
            Step::Wait(_) | Step::Idle => {}
        }

        // In-place propagation and the Machines' own conditions.
        self.propagate(&cp_raw, &cp, &infra_objects).await;
        self.machine_conditions(&cp, &p, &cp_raw).await;
        if matches!(p.step, Step::Idle | Step::Wait(_)) {
            self.sweep(&cp, desired, &cp_raw, workload.as_ref()).await;
        }

        // Status.
        let st = status::compute(&cp, &p, &self.prev(), &extra, self.generation, &self.tnow);
        // One Warning Event when `SpecValid` turns to a spec problem that holds new machines
        // (computed here: the waiting statuses before do not set `SpecValid`, and a version
        // problem takes precedence over it).
        if let Some(problem) = &desired.config_problem
            && conditions::find(&st.conditions, types::SPEC_VALID).is_some_and(|c| c.reason == problem.reason)
            && self.condition_changed(types::SPEC_VALID, problem.reason)
        {
            self.ctx
                .events
                .warning(self.mcp, problem.reason, problem.message.clone())
                .await;
        }
        self.report(&cp, &p);
        self.patch_status(st).await?;

        if cp.active().any(|m| m.node_ref.is_none()) {
            requeue = min_wait(requeue, Some((self.ctx.cfg.provisioning_requeue, "timer_provisioning")));
        }
        Ok(self.after(requeue))
    }

    /// A Machine's view, with its MicroK8sConfig (store) and its infrastructure machine's
    /// cloned-from annotations (from the infrastructure watch, else read live).
    async fn view(&self, m: &CpMachine) -> (MachineView, Option<(kube::core::ApiResource, ObjectMeta)>) {
        let config_name = m
            .spec
            .base
            .bootstrap
            .config_ref
            .as_ref()
            .filter(|r| r.is(names::BOOTSTRAP_GROUP, names::BOOTSTRAP_KIND))
            .map(|r| r.name.clone());
        let config = config_name.and_then(|n| {
            self.ctx
                .configs
                .get(&ObjectRef::new(&n).within(&self.ns))
                .map(|c| c.spec.clone())
        });
        let mut cloned = None;
        let mut infra_obj = None;
        if m.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(names::ANNOTATION_CREATED_BY))
            && m.metadata.deletion_timestamp.is_none()
            && let Some(r) = m.spec.base.infrastructure_ref.as_ref()
        {
            match self.ctx.kinds.resolve(&self.ctx.rt.client, r.group(), &r.kind).await {
                Ok(ar) => match self.ctx.infra.get(&ar, &self.ns, &r.name).await {
                    Ok(Some(meta)) => {
                        cloned = infra::cloned_from(&meta);
                        infra_obj = Some((ar, meta));
                    }
                    Ok(None) => {}
                    Err(e) => debug!(machine = %m.name_any(), error = %e, "reading the infrastructure machine"),
                },
                Err(e) => debug!(machine = %m.name_any(), error = %e, "resolving the infrastructure kind"),
            }
        }
        (machines::view(m, config, cloned), infra_obj)
    }

    /// Gives the infrastructure template its Cluster's owner reference (at most every
    /// [`crate::controller::TEMPLATE_OWNER_TTL`]); returns the template when it read it, for a
    /// machine created in the same reconcile.
    async fn ensure_template_owner(&self, desired: &Desired, cluster: &Cluster) -> Option<DynamicObject> {
        let client = &self.ctx.rt.client;
        let t = &desired.template;
        let key = format!(
            "{}/{}/{}/{}/{}",
            self.ns,
            t.group,
            t.kind,
            t.name,
            cluster.uid().unwrap_or_default()
        );
        let ttl = crate::controller::TEMPLATE_OWNER_TTL;
        if self
            .ctx
            .owned_templates
            .lock()
            .is_ok_and(|s| crate::controller::still_fresh(&s, &key, Instant::now(), ttl))
        {
            return None;
        }
        let template = match infra::get_template(&self.ctx.kinds, client, &self.ns, t).await {
            Ok(o) => o,
            Err(e) => {
                debug!(control_plane = %self.key, error = %e, "reading the infrastructure template");
                return None;
            }
        };
        let Ok(ar) = self.ctx.kinds.resolve(client, &t.group, &t.kind).await else {
            return Some(template);
        };
        let owner = OwnerReference {
            api_version: self.ctx.rt.core_version.api_version(),
            kind: "Cluster".into(),
            name: cluster.name_any(),
            uid: cluster.uid().unwrap_or_default(),
            ..Default::default()
        };
        match infra::ensure_template_owner(client, &self.ns, &ar, &template, &owner).await {
            Ok(_) => {
                if let Ok(mut s) = self.ctx.owned_templates.lock() {
                    crate::controller::record_fresh(&mut s, key, Instant::now(), ttl);
                }
            }
            Err(e) => debug!(control_plane = %self.key, error = %e, "setting the template's owner reference"),
        }
        Some(template)
    }

    /// Copies `Machine.spec.providerID` onto Nodes that lack one, matched by address ([`crate::model::node_ips`])
    /// (workers too): MicroK8s does not set it, and without it CAPI never matches Nodes.
    async fn sync_provider_ids(&self, cp: &ControlPlane, w: &Workload) {
        let all: Vec<&MachineView> = cp.machines.iter().chain(cp.workers.iter()).collect();
        for node in cp.nodes.iter().filter(|n| n.provider_id.is_none()) {
            let matches: Vec<&&MachineView> = all
                .iter()
                .filter(|m| m.provider_id.is_some() && m.ips.iter().any(|ip| node.ips.contains(ip)))
                .collect();
            let live: Vec<&&MachineView> = matches.iter().copied().filter(|m| !m.deleting).collect();
            let chosen = match (live.as_slice(), matches.as_slice()) {
                ([one], _) => Some(*one),
                ([], [one]) => Some(*one),
                ([], []) => None,
                _ => {
                    warn!(node = %node.name, "several Machines share the node's address; not setting its providerID");
                    None
                }
            };
            let Some(m) = chosen else { continue };
            let Some(pid) = m.provider_id.as_deref() else { continue };
            if cp.nodes.iter().any(|n| n.provider_id.as_deref() == Some(pid)) {
                continue;
            }
            match w.set_provider_id(&node.name, pid).await {
                Ok(()) => info!(node = %node.name, machine = %m.name, provider_id = pid, "set the node's providerID"),
                Err(e) => warn!(node = %node.name, error = %e, "setting the node's providerID"),
            }
        }
    }

    /// Creates the pod that refreshes `st.node`'s snap to `st.channel` (in-place upgrade).
    async fn start_snap_refresh(&self, w: &Workload, machine: &str, st: &InPlaceState) -> Result<()> {
        w.ensure_action_prerequisites(None).await?;
        let pod = node_action::snap_refresh_pod(
            &st.pod,
            &st.node,
            machine,
            &self.ctx.cfg.node_action_image,
            &st.channel,
            st.classic,
        )?;
        w.create_pod(&pod).await?;
        self.ctx.metrics.action(names::ACTION_SNAP_REFRESH, "started");
        Ok(())
    }

    async fn patch_machine(&self, name: &str, patch: serde_json::Value) -> Result<()> {
        self.machines_api()
            .patch(name, &patch_params(), &Patch::Merge(&patch))
            .await?;
        self.ctx.expect(&self.key, Expect::Patched(name.to_string(), patch));
        Ok(())
    }

    async fn set_mcp_annotation(&self, key: &str, value: Option<String>) -> Result<()> {
        let patched = self
            .api
            .patch(
                &self.name,
                &patch_params(),
                &Patch::Merge(machines::annotation_patch(key, value)),
            )
            .await?;
        if let Ok(mut own) = self.own_patch.lock() {
            *own = Some(patched.metadata);
        }
        Ok(())
    }

    async fn auth_token(&self, cluster: &str) -> Result<Option<String>> {
        Ok(self
            .ctx
            .secrets
            .get(&self.ns, &consts::auth_token_secret(cluster))
            .await?
            .and_then(|s| kubeconfig::secret_text(&s, consts::KEY_AUTH_TOKEN))
            // As the bootstrap provider writes it to the nodes: a token a user stored with a
            // trailing newline must still match theirs.
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty()))
    }

    fn limits(&self) -> ActionLimits {
        ActionLimits {
            pod_timeout: self.ctx.cfg.node_action_timeout,
            kubelet_timeout: self.ctx.cfg.kubelet_report_timeout,
            attempts: self.ctx.cfg.node_action_attempts,
        }
    }

    /// The phase of a node action pod, or `None` when it cannot be observed (workload
    /// unreachable or pods not listed yet).
    fn pod_phase(w: Option<&Workload>, pod: Option<&str>) -> Option<PodPhase> {
        let w = w?;
        let st = w.state();
        if st.error().is_some() || !st.pods_synced {
            return None;
        }
        Some(match pod {
            Some(p) => node_action::phase(w.pod(p).as_deref()),
            None => PodPhase::Missing,
        })
    }

    /// Moves a deleting Machine's member removal forward.
    async fn progress_removal(
        &self,
        cp: &ControlPlane,
        m: &MachineView,
        w: Option<&Workload>,
        cluster: &str,
    ) -> Result<(Option<String>, Option<Duration>)> {
        let pod = m.removal.as_ref().map(|s| s.pod.as_str());
        let limits = self.limits();
        // Decided on Nodes as a workload cluster observed now shows them: its Node store is
        // empty right after a restart (the pod store may have synced first) and old while it
        // is unreachable — a survivor would look gone.
        let observed = Self::pod_phase(w, pod).filter(|_| cp.reachable());
        let next = match observed {
            Some(p) => member::hook_next(cp, m, p, limits),
            None if !m.waiting_for_hook && m.removal.is_none() => member::hook_next(cp, m, PodPhase::Missing, limits),
            None => match member::hook_next_unobserved(cp, m) {
                Some(next) => next,
                None => {
                    return Ok((
                        Some(format!(
                            "waiting for the workload cluster to remove machine {}'s dqlite member",
                            m.name
                        )),
                        Some(Duration::from_secs(10)),
                    ));
                }
            },
        };
        let release = json!({"metadata": {"annotations": {
            names::ANNOTATION_PRE_TERMINATE_HOOK: null,
            names::ANNOTATION_MEMBER_REMOVAL: null,
        }}});
        match next {
            HookNext::Wait(d, msg) => Ok((Some(msg), d)),
            HookNext::Release(why) => {
                self.patch_machine(&m.name, release).await?;
                self.ctx
                    .events
                    .normal(self.mcp, "MemberRemovalSkipped", why.clone())
                    .await;
                // Something changed: decide again once the store shows it.
                Ok((Some(why), None))
            }
            HookNext::Start(rp) => {
                let Some(w) = w else {
                    return Ok((
                        Some("waiting for the workload cluster".into()),
                        Some(Duration::from_secs(10)),
                    ));
                };
                let Some(token) = self.auth_token(cluster).await? else {
                    return Ok((
                        Some(format!(
                            "waiting for Secret {} to remove machine {}'s dqlite member",
                            consts::auth_token_secret(cluster),
                            m.name
                        )),
                        Some(Duration::from_secs(30)),
                    ));
                };
                let state = RemovalState {
                    pod: names::action_pod_name(names::ACTION_DQLITE_REMOVE),
                    node: rp.survivor_node.clone(),
                    endpoint: rp.endpoint.clone(),
                    agent: rp.agent.clone(),
                    since: self.now,
                    failures: m.removal.as_ref().map_or(0, |s| s.failures),
                    message: None,
                };
                self.patch_machine(
                    &m.name,
                    machines::annotation_patch(names::ANNOTATION_MEMBER_REMOVAL, Some(serde_json::to_string(&state)?)),
                )
                .await?;
                let created = async {
                    w.ensure_action_prerequisites(Some(&token)).await?;
                    self.create_removal_pod(w, m, &state).await
                };
                if let Err(e) = created.await {
                    return self.removal_refused(e, m, state, w).await;
                }
                self.ctx
                    .events
                    .normal(
                        self.mcp,
                        "RemovingMember",
                        format!(
                            "removing machine {}'s dqlite member {} through the cluster agent of node {}",
                            m.name, state.endpoint, state.node
                        ),
                    )
                    .await;
                Ok((
                    Some(format!(
                        "removing machine {}'s dqlite member {}",
                        m.name, state.endpoint
                    )),
                    None,
                ))
            }
            HookNext::CreatePod => {
                if let (Some(w), Some(st)) = (w, &m.removal) {
                    let token = self.auth_token(cluster).await?;
                    let created = async {
                        w.ensure_action_prerequisites(token.as_deref()).await?;
                        self.create_removal_pod(w, m, st).await
                    };
                    if let Err(e) = created.await {
                        return self.removal_refused(e, m, st.clone(), w).await;
                    }
                }
                Ok((Some(format!("removing machine {}'s dqlite member", m.name)), None))
            }
            HookNext::Done => {
                // The hook first: once the pod is being deleted it no longer shows that it
                // succeeded (a pod left behind is swept as untracked).
                self.patch_machine(&m.name, release).await?;
                if let (Some(w), Some(st)) = (w, &m.removal) {
                    w.delete_pod(&st.pod).await?;
                }
                self.ctx.metrics.action(names::ACTION_DQLITE_REMOVE, "succeeded");
                let endpoint = m.removal.as_ref().map(|s| s.endpoint.clone()).unwrap_or_default();
                self.ctx
                    .events
                    .normal(
                        self.mcp,
                        "MemberRemoved",
                        format!(
                            "removed machine {}'s dqlite member {endpoint}; Cluster API may now delete it",
                            m.name
                        ),
                    )
                    .await;
                Ok((
                    Some(format!("removed machine {}'s dqlite member {endpoint}", m.name)),
                    None,
                ))
            }
            HookNext::Restart(why) => {
                self.patch_machine(
                    &m.name,
                    machines::annotation_patch(names::ANNOTATION_MEMBER_REMOVAL, None),
                )
                .await?;
                if let (Some(w), Some(st)) = (w, &m.removal) {
                    self.discard_recorded_pod(w, &st.pod, &m.name, names::ACTION_DQLITE_REMOVE)
                        .await;
                }
                let msg = format!(
                    "machine {}: the recorded member removal does not match the control plane ({why}); starting over",
                    m.name
                );
                self.ctx
                    .events
                    .warning(self.mcp, "MemberRemovalRestarted", msg.clone())
                    .await;
                Ok((Some(msg), None))
            }
            HookNext::Failed { message } => {
                let Some(st) = m.removal.clone() else {
                    return Ok((None, None));
                };
                self.removal_failed(m, st, message, w).await
            }
        }
    }

    /// Deletes the pod a dropped record names when it is this machine's pod for `action` (the
    /// name alone may be anyone's), so the next attempt does not run beside it. A failure is
    /// only logged: the sweep of untracked pods removes it later.
    async fn discard_recorded_pod(&self, w: &Workload, pod: &str, machine: &str, action: &str) {
        let ours = w
            .pod(pod)
            .is_some_and(|p| node_action::is_action_pod_of(&p, action, machine));
        if ours && let Err(e) = w.delete_pod(pod).await {
            warn!(control_plane = %self.key, pod, error = %e, "deleting the pod of a dropped node action record");
        }
    }

    /// Records a failed removal attempt (`st` is its state) and deletes its pod; the next
    /// attempt, after a pause, gets a pod of its own.
    async fn removal_failed(
        &self,
        m: &MachineView,
        mut st: RemovalState,
        message: String,
        w: Option<&Workload>,
    ) -> Result<(Option<String>, Option<Duration>)> {
        // The failed pod, deleted below, is never looked at again (a cache still showing it
        // would count it twice).
        let pod = std::mem::replace(&mut st.pod, names::action_pod_name(names::ACTION_DQLITE_REMOVE));
        st.failures += 1;
        st.message = Some(message.clone());
        st.since = self.now;
        // Recorded first: a pod being deleted no longer shows that it failed.
        self.patch_machine(
            &m.name,
            machines::annotation_patch(names::ANNOTATION_MEMBER_REMOVAL, Some(serde_json::to_string(&st)?)),
        )
        .await?;
        if let Some(w) = w {
            w.delete_pod(&pod).await?;
        }
        self.ctx.metrics.action(names::ACTION_DQLITE_REMOVE, "failed");
        self.ctx
            .events
            .warning(
                self.mcp,
                "MemberRemovalFailed",
                format!(
                    "{message} (attempt {}); retrying. To give up, remove annotation {} from machine {} (the member stays in dqlite)",
                    st.failures,
                    names::ANNOTATION_PRE_TERMINATE_HOOK,
                    m.name
                ),
            )
            .await;
        Ok((Some(message), Some(Duration::from_secs(15))))
    }

    /// A removal pod (or what it needs) the workload cluster refused for good counts as a
    /// failed attempt, explained, and retried after a pause; any other error fails the
    /// reconcile (retried with backoff).
    async fn removal_refused(
        &self,
        e: Error,
        m: &MachineView,
        st: RemovalState,
        w: &Workload,
    ) -> Result<(Option<String>, Option<Duration>)> {
        let Some(why) = e.refused_by_workload() else {
            return Err(e);
        };
        let message = format!(
            "the workload cluster refused the pod removing dqlite member {} (namespace {}): {why}",
            st.endpoint,
            names::ACTION_NAMESPACE
        );
        self.removal_failed(m, st, message, Some(w)).await
    }

    async fn create_removal_pod(&self, w: &Workload, m: &MachineView, st: &RemovalState) -> Result<()> {
        let pod = node_action::dqlite_remove_pod(
            &st.pod,
            &st.node,
            &m.name,
            &self.ctx.cfg.node_action_image,
            &st.endpoint,
            &st.agent,
        )?;
        w.create_pod(&pod).await?;
        self.ctx.metrics.action(names::ACTION_DQLITE_REMOVE, "started");
        Ok(())
    }

    /// Moves a Machine's in-place upgrade forward.
    async fn progress_in_place(
        &self,
        cp: &ControlPlane,
        m: &MachineView,
        w: Option<&Workload>,
    ) -> Result<(Option<String>, Option<Duration>)> {
        let Some(st) = m.in_place.clone() else {
            return Ok((None, None));
        };
        let observed = Self::pod_phase(w, Some(&st.pod));
        // While the workload cluster cannot be observed (a single node restarts its API
        // server), a finished pod is left for the sweep of untracked pods, which runs once it
        // can: the decision below, taken from the node's version, is recorded instead of the
        // reconcile failing on the deletion.
        let discard = |pod: String| async move {
            match w {
                Some(w) if observed.is_some() => w.delete_pod(&pod).await,
                _ => Ok(()),
            }
        };
        // The pod's phase as decisions may use it: only while the Nodes are observed too (the
        // same workload cluster, listed, reachable). Right after a restart (still connecting)
        // or while unreachable, the Node store is empty or old: a node would look not Ready,
        // and the recorded node could not be checked before a pod is created.
        let with_nodes = observed.filter(|_| cp.reachable());
        // Unobservable: only the node's version can tell, below.
        let phase = with_nodes.unwrap_or(PodPhase::Running);
        let running = cp.running_track(m);
        let kubelet = cp.kubelet_version(m);
        let node = upgrade::NodeNow {
            running,
            kubelet_version: kubelet.as_deref(),
            ready: with_nodes.is_none() || cp.node_ready(m),
        };
        let problem = with_nodes.and_then(|_| {
            upgrade::recorded_in_place_problem(
                &st,
                cp.node_of(m).map(|n| n.name.as_str()),
                running,
                cp.desired.track(),
                |t| upgrade::refresh_channel(cp, m, t).ok(),
            )
        });
        let next = match problem {
            Some(why) => InPlaceNext::Restart(why),
            None => upgrade::in_place_next(
                &st,
                node,
                phase,
                (cp.desired.track(), &cp.desired.version_string),
                self.now,
                self.limits(),
            ),
        };
        match next {
            InPlaceNext::Restart(why) => {
                self.patch_machine(&m.name, machines::annotation_patch(names::ANNOTATION_IN_PLACE, None))
                    .await?;
                if let Some(w) = w {
                    self.discard_recorded_pod(w, &st.pod, &m.name, names::ACTION_SNAP_REFRESH)
                        .await;
                }
                let msg = format!(
                    "machine {}: the recorded in-place upgrade does not match the control plane ({why}); dropped, the plan decides again",
                    m.name
                );
                self.ctx
                    .events
                    .warning(self.mcp, "InPlaceUpgradeRestarted", msg.clone())
                    .await;
                Ok((Some(msg), None))
            }
            InPlaceNext::Wait(d, msg) => {
                let msg = if st.phase == InPlacePhase::Failed {
                    format!(
                        "machine {}: {msg}; fix the node, then remove annotation {} from the Machine to retry",
                        m.name,
                        names::ANNOTATION_IN_PLACE
                    )
                } else {
                    format!("machine {}: {msg}", m.name)
                };
                Ok((Some(msg), d.map(|d| d.min(Duration::from_secs(60)))))
            }
            InPlaceNext::CreatePod => {
                if let Some(w) = w
                    && let Err(e) = self.start_snap_refresh(w, &m.name, &st).await
                {
                    return self.snap_refresh_refused(e, m, &st).await;
                }
                Ok((Some(refreshing_note(&m.name, &st)), None))
            }
            InPlaceNext::PodDone => {
                // Recorded first: a pod being deleted no longer shows that it succeeded.
                let mut next = st.clone();
                next.phase = InPlacePhase::WaitingForKubelet;
                next.since = self.now;
                self.patch_machine(
                    &m.name,
                    machines::annotation_patch(names::ANNOTATION_IN_PLACE, Some(serde_json::to_string(&next)?)),
                )
                .await?;
                discard(st.pod.clone()).await?;
                self.ctx.metrics.action(names::ACTION_SNAP_REFRESH, "succeeded");
                Ok((
                    Some(format!(
                        "machine {}: waiting for node {} to report Kubernetes {}",
                        m.name, st.node, st.track
                    )),
                    Some(Duration::from_secs(30)),
                ))
            }
            InPlaceNext::Done { version } => {
                discard(st.pod.clone()).await?;
                self.patch_machine(
                    &m.name,
                    json!({"metadata": {"annotations": {names::ANNOTATION_IN_PLACE: null}}, "spec": {"version": version}}),
                )
                .await?;
                self.ctx
                    .events
                    .normal(
                        self.mcp,
                        "UpgradedInPlace",
                        format!(
                            "machine {} runs Kubernetes {} (snap channel {}); spec.version is now {version}",
                            m.name, st.track, st.channel
                        ),
                    )
                    .await;
                Ok((
                    Some(format!("machine {} upgraded in place to {}", m.name, st.track)),
                    None,
                ))
            }
            InPlaceNext::Failed { message, give_up } => {
                // Recorded first: a pod being deleted no longer shows that it failed.
                let out = self.in_place_failed(m, &st, message, give_up).await?;
                discard(st.pod.clone()).await?;
                Ok(out)
            }
        }
    }

    /// Records a failed in-place attempt on the Machine: the next attempt (a new pod), or the
    /// end of the upgrade when `give_up`.
    async fn in_place_failed(
        &self,
        m: &MachineView,
        st: &InPlaceState,
        message: String,
        give_up: bool,
    ) -> Result<(Option<String>, Option<Duration>)> {
        let mut next = st.clone();
        next.failures += 1;
        next.message = Some(message.clone());
        next.since = self.now;
        if give_up {
            next.phase = InPlacePhase::Failed;
        } else {
            next.phase = InPlacePhase::Refreshing;
            next.pod = names::action_pod_name(names::ACTION_SNAP_REFRESH);
        }
        self.patch_machine(
            &m.name,
            machines::annotation_patch(names::ANNOTATION_IN_PLACE, Some(serde_json::to_string(&next)?)),
        )
        .await?;
        self.ctx.metrics.action(names::ACTION_SNAP_REFRESH, "failed");
        let what = if give_up { "giving up" } else { "retrying" };
        self.ctx
            .events
            .warning(
                self.mcp,
                if give_up {
                    "InPlaceUpgradeFailed"
                } else {
                    "InPlaceUpgradeRetrying"
                },
                format!("machine {}: {message} (attempt {}); {what}", m.name, next.failures),
            )
            .await;
        Ok((
            Some(format!("machine {}: {message}", m.name)),
            Some(Duration::from_secs(5)),
        ))
    }

    /// A snap refresh pod (or what it needs) the workload cluster refused for good counts as
    /// a failed attempt (the upgrade ends after the last one); any other error fails the
    /// reconcile (retried with backoff).
    async fn snap_refresh_refused(
        &self,
        e: Error,
        m: &MachineView,
        st: &InPlaceState,
    ) -> Result<(Option<String>, Option<Duration>)> {
        let Some(why) = e.refused_by_workload() else {
            return Err(e);
        };
        let message = format!(
            "the workload cluster refused the snap refresh pod for node {} (namespace {}): {why}",
            st.node,
            names::ACTION_NAMESPACE
        );
        let give_up = st.failures + 1 >= self.limits().attempts;
        self.in_place_failed(m, st, message, give_up).await
    }

    async fn start_in_place(
        &self,
        cp: &ControlPlane,
        m: &MachineView,
        track: mk8s_api::version::Track,
        w: Option<&Workload>,
        extra: &mut status::Extra,
    ) -> Result<()> {
        let Some(w) = w else {
            extra.in_flight.push(format!(
                "machine {}: waiting for the workload cluster to upgrade it in place",
                m.name
            ));
            return Ok(());
        };
        let Some(node) = cp.node_of(m) else {
            extra.in_flight.push(format!(
                "machine {}: waiting for its Node to upgrade it in place",
                m.name
            ));
            return Ok(());
        };
        let channel = match upgrade::refresh_channel(cp, m, track) {
            Ok(c) => c,
            Err(e) => {
                extra
                    .in_flight
                    .push(format!("machine {}: cannot upgrade in place: {e}", m.name));
                return Ok(());
            }
        };
        let st = InPlaceState {
            track: track.to_string(),
            channel: channel.channel.clone(),
            classic: channel.classic,
            phase: InPlacePhase::Refreshing,
            pod: names::action_pod_name(names::ACTION_SNAP_REFRESH),
            node: node.name.clone(),
            since: self.now,
            failures: 0,
            message: None,
        };
        self.patch_machine(
            &m.name,
            machines::annotation_patch(names::ANNOTATION_IN_PLACE, Some(serde_json::to_string(&st)?)),
        )
        .await?;
        if let Err(e) = self.start_snap_refresh(w, &m.name, &st).await {
            let (note, _) = self.snap_refresh_refused(e, m, &st).await?;
            extra.in_flight.extend(note);
            return Ok(());
        }
        self.ctx
            .events
            .normal(
                self.mcp,
                "InPlaceUpgradeStarted",
                format!(
                    "refreshing node {} of machine {} to snap channel {}",
                    st.node, m.name, st.channel
                ),
            )
            .await;
        extra.in_flight.push(refreshing_note(&m.name, &st));
        Ok(())
    }

    async fn delete_machine(&self, name: &str, why: &DeleteWhy) -> Result<()> {
        if let DeleteWhy::Remediation(data) = why {
            self.set_mcp_annotation(
                names::ANNOTATION_REMEDIATION_IN_PROGRESS,
                Some(serde_json::to_string(data)?),
            )
            .await?;
        }
        match self.machines_api().delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                if matches!(why, DeleteWhy::Remediation(_)) {
                    // No remediation is in flight after all: a record left behind would make
                    // every later reconcile wait for this machine to go, and none would delete
                    // it. (Written first so that a crash right after the deletion keeps it.)
                    if let Err(undo) = self
                        .set_mcp_annotation(names::ANNOTATION_REMEDIATION_IN_PROGRESS, None)
                        .await
                    {
                        warn!(machine = %name, error = %undo, "could not withdraw the remediation record");
                    }
                }
                return Err(e.into());
            }
        }
        self.ctx.expect(&self.key, Expect::Gone(name.to_string()));
        let (reason, note) = match why {
            DeleteWhy::ScaleDown => ("ScalingDown", format!("deleting machine {name} to scale down")),
            DeleteWhy::Rollout => (
                "RollingOut",
                format!("deleting out-of-date machine {name} (maxSurge 0)"),
            ),
            DeleteWhy::Remediation(d) => {
                self.ctx
                    .metrics
                    .remediations
                    .get_or_create(&crate::metrics::CpLabels {
                        namespace: self.ns.clone(),
                        name: self.name.clone(),
                    })
                    .inc();
                (
                    "Remediating",
                    format!(
                        "deleting unhealthy machine {name} (remediation {} in a row)",
                        d.retry_count.saturating_add(1)
                    ),
                )
            }
        };
        self.ctx.events.normal(self.mcp, reason, note).await;
        Ok(())
    }

    /// Creates the infrastructure machine, the MicroK8sConfig and the Machine; removes what it
    /// created when a later step fails.
    async fn create_machine(
        &self,
        cp: &ControlPlane,
        cluster: &Cluster,
        template: Option<&DynamicObject>,
        version: &str,
        failure_domain: Option<&str>,
        why: &CreateWhy,
    ) -> std::result::Result<(), (&'static str, String)> {
        let client = &self.ctx.rt.client;
        let uid = self.mcp.uid().unwrap_or_default();
        let uid = uid.as_str();
        let t = &cp.desired.template;
        let cluster_name = cluster.name_any();
        let suffix = names::random_suffix();
        let name = names::with_suffix(&self.name, &suffix);
        let infra_name = names::with_suffix(&t.name, &suffix);
        let infra_err = |e: Error| {
            (
                "InfrastructureTemplateCloningFailed",
                format!("cloning {} {}: {e}", t.kind, t.name),
            )
        };
        // The copy this reconcile read already, else a fresh one.
        let template = match template {
            Some(o) => o.clone(),
            None => infra::get_template(&self.ctx.kinds, client, &self.ns, t)
                .await
                .map_err(infra_err)?,
        };
        let labels: serde_json::Map<String, serde_json::Value> = machines::required_labels(&cluster_name, &self.name)
            .into_iter()
            .map(|(k, v)| (k, json!(v)))
            .collect();
        let annotations: serde_json::Map<String, serde_json::Value> =
            [(names::ANNOTATION_CREATED_BY.to_string(), json!(self.name))]
                .into_iter()
                .collect();
        let owner = machines::control_plane_owner(&self.name, uid, false, false);
        let infra_ar = infra::clone_template(
            &self.ctx.kinds,
            client,
            t,
            &template,
            &infra::CloneSpec {
                namespace: &self.ns,
                name: &infra_name,
                labels: &labels,
                annotations: &annotations,
                owner: &owner,
            },
        )
        .await
        .map_err(|e| {
            // The served versions may have changed (a provider upgrade): resolve both kinds
            // again next time.
            self.ctx.kinds.forget(&t.group, &t.kind);
            self.ctx.kinds.forget(&t.group, &infra::machine_kind(&t.kind));
            infra_err(e)
        })?;
        let remediation_for = cp.remediation_in_progress.clone();
        let n = NewMachine {
            name: &name,
            namespace: &self.ns,
            cluster: &cluster_name,
            mcp: (&self.name, uid),
            version,
            failure_domain,
            infra: (&infra_ar.group, &infra_ar.api_version, &infra_ar.kind, &infra_name),
            remediation_for: remediation_for.as_ref(),
        };
        let configs: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &self.ns,
            &kube::core::ApiResource::erase::<mk8s_api::MicroK8sConfig>(&()),
        );
        let cfg_obj: DynamicObject = serde_json::from_value(machines::config_object(&n, &cp.desired.config))
            .map_err(|e| ("BootstrapTemplateCloningFailed", e.to_string()))?;
        if let Err(e) = configs.create(&pp(), &cfg_obj).await {
            let _ = infra::delete(client, &self.ns, &infra_ar, &infra_name).await;
            return Err((
                "BootstrapTemplateCloningFailed",
                format!("creating MicroK8sConfig {name}: {e}"),
            ));
        }
        let m_obj: DynamicObject = serde_json::from_value(machines::machine_object(self.ctx.rt.core_version, &n))
            .map_err(|e| ("MachineGenerationFailed", e.to_string()))?;
        if let Err(e) = self.machines_api().create(&pp(), &m_obj).await {
            // A timeout or a server error may come after the API server stored the Machine:
            // then its config and infrastructure machine stay (else it could never
            // provision); when in doubt the sweep of unreferenced objects decides later.
            let stored = self.machines_api().get_opt(&name).await;
            if !matches!(stored, Ok(Some(_))) {
                if matches!(stored, Ok(None)) {
                    let _ = configs.delete(&name, &DeleteParams::background()).await;
                    let _ = infra::delete(client, &self.ns, &infra_ar, &infra_name).await;
                }
                return Err(("MachineGenerationFailed", format!("creating Machine {name}: {e}")));
            }
        }
        self.ctx.expect(&self.key, Expect::Created(name.clone()));
        if remediation_for.is_some() {
            let _ = self
                .set_mcp_annotation(names::ANNOTATION_REMEDIATION_IN_PROGRESS, None)
                .await;
        }
        // Template metadata right away (the next reconciles keep it in sync).
        let meta = machines::template_metadata(&self.mcp.spec);
        let settings = machines::machine_settings(&self.mcp.spec);
        let core = self.ctx.rt.core_version;
        let s = machines::settings_json(core, &settings);
        let ssa = PatchParams::apply(names::METADATA_FIELD_MANAGER).force();
        let has_meta = !meta.labels.is_empty() || !meta.annotations.is_empty();
        // Nothing to apply (the common case): no request.
        if has_meta || !s.is_empty() {
            let _ = self
                .machines_api()
                .patch(
                    &name,
                    &ssa,
                    &Patch::Apply(machines::metadata_apply(
                        &core.api_version(),
                        "Machine",
                        &name,
                        &meta,
                        Some(&s),
                    )),
                )
                .await;
        }
        if has_meta {
            let _ = configs
                .patch(
                    &name,
                    &ssa,
                    &Patch::Apply(machines::metadata_apply(
                        &format!("{}/v1beta1", names::BOOTSTRAP_GROUP),
                        names::BOOTSTRAP_KIND,
                        &name,
                        &meta,
                        None,
                    )),
                )
                .await;
            let infra_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &self.ns, &infra_ar);
            let _ = infra_api
                .patch(
                    &infra_name,
                    &ssa,
                    &Patch::Apply(machines::metadata_apply(
                        &infra_ar.api_version,
                        &infra_ar.kind,
                        &infra_name,
                        &meta,
                        None,
                    )),
                )
                .await;
        }
        let why = match why {
            CreateWhy::ScaleUp if cp.machines.is_empty() => "the first control plane machine".to_string(),
            CreateWhy::ScaleUp if remediation_for.is_some() => "to replace a remediated machine".to_string(),
            CreateWhy::ScaleUp => format!("to scale up to {} replicas", cp.desired.replicas),
            CreateWhy::Rollout => "to replace an out-of-date machine".to_string(),
        };
        let fd = failure_domain
            .map(|f| format!(" in failure domain {f}"))
            .unwrap_or_default();
        self.ctx
            .events
            .normal(
                self.mcp,
                "MachineCreated",
                format!("created machine {name}{fd} ({why})"),
            )
            .await;
        Ok(())
    }

    /// Propagates `machineTemplate.metadata` and Machine settings in place, and the labels and
    /// hook every control plane Machine must carry (also on adopted ones).
    async fn propagate(
        &self,
        raw: &[&Arc<CpMachine>],
        cp: &ControlPlane,
        infra_objects: &std::collections::HashMap<String, (kube::core::ApiResource, ObjectMeta)>,
    ) {
        let core = self.ctx.rt.core_version;
        let meta = machines::template_metadata(&self.mcp.spec);
        let settings = machines::machine_settings(&self.mcp.spec);
        let wanted = machines::settings_json(core, &settings);
        let ssa = PatchParams::apply(names::METADATA_FIELD_MANAGER).force();
        let client = &self.ctx.rt.client;
        // Metadata the API server would refuse (`SpecValid` says so) is not sent at all.
        let meta_valid = crate::spec::machine_template_problem(&self.mcp.spec).is_none();
        for m in raw.iter().filter(|m| m.metadata.deletion_timestamp.is_none()) {
            let name = m.name_any();
            if meta_valid && machines::machine_needs_metadata_apply(core, m, &meta, &settings) {
                let body = machines::metadata_apply(&core.api_version(), "Machine", &name, &meta, Some(&wanted));
                if let Err(e) = self.machines_api().patch(&name, &ssa, &Patch::Apply(body)).await {
                    warn!(machine = %name, error = %e, "propagating metadata to the Machine");
                }
            }
            // Required labels and our hook (adopted Machines lack them).
            let labels = m.metadata.labels.clone().unwrap_or_default();
            let has_hook = m
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(names::ANNOTATION_PRE_TERMINATE_HOOK));
            if labels.get(consts::LABEL_CONTROL_PLANE_NAME) != Some(&self.name) || !has_hook {
                let patch = json!({"metadata": {
                    "labels": {consts::LABEL_CONTROL_PLANE_NAME: self.name},
                    "annotations": {names::ANNOTATION_PRE_TERMINATE_HOOK: names::PRE_TERMINATE_HOOK_OWNER},
                }});
                if let Err(e) = self.patch_machine(&name, patch).await {
                    warn!(machine = %name, error = %e, "labelling the Machine");
                }
            }
            let view = cp.machine(&name);
            if !view.is_some_and(|v| v.ours) {
                continue;
            }
            // The MicroK8sConfig (from the store).
            if let Some(cfg_ref) = m.spec.base.bootstrap.config_ref.as_ref()
                && let Some(cfg) = self.ctx.configs.get(&ObjectRef::new(&cfg_ref.name).within(&self.ns))
                && meta_valid
                && machines::needs_metadata_apply(&cfg.metadata, &meta, None)
            {
                let api: Api<mk8s_api::MicroK8sConfig> = Api::namespaced(client.clone(), &self.ns);
                let body = machines::metadata_apply(
                    &format!("{}/v1beta1", names::BOOTSTRAP_GROUP),
                    names::BOOTSTRAP_KIND,
                    &cfg_ref.name,
                    &meta,
                    None,
                );
                if let Err(e) = api.patch(&cfg_ref.name, &ssa, &Patch::Apply(body)).await {
                    warn!(config = %cfg_ref.name, error = %e, "propagating metadata to the MicroK8sConfig");
                }
            }
            // The infrastructure machine (read while computing the view).
            if let Some((ar, infra_meta)) = infra_objects.get(&name)
                && meta_valid
                && machines::needs_metadata_apply(infra_meta, &meta, None)
            {
                let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &self.ns, ar);
                let infra_name = infra_meta.name.clone().unwrap_or_default();
                let body = machines::metadata_apply(&ar.api_version, &ar.kind, &infra_name, &meta, None);
                if let Err(e) = api.patch(&infra_name, &ssa, &Patch::Apply(body)).await {
                    warn!(infra = %infra_name, error = %e, "propagating metadata to the infrastructure machine");
                }
            }
        }
    }

    /// Sets each Machine's `UpToDate` condition, and `OwnerRemediated` when remediation is
    /// refused or deferred.
    async fn machine_conditions(&self, cp: &ControlPlane, p: &Plan, raw: &[&Arc<CpMachine>]) {
        let core = self.ctx.rt.core_version;
        let ssa = PatchParams::apply(names::FIELD_MANAGER).force();
        for m in raw.iter().filter(|m| m.metadata.deletion_timestamp.is_none()) {
            let name = m.name_any();
            let Some(view) = cp.machine(&name) else { continue };
            let reasons = upgrade::outdated(cp, view);
            let mut wanted = vec![if let Some(st) = &view.in_place {
                Condition::false_(
                    types::UP_TO_DATE,
                    "Updating",
                    format!("upgrading in place to Kubernetes {}", st.track),
                )
            } else if reasons.is_empty() {
                Condition::true_(types::UP_TO_DATE, "UpToDate", "")
            } else {
                Condition::false_(
                    types::UP_TO_DATE,
                    "NotUpToDate",
                    reasons
                        .iter()
                        .map(upgrade::Outdated::describe)
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            }];
            if let RemediationDecision::Blocked {
                machine,
                reason,
                message,
                ..
            } = &p.remediation
                && machine == &name
            {
                wanted.push(Condition::false_(types::OWNER_REMEDIATED, reason, message.clone()));
            }
            let current = machines::v1beta2_conditions(m, core);
            let Some(conds) = machines::machine_conditions(&current, wanted, m.metadata.generation, &self.tnow) else {
                continue;
            };
            let body = machines::conditions_apply(core, &name, &conds);
            if let Err(e) = self.machines_api().patch_status(&name, &ssa, &Patch::Apply(body)).await {
                warn!(machine = %name, error = %e, "setting the Machine's conditions");
            }
        }
    }

    /// Deletes what a crash between creation steps left behind, and finished node action pods
    /// nobody tracks (at most every five minutes per control plane).
    async fn sweep(&self, cp: &ControlPlane, desired: &Desired, raw: &[&Arc<CpMachine>], w: Option<&Workload>) {
        const EVERY: Duration = Duration::from_secs(300);
        const MIN_AGE: i64 = 120;
        {
            let Ok(mut sweeps) = self.ctx.sweeps.lock() else { return };
            if sweeps.get(&self.key).is_some_and(|t| t.elapsed() < EVERY) {
                return;
            }
            sweeps.insert(self.key.clone(), std::time::Instant::now());
        }
        let old_enough = |t: Option<&Time>| t.is_some_and(|t| self.now.as_second() - t.0.as_second() > MIN_AGE);
        let ours = |meta: &kube::core::ObjectMeta| {
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(names::ANNOTATION_CREATED_BY))
                .is_some_and(|v| v == &self.name)
                && kubeconfig::owned_by_control_plane(meta.owner_references.as_ref(), &self.name)
        };
        let all_machines = self.ctx.machines.state();
        let referenced_configs: Vec<String> = all_machines
            .iter()
            .filter_map(|m| m.spec.base.bootstrap.config_ref.as_ref().map(|r| r.name.clone()))
            .collect();
        let referenced_infra: Vec<String> = all_machines
            .iter()
            .filter_map(|m| m.spec.base.infrastructure_ref.as_ref().map(|r| r.name.clone()))
            .collect();
        let client = &self.ctx.rt.client;
        let configs: Api<mk8s_api::MicroK8sConfig> = Api::namespaced(client.clone(), &self.ns);
        for c in self.ctx.configs.state() {
            if c.metadata.namespace.as_deref() == Some(self.ns.as_str())
                && ours(&c.metadata)
                && old_enough(c.metadata.creation_timestamp.as_ref())
                && !referenced_configs.contains(&c.name_any())
            {
                info!(config = %c.name_any(), "deleting an orphaned MicroK8sConfig");
                let _ = configs.delete(&c.name_any(), &DeleteParams::background()).await;
            }
        }
        let kind = infra::machine_kind(&desired.template.kind);
        if let Ok(ar) = self.ctx.kinds.resolve(client, &desired.template.group, &kind).await {
            let cluster = cp.cluster.as_str();
            let orphans = self
                .ctx
                .infra
                .list(&ar, &self.ns, |m| {
                    m.labels
                        .as_ref()
                        .and_then(|l| l.get(consts::LABEL_CLUSTER_NAME))
                        .is_some_and(|c| c == cluster)
                        && ours(m)
                        && old_enough(m.creation_timestamp.as_ref())
                        && m.name.as_ref().is_some_and(|n| !referenced_infra.contains(n))
                })
                .await;
            match orphans {
                Ok(orphans) => {
                    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &self.ns, &ar);
                    for name in orphans.into_iter().filter_map(|m| m.name) {
                        info!(infra = %name, "deleting an orphaned infrastructure machine");
                        let _ = api.delete(&name, &DeleteParams::background()).await;
                    }
                }
                Err(e) => debug!(error = %e, "listing infrastructure machines"),
            }
        }
        let _ = raw;
        if let Some(w) = w {
            let tracked: Vec<String> = cp
                .machines
                .iter()
                .flat_map(|m| {
                    m.in_place
                        .iter()
                        .map(|s| s.pod.clone())
                        .chain(m.removal.iter().map(|s| s.pod.clone()))
                })
                .collect();
            for p in w.pods.state() {
                if !tracked.contains(&p.name_any()) && old_enough(p.metadata.creation_timestamp.as_ref()) {
                    info!(pod = %p.name_any(), "deleting an untracked node action pod");
                    let _ = w.delete_pod(&p.name_any()).await;
                }
            }
        }
    }

    fn report(&self, cp: &ControlPlane, p: &Plan) {
        let m = &self.ctx.metrics;
        let labels = |state: &str| crate::metrics::MachineLabels {
            namespace: self.ns.clone(),
            name: self.name.clone(),
            state: state.into(),
        };
        let count =
            |f: &dyn Fn(&MachineView) -> bool| i64::try_from(cp.machines.iter().filter(|x| f(x)).count()).unwrap_or(0);
        m.machines.get_or_create(&labels("ready")).set(count(&|x| x.ready));
        m.machines.get_or_create(&labels("not_ready")).set(count(&|x| !x.ready));
        m.machines
            .get_or_create(&labels("provisioning"))
            .set(count(&|x| !x.deleting && x.node_ref.is_none()));
        m.machines
            .get_or_create(&labels("deleting"))
            .set(count(&|x| x.deleting));
        m.machines
            .get_or_create(&labels("outdated"))
            .set(i64::try_from(p.outdated.len()).unwrap_or(0));
        m.machines
            .get_or_create(&labels("upgrading"))
            .set(count(&|x| x.in_place.is_some()));
        let cpl = crate::metrics::CpLabels {
            namespace: self.ns.clone(),
            name: self.name.clone(),
        };
        m.workload_reachable.get_or_create(&cpl).set(i64::from(cp.reachable()));
        m.desired_replicas
            .get_or_create(&cpl)
            .set(i64::from(cp.desired.replicas));
        m.remediation_blocked
            .get_or_create(&cpl)
            .set(i64::from(matches!(p.remediation, RemediationDecision::Blocked { .. })));
    }
}

/// What an in-place refresh in flight is doing, for conditions.
fn refreshing_note(machine: &str, st: &InPlaceState) -> String {
    format!(
        "machine {machine}: refreshing the snap of node {} to {}",
        st.node, st.channel
    )
}
