//! The `MicroK8sConfig` controller: gathers state from caches, asks [`crate::decide`] for the
//! next step, applies it, patches status and records Events.
//!
//! Event-driven: MicroK8sConfigs, Machines (→ their config; control plane Machines also wake
//! the waiting configs of their cluster, so workers wake when the initializing machine gets
//! its address), Clusters (→ the configs of their Machines, so control plane machines waiting
//! for the initialisation wake on it), data Secrets (owned) and init
//! lock ConfigMaps. Nothing polls; only backoff after an error or an invalid input requeues.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt, future};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, PartialObjectMeta};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use mk8s_api::capi::{Cluster, ClusterExt, Machine, MachineExt};
use mk8s_api::consts;
use mk8s_api::{MicroK8sConfig, MicroK8sConfigStatus};
use mk8s_pki::KeyAlgorithm;
use mk8s_runtime::backoff::WatchBackoff;
use mk8s_runtime::secret_cache::{SecretCache, secret_cache_slimmed};
use mk8s_runtime::slim::slim_all;
use mk8s_runtime::wakes::{Triggers, Wakes};
use mk8s_runtime::{Backoff, Runtime, RuntimeError};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::decide::{self, DataSecret, Facts, Generate, Owner, Plan, Role, reason};
use crate::error::Error;
use crate::status::{self, CaCondition, Outcome};
use crate::{lock, secrets};

/// Controller name (logs, metrics, Events).
pub const CONTROLLER: &str = "microk8sconfig";
/// Field manager of our writes.
pub const FIELD_MANAGER: &str = "microk8s-bootstrap";

/// Shared state of reconciles.
pub struct Context {
    rt: Runtime,
    recorder: Recorder,
    machines: Store<Machine>,
    clusters: Store<Cluster>,
    /// The controller's own MicroK8sConfig store (roles recorded on the configs).
    configs: Store<MicroK8sConfig>,
    /// Every Secret's metadata, and copies of the cluster Secrets (CA, join token, auth token)
    /// its watch vouches for.
    secrets: SecretCache,
    /// Cluster Secrets being created (one create at a time per Secret).
    creating: secrets::Creating,
    locks: Store<PartialObjectMeta<ConfigMap>>,
    /// Init locks already deleted (their watch event may lag the delete).
    released_locks: lock::Released,
    machine_ar: ApiResource,
    cluster_ar: ApiResource,
    backoff: Backoff,
    /// What woke each config's next reconcile.
    wakes: Arc<Wakes>,
    /// Becomes true once every cache has listed. (kube's `Store::wait_until_ready` wakes only
    /// one of several concurrent waiters, so one task waits and publishes here.)
    caches_ready: tokio::sync::watch::Receiver<bool>,
}

fn is_our_config_ref(r: &mk8s_api::capi::ObjRef) -> bool {
    r.is("bootstrap.cluster.x-k8s.io", "MicroK8sConfig")
}

fn config_ref_of(m: &Machine) -> Option<ObjectRef<MicroK8sConfig>> {
    let r = m.spec.bootstrap.config_ref.as_ref().filter(|r| is_our_config_ref(r))?;
    let ns = m.metadata.namespace.as_deref()?;
    Some(ObjectRef::new(&r.name).within(ns))
}

/// Configs of the Machines of a cluster; `only_unjoined` keeps those of Machines without
/// bootstrap data or without a node yet (waiting to render, or joining through machines that
/// may go away).
fn configs_of_cluster(
    machines: &Store<Machine>,
    ns: &str,
    cluster: &str,
    only_unjoined: bool,
) -> Vec<ObjectRef<MicroK8sConfig>> {
    machines
        .state()
        .iter()
        .filter(|m| m.metadata.namespace.as_deref() == Some(ns) && m.spec.cluster_name == cluster)
        .filter(|m| !only_unjoined || m.spec.bootstrap.data_secret_name.is_none() || m.node_name().is_none())
        .filter_map(|m| config_ref_of(m))
        .collect()
}

/// Runs the controller until the runtime shuts down.
pub async fn run(rt: Runtime) -> Result<(), RuntimeError> {
    let client = rt.client.clone();
    let machine_ar = rt.core_version.machine();
    let cluster_ar = rt.core_version.cluster();
    let wc = rt.watcher_config();

    let machine_writer = reflector::store::Writer::<Machine>::new(machine_ar.clone());
    let machines = machine_writer.as_reader();
    let cluster_writer = reflector::store::Writer::<Cluster>::new(cluster_ar.clone());
    let clusters = cluster_writer.as_reader();
    let (lock_store, lock_writer) = reflector::store::<PartialObjectMeta<ConfigMap>>();

    // Woken only when what a config reads of a Machine changes: CAPI rewrites a Machine's
    // conditions a dozen times while it comes up, and a control plane Machine's woke every
    // config of its cluster.
    let machine_stream = mk8s_runtime::changed::changed_objects(
        watcher(rt.api_with::<Machine>(&machine_ar), wc.clone())
            .backoff(WatchBackoff::management())
            .modify(|m: &mut Machine| slim_all(m.meta_mut()))
            .reflect(machine_writer),
        mk8s_api::capi::machine_fingerprint,
    );
    // Woken only when what a config reads of its Cluster changes: CAPI rewrites a Cluster's
    // conditions some thirty times while it comes up, and each woke every config of it.
    let cluster_stream = mk8s_runtime::changed::changed_objects(
        watcher(rt.api_with::<Cluster>(&cluster_ar), wc.clone())
            .backoff(WatchBackoff::management())
            .modify(|c: &mut Cluster| slim_all(c.meta_mut()))
            .reflect(cluster_writer),
        mk8s_api::capi::cluster_fingerprint,
    );
    let labelled = watcher::Config::default().labels(consts::LABEL_CLUSTER_NAME);
    // Every Secret's metadata (slimmed), not only labelled ones: the cache then proves that a
    // cluster Secret or a data Secret is absent (one a user created without labels included),
    // so creating one needs no GET first. A data Secret changing wakes its config.
    let (secrets, secret_feed) = secret_cache_slimmed(client.clone(), secrets::slim_copy);
    let wakes = Arc::new(Wakes::default());
    let (owned_tx, owned_rx) = futures::channel::mpsc::unbounded();
    let owned_tx = Triggers::new(owned_tx, wakes.clone());
    let secret_task = tokio::spawn(secret_feed.run(rt.api(), move |s| {
        if let Some(r) = controlling_config(&s.metadata) {
            owned_tx.send(r, "secrets");
        }
    }));
    let lock_stream = watcher(rt.api::<PartialObjectMeta<ConfigMap>>(), labelled)
        .backoff(WatchBackoff::management())
        .modify(|s: &mut PartialObjectMeta<ConfigMap>| slim_all(s.meta_mut()))
        .reflect(lock_writer)
        .touched_objects();

    // Managed fields and last-applied copies are dropped before objects enter the stores:
    // nothing here reads them, and they can outweigh the rest of an object.
    let config_writer = reflector::store::Writer::<MicroK8sConfig>::default();
    let configs = config_writer.as_reader();
    let config_stream = watcher(rt.api::<MicroK8sConfig>(), wc.clone())
        .backoff(WatchBackoff::management())
        .modify(|c: &mut MicroK8sConfig| slim_all(c.meta_mut()))
        .reflect(config_writer)
        .inspect_ok({
            let wakes = wakes.clone();
            move |ev| match ev {
                watcher::Event::Apply(c) | watcher::Event::InitApply(c) => wakes.trigger(&key_of(c), "microk8sconfigs"),
                watcher::Event::Delete(c) => wakes.forget(&key_of(c)),
                _ => {}
            }
        })
        .applied_objects();
    let controller = Controller::for_stream(config_stream, configs.clone())
        .with_config(ControllerConfig::default().concurrency(rt.flags.concurrency));

    let (ready_tx, caches_ready) = tokio::sync::watch::channel(false);
    {
        let (m, c, s, l) = (
            machines.clone(),
            clusters.clone(),
            secrets.watched().clone(),
            lock_store.clone(),
        );
        tokio::spawn(async move {
            let _ = futures::join!(
                m.wait_until_ready(),
                c.wait_until_ready(),
                s.wait_until_ready(),
                l.wait_until_ready()
            );
            let _ = ready_tx.send(true);
        });
    }
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), rt.reporter()),
        rt: rt.clone(),
        machines: machines.clone(),
        clusters: clusters.clone(),
        configs: configs.clone(),
        secrets,
        creating: secrets::Creating::default(),
        locks: lock_store,
        released_locks: lock::Released::default(),
        machine_ar: machine_ar.clone(),
        cluster_ar: cluster_ar.clone(),
        backoff: Backoff::default(),
        wakes: wakes.clone(),
        caches_ready,
    });

    let m_store = machines.clone();
    let m_store2 = machines.clone();
    let m_store3 = machines.clone();
    let noted = move |source: &'static str, refs: Vec<ObjectRef<MicroK8sConfig>>| {
        for r in &refs {
            wakes.trigger(&mk8s_runtime::wakes::key_of(r), source);
        }
        refs
    };
    let (noted2, noted3) = (noted.clone(), noted.clone());
    let shutdown = rt.shutdown.clone();
    tokio::spawn(report_states(configs.clone(), rt.metrics.clone(), rt.shutdown.clone()));
    controller
        .watches_stream_with(
            machine_stream,
            move |m: Machine| {
                let mut out: Vec<ObjectRef<MicroK8sConfig>> = config_ref_of(&m).into_iter().collect();
                // A control plane machine changing (addresses, phase, deletion) may unblock the
                // configs of its cluster that wait for join addresses or the init lock, or
                // strand those whose nodes have yet to join through it.
                if m.is_control_plane()
                    && let Some(ns) = m.metadata.namespace.as_deref()
                {
                    out.extend(configs_of_cluster(&m_store, ns, &m.spec.cluster_name, true));
                }
                noted("machines", out)
            },
            machine_ar,
        )
        .watches_stream_with(
            cluster_stream,
            move |c: Cluster| {
                let ns = c.metadata.namespace.clone().unwrap_or_default();
                noted2(
                    "clusters",
                    configs_of_cluster(&m_store2, &ns, c.metadata.name.as_deref().unwrap_or_default(), false),
                )
            },
            cluster_ar,
        )
        .reconcile_on(owned_rx)
        .watches_stream(lock_stream, move |cm: PartialObjectMeta<ConfigMap>| {
            let ns = cm.metadata.namespace.clone().unwrap_or_default();
            let cluster = cm.labels().get(consts::LABEL_CLUSTER_NAME).cloned().unwrap_or_default();
            if cm.name_any() == consts::init_lock_configmap(&cluster) {
                noted3("init_lock", configs_of_cluster(&m_store3, &ns, &cluster, true))
            } else {
                vec![]
            }
        })
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|res| {
            match res {
                Ok((obj, _)) => debug!(object = %obj, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile failed"),
            }
            future::ready(())
        })
        .await;
    secret_task.abort();
    info!("MicroK8sConfig controller stopped");
    Ok(())
}

/// The MicroK8sConfig that controls an object (a data Secret), from its owner references.
fn controlling_config(meta: &ObjectMeta) -> Option<ObjectRef<MicroK8sConfig>> {
    let ns = meta.namespace.as_deref()?;
    meta.owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|o| {
            o.controller == Some(true)
                && o.kind == MicroK8sConfig::kind(&())
                && o.api_version.split('/').next() == Some(&*MicroK8sConfig::group(&()))
        })
        .map(|o| ObjectRef::new(&o.name).within(ns))
}

fn key_of(cfg: &MicroK8sConfig) -> String {
    format!("{}/{}", cfg.namespace().unwrap_or_default(), cfg.name_any())
}

async fn reconcile(cfg: Arc<MicroK8sConfig>, ctx: Arc<Context>) -> Result<Action, Error> {
    let timer = ctx.rt.metrics.start(CONTROLLER);
    ctx.rt.metrics.cause(CONTROLLER, ctx.wakes.take(&key_of(&cfg)));
    let result = match reconcile_inner(&cfg, &ctx).await {
        // Deleted while this reconcile ran: done, not a failure to retry and warn about.
        Err(e) if e.is_config_gone(&cfg.name_any()) => {
            debug!(config = %key_of(&cfg), "config deleted during its reconcile");
            Ok(Action::await_change())
        }
        Err(e) if e.is_config_conflict(&cfg.name_any()) => {
            debug!(config = %key_of(&cfg), "config changed since it was read; reconciling again from the newer copy");
            Ok(Action::await_change())
        }
        r => r,
    };
    timer.finish(match &result {
        Ok(a) if *a == Action::await_change() => "success",
        Ok(_) => "requeue",
        Err(_) => "error",
    });
    match &result {
        Ok(a) if *a == Action::await_change() => ctx.backoff.reset(&key_of(&cfg)),
        // Every requeue but one (a lock given back, 200 ms) is the backoff of a wait on input.
        Ok(_) => ctx.wakes.timer(&key_of(&cfg), "timer_retry"),
        Err(_) => {}
    }
    result
}

fn error_policy(cfg: Arc<MicroK8sConfig>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.rt.metrics.error(CONTROLLER, err.metric_label());
    let delay = ctx.backoff.fail(&key_of(&cfg));
    ctx.wakes.timer(&key_of(&cfg), "timer_error_retry");
    warn!(config = %key_of(&cfg), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn wait_for_caches(ctx: &Context) {
    // Decisions (e.g. "is the data Secret gone?") must not be taken on a cache still listing.
    let mut rx = ctx.caches_ready.clone();
    let _ = rx.wait_for(|ready| *ready).await;
}

fn owner<'a>(cfg: &MicroK8sConfig, ctx: &Context, machine_slot: &'a mut Option<Arc<Machine>>) -> Owner<'a> {
    let ns = cfg.namespace().unwrap_or_default();
    let refs = cfg.metadata.owner_references.as_deref().unwrap_or_default();
    let in_group = |r: &&OwnerReference| r.api_version.split('/').next() == Some(mk8s_api::capi::GROUP);
    if let Some(r) = refs.iter().filter(in_group).find(|r| r.kind == "Machine") {
        let key = ObjectRef::new_with(&r.name, ctx.machine_ar.clone()).within(&ns);
        *machine_slot = ctx.machines.get(&key);
        return match machine_slot.as_deref() {
            Some(m) => Owner::Machine(m),
            None => Owner::Missing(r.name.clone()),
        };
    }
    if let Some(r) = refs
        .iter()
        .filter(|r| r.kind == "MachinePool")
        .find(|r| r.api_version.contains("cluster.x-k8s.io"))
    {
        return Owner::MachinePool(r.name.clone());
    }
    // Not owned yet: CAPI makes the Machine whose spec.bootstrap.configRef names this config
    // its owner, a second or two after creating it (measured by `mk8s-bench available`); that
    // Machine is the owner-to-be, so it is used at once when it is the only one.
    let me = ObjectRef::<MicroK8sConfig>::new(&cfg.name_any()).within(&ns);
    let mut claimants = ctx
        .machines
        .state()
        .into_iter()
        .filter(|m| config_ref_of(m).as_ref() == Some(&me));
    if let (Some(m), None) = (claimants.next(), claimants.next()) {
        *machine_slot = Some(m);
        if let Some(m) = machine_slot.as_deref() {
            return Owner::Machine(m);
        }
    }
    Owner::None
}

fn data_secret(cfg: &MicroK8sConfig, ctx: &Context) -> DataSecret {
    let name = cfg.name_any();
    let status_name = cfg.status.as_ref().and_then(|s| s.data_secret_name.clone());
    if status_name.as_ref().is_some_and(|n| *n != name) {
        // A user-supplied dataSecretName (recovered from the Machine): not ours, never regenerated.
        return DataSecret::Foreign;
    }
    let ns = cfg.namespace().unwrap_or_default();
    let key = ObjectRef::new(&name).within(&ns);
    match ctx.secrets.watched().get(&key) {
        // Created by an earlier reconcile a moment ago; the watch has yet to show it.
        None if ctx.secrets.vouched(&ns, &name).is_some() => DataSecret::Ours,
        None => DataSecret::Absent,
        Some(s) if controlled_by(&s.metadata, cfg) => DataSecret::Ours,
        Some(_) => DataSecret::Foreign,
    }
}

fn controlled_by(meta: &ObjectMeta, cfg: &MicroK8sConfig) -> bool {
    let uid = cfg.uid().unwrap_or_default();
    meta.owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

async fn reconcile_inner(cfg: &MicroK8sConfig, ctx: &Context) -> Result<Action, Error> {
    wait_for_caches(ctx).await;
    let ns = cfg.namespace().unwrap_or_default();
    let mut version = cfg.metadata.resource_version.clone();
    let mut machine_slot = None;
    let owner = owner(cfg, ctx, &mut machine_slot);
    let cluster = match &owner {
        Owner::Machine(m) if !m.spec.cluster_name.is_empty() => ctx
            .clusters
            .get(&ObjectRef::new_with(&m.spec.cluster_name, ctx.cluster_ar.clone()).within(&ns)),
        _ => None,
    };
    let facts = Facts {
        config: cfg,
        owner,
        cluster: cluster.as_deref(),
        data_secret: data_secret(cfg, ctx),
    };
    let plan = decide::decide(&facts);
    debug!(config = %key_of(cfg), ?plan, "decided");

    let mut ca_condition = None;
    let mut join = None;
    let mut action = Action::await_change();
    let outcome = match plan {
        Plan::Paused(why) => Outcome::Paused(why),
        Plan::Wait { reason, message } => Outcome::NotAvailable { reason, message },
        Plan::Invalid { reason, message } => {
            action = Action::requeue(ctx.backoff.fail(&key_of(cfg)));
            Outcome::NotAvailable { reason, message }
        }
        Plan::Recover(secret) => Outcome::Available {
            message: format!("bootstrap data Secret {secret} named by the Machine"),
            secret,
            reason: reason::RECOVERED,
        },
        Plan::Adopt => Outcome::Available {
            secret: cfg.name_any(),
            reason: reason::DATA_SECRET_CREATED,
            message: String::new(),
        },
        Plan::Ready => {
            let found = join_targets(cfg, ctx, &facts.owner);
            if let status::JoinTargets::Gone(message) = &found {
                let reported = cfg
                    .status
                    .as_ref()
                    .and_then(|s| mk8s_api::conditions::find(&s.conditions, status::types::JOIN_TARGETS_AVAILABLE))
                    .is_some_and(|c| c.status == "False");
                if !reported {
                    warn!(config = %key_of(cfg), "{message}");
                    event(ctx, cfg, EventType::Warning, reason::JOIN_TARGETS_GONE, message.clone()).await;
                }
            }
            join = Some(found);
            let current = cfg
                .status
                .as_ref()
                .and_then(|s| mk8s_api::conditions::find(&s.conditions, status::types::DATA_SECRET_AVAILABLE))
                .filter(|c| c.is_true());
            Outcome::Available {
                secret: cfg
                    .status
                    .as_ref()
                    .and_then(|s| s.data_secret_name.clone())
                    .unwrap_or_else(|| cfg.name_any()),
                reason: match current.map(|c| c.reason.as_str()) {
                    Some(reason::RECOVERED) => reason::RECOVERED,
                    _ => reason::DATA_SECRET_CREATED,
                },
                message: current.map(|c| c.message.clone()).unwrap_or_default(),
            }
        }
        Plan::DeletedAfterJoin => Outcome::Available {
            secret: cfg.name_any(),
            reason: reason::DELETED_AFTER_JOIN,
            message: "the bootstrap data Secret was deleted after the node joined; it is not regenerated".into(),
        },
        // `decide` only plans generation once it has seen the Cluster.
        Plan::Generate(g) => match cluster.as_deref() {
            Some(cluster) => {
                let (o, ca, a) = generate(cfg, ctx, cluster, g, &mut version).await?;
                ca_condition = ca;
                if let Some(a) = a {
                    action = a;
                }
                o
            }
            None => Outcome::NotAvailable {
                reason: reason::WAITING_FOR_CLUSTER,
                message: "waiting for the Cluster".into(),
            },
        },
    };

    // Not while paused: a paused cluster (e.g. during clusterctl move) gets no writes.
    if let Some(c) = cluster.as_deref()
        && c.control_plane_initialized()
        && !matches!(outcome, Outcome::Paused(_))
    {
        release_lock_if_held(ctx, c).await?;
    }
    apply_status(
        cfg,
        ctx,
        version.as_deref(),
        &outcome,
        ca_condition.as_ref(),
        join.as_ref(),
    )
    .await?;
    Ok(action)
}

/// Whether a rendered joining machine still has a control plane machine to join through
/// (see [`decide::join_targets_gone`]).
fn join_targets(cfg: &MicroK8sConfig, ctx: &Context, owner: &Owner<'_>) -> status::JoinTargets {
    let recorded = cfg.annotations().get(decide::JOIN_ADDRESSES_ANNOTATION);
    let Owner::Machine(m) = owner else {
        return status::JoinTargets::Fine;
    };
    // Most reconciles end here, without a look at every Machine.
    if recorded.is_none() || m.node_name().is_some() {
        return status::JoinTargets::Fine;
    }
    let machines = ctx.machines.state();
    match decide::join_targets_gone(recorded.map(String::as_str), m, machines.iter().map(|m| &**m)) {
        Some(gone) => status::JoinTargets::Gone(format!(
            "Machine {} has no node yet and its bootstrap data joins through {}, which no control plane machine of cluster {} has any more (deleted before this machine's node joined): the node cannot join. Delete this Machine to replace it (a MachineHealthCheck does so by itself)",
            m.metadata.name.as_deref().unwrap_or_default(),
            gone.join(", "),
            m.spec.cluster_name
        )),
        None => status::JoinTargets::Fine,
    }
}

/// Deletes the init lock of an initialized cluster when the lock cache shows one this manager
/// has not deleted already.
async fn release_lock_if_held(ctx: &Context, cluster: &Cluster) -> Result<(), Error> {
    let ns = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let lock_name = consts::init_lock_configmap(&name);
    let key = format!("{ns}/{lock_name}");
    let cached = ctx.locks.get(&ObjectRef::new(&lock_name).within(&ns));
    let uid = cached.as_ref().map(|l| l.metadata.uid.clone().unwrap_or_default());
    if !ctx.released_locks.needs_release(&key, uid.as_deref()) {
        return Ok(());
    }
    if lock::release(&Api::namespaced(ctx.rt.client.clone(), &ns), &name).await? {
        info!(cluster = %name, "control plane initialized: released the init lock");
    }
    if let Some(uid) = uid.filter(|u| !u.is_empty()) {
        ctx.released_locks.record(&key, &uid);
    }
    Ok(())
}

type Generated = (Outcome, Option<CaCondition>, Option<Action>);

fn wait(reason: &'static str, message: String) -> Generated {
    (Outcome::NotAvailable { reason, message }, None, None)
}

/// `version`: the config's resourceVersion, updated when this writes the config.
async fn generate(
    cfg: &MicroK8sConfig,
    ctx: &Context,
    cluster: &Cluster,
    g: Generate,
    version: &mut Option<String>,
) -> Result<Generated, Error> {
    let ns = cfg.namespace().unwrap_or_default();
    let client = ctx.rt.client.clone();
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let source = secrets::Source {
        api: &secrets_api,
        cache: &ctx.secrets,
        creating: &ctx.creating,
    };
    let invalid = |message: String| -> Generated {
        (
            Outcome::NotAvailable {
                reason: reason::INVALID_CLUSTER_SECRET,
                message,
            },
            None,
            Some(Action::requeue(ctx.backoff.fail(&key_of(cfg)))),
        )
    };

    // A leftover of a deleted Cluster of this name is waited out, with a condition saying so.
    let stale = |e: Error| -> Result<Generated, Error> {
        match e {
            Error::StaleClusterSecret { .. } => Ok((
                Outcome::NotAvailable {
                    reason: reason::WAITING_FOR_STALE_CLUSTER_SECRET,
                    message: e.to_string(),
                },
                None,
                Some(Action::requeue(ctx.backoff.fail(&key_of(cfg)))),
            )),
            e => Err(e),
        }
    };

    let control_plane = g.role != Role::Worker;
    let auth_token = if control_plane {
        match secrets::auth_token(&source, cluster).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Ok(invalid(e.0)),
            Err(e) => return stale(e),
        }
    } else {
        String::new()
    };
    let join_token = match secrets::join_token(&source, cluster).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Ok(invalid(e.0)),
        Err(e) => return stale(e),
    };

    let mut ca_condition = None;
    let mut init_lock_held = false;
    // The joined control plane's port scheme, for a joining role.
    let mut cluster_remap = None;
    let role = match g.role {
        Role::Init => {
            let ca = match secrets::ca(&source, cluster).await {
                Ok(Ok(ca)) => ca,
                Ok(Err(e)) => {
                    let (o, _, a) = invalid(e.0.clone());
                    let c = CaCondition {
                        ok: false,
                        reason: reason::INVALID_CLUSTER_SECRET,
                        message: e.0,
                    };
                    return Ok((o, Some(c), a));
                }
                Err(e) => return stale(e),
            };
            if ca.origin == secrets::Origin::Created {
                event(
                    ctx,
                    cfg,
                    EventType::Normal,
                    "CACreated",
                    format!("generated the cluster CA Secret {}", consts::ca_secret(&g.cluster)),
                )
                .await;
            }
            ca_condition = Some(match ca.algorithm {
                KeyAlgorithm::Rsa => CaCondition {
                    ok: true,
                    reason: "CAAvailable",
                    message: String::new(),
                },
                other => {
                    event(ctx, cfg, EventType::Warning, "CAKeyTypeUnverified", format!(
                        "the cluster CA uses a {other:?} key; MicroK8s' acceptance of non-RSA CAs is not verified: use an RSA CA if nodes fail to refresh certificates or join"
                    )).await;
                    CaCondition {
                        ok: true,
                        reason: "CAKeyTypeUnverified",
                        message: format!(
                            "the cluster CA uses a {other:?} key; MicroK8s' acceptance of non-RSA CAs is not verified: use an RSA CA if nodes fail to refresh certificates or join"
                        ),
                    }
                }
            });
            let machines_api: Api<Machine> = Api::namespaced_with(client.clone(), &ns, &ctx.machine_ar);
            // Rendering init data again for the machine that initialized the cluster (its data
            // Secret was deleted before its node joined) needs no lock: the lock only guards the
            // first initialization.
            let relock = !(g.again && cluster.control_plane_initialized());
            let outcome = if relock {
                lock::acquire(
                    &Api::namespaced(client.clone(), &ns),
                    &machines_api,
                    cluster,
                    &g.machine,
                )
                .await?
            } else {
                lock::Outcome::Acquired { new: false }
            };
            match outcome {
                lock::Outcome::Acquired { new: true } if fresh_initialized(ctx, cluster).await? => {
                    // The cache was behind: the cluster got initialized (and its lock released)
                    // while we decided. Give the lock back and decide again.
                    lock::release(&Api::namespaced(client.clone(), &ns), &g.cluster).await?;
                    return Ok((
                        Outcome::NotAvailable {
                            reason: reason::WAITING_FOR_INIT_LOCK,
                            message: "the control plane was initialized meanwhile; deciding again".into(),
                        },
                        ca_condition,
                        Some(Action::requeue(Duration::from_millis(200))),
                    ));
                }
                lock::Outcome::Acquired { new } => {
                    init_lock_held = relock;
                    if new {
                        event(
                            ctx,
                            cfg,
                            EventType::Normal,
                            "InitLockAcquired",
                            format!(
                                "Machine {} takes the init lock and will initialize the cluster",
                                g.machine
                            ),
                        )
                        .await;
                    }
                }
                lock::Outcome::HeldBy(holder) => {
                    let (o, _, a) = wait(
                        reason::WAITING_FOR_INIT_LOCK,
                        format!(
                            "Machine {holder} is initializing the control plane; this machine joins once it is initialized"
                        ),
                    );
                    return Ok((o, ca_condition, a));
                }
            }
            mk8s_cloudinit::Role::Init {
                ca: mk8s_cloudinit::CaFiles {
                    cert_pem: ca.pem.cert_pem,
                    key_pem: ca.pem.key_pem,
                },
            }
        }
        Role::JoinControlPlane | Role::Worker => {
            let machines = ctx.machines.state();
            let in_ns = || {
                machines
                    .iter()
                    .map(|m| &**m)
                    .filter(|m| m.metadata.namespace.as_deref() == Some(ns.as_str()))
            };
            let initialized_by = initializers(in_ns(), &ctx.configs, &g.cluster);
            cluster_remap = decide::cluster_port_remap(
                in_ns(),
                |m| {
                    config_ref_of(m)
                        .and_then(|r| ctx.configs.get(&r))
                        .map(|c| c.spec.port_compatibility_remap())
                },
                &g.cluster,
                &g.machine,
            );
            let addresses = decide::join_addresses(in_ns(), &g.cluster, &g.machine, &initialized_by);
            if addresses.is_empty() {
                return Ok(if cluster.control_plane_initialized() {
                    wait(
                        reason::WAITING_FOR_JOIN_ADDRESSES,
                        "waiting for a control plane machine to join through: one with a providerID and an address that is Running (has a node) or initialized the cluster".into(),
                    )
                } else {
                    wait(
                        reason::WAITING_FOR_CONTROL_PLANE,
                        "waiting for the machine that initializes the control plane to have a providerID and an address: this machine joins through it, retrying until it has initialized the cluster".into(),
                    )
                });
            }
            if g.role == Role::Worker {
                mk8s_cloudinit::Role::Worker {
                    join_addresses: addresses,
                }
            } else {
                mk8s_cloudinit::Role::JoinControlPlane {
                    join_addresses: addresses,
                }
            }
        }
    };

    let join_addresses = match &role {
        mk8s_cloudinit::Role::Worker { join_addresses } | mk8s_cloudinit::Role::JoinControlPlane { join_addresses } => {
            join_addresses.clone()
        }
        mk8s_cloudinit::Role::Init { .. } => vec![],
    };
    let port = u16::try_from(g.endpoint.port).unwrap_or(0);
    let spec = decide::with_cluster_ports(&cfg.spec, cluster_remap);
    let rendered = mk8s_cloudinit::render(&mk8s_cloudinit::RenderInput {
        role,
        spec: &spec,
        kubernetes_version: &g.version,
        endpoint_host: &g.endpoint.host,
        endpoint_port: port,
        join_token: &join_token,
        auth_token: &auth_token,
    });
    let user_data = match rendered {
        Ok(u) => u,
        Err(e) => {
            if init_lock_held {
                // This machine cannot initialize until its config changes: let another.
                lock::release(&Api::namespaced(client.clone(), &ns), &g.cluster).await?;
            }
            return Ok((
                Outcome::NotAvailable {
                    reason: reason::INVALID_CONFIGURATION,
                    message: e.to_string(),
                },
                ca_condition,
                Some(Action::requeue(ctx.backoff.fail(&key_of(cfg)))),
            ));
        }
    };

    if let Some(v) = record_role(cfg, ctx, g.role, &join_addresses).await? {
        *version = Some(v);
    }
    if let Some(conflict) = store_data_secret(cfg, ctx, cluster, user_data).await? {
        return Ok((
            conflict,
            ca_condition,
            Some(Action::requeue(ctx.backoff.fail(&key_of(cfg)))),
        ));
    }
    info!(config = %key_of(cfg), role = g.role.as_str(), machine = %g.machine, "bootstrap data created");
    event(
        ctx,
        cfg,
        EventType::Normal,
        "DataSecretCreated",
        format!(
            "rendered {} bootstrap data for Machine {} (Kubernetes {})",
            g.role.as_str(),
            g.machine,
            g.version
        ),
    )
    .await;
    let marked = decide::jinja_marked_files(&cfg.spec);
    if !marked.is_empty() {
        event(
            ctx,
            cfg,
            EventType::Warning,
            "ExtraWriteFilesNotTemplated",
            format!(
                "extraWriteFiles {} contain Jinja markers ({{{{, {{% or {{#): they are written as they are, not rendered by cloud-init (Canonical's provider rendered them); fill in instance data from a preRunCommand instead",
                marked.join(", ")
            ),
        )
        .await;
    }
    Ok((
        Outcome::Available {
            secret: cfg.name_any(),
            reason: reason::DATA_SECRET_CREATED,
            message: format!("{} bootstrap data", g.role.as_str()),
        },
        ca_condition,
        None,
    ))
}

/// The control plane machines of a cluster whose MicroK8sConfig rendered the init role (as
/// recorded on the config), by name.
fn initializers<'a>(
    machines: impl Iterator<Item = &'a Machine>,
    configs: &Store<MicroK8sConfig>,
    cluster: &str,
) -> Vec<String> {
    machines
        .filter(|m| m.spec.cluster_name == cluster && m.is_control_plane())
        .filter(|m| {
            config_ref_of(m).and_then(|r| configs.get(&r)).is_some_and(|c| {
                c.annotations().get(decide::ROLE_ANNOTATION).map(String::as_str) == Some(Role::Init.as_str())
            })
        })
        .filter_map(|m| m.metadata.name.clone())
        .collect()
}

/// Reads the Cluster from the API (not the cache) and tells whether it is initialized.
async fn fresh_initialized(ctx: &Context, cluster: &Cluster) -> Result<bool, Error> {
    let api: Api<Cluster> = Api::namespaced_with(
        ctx.rt.client.clone(),
        &cluster.namespace().unwrap_or_default(),
        &ctx.cluster_ar,
    );
    Ok(api
        .get_opt(&cluster.name_any())
        .await?
        .is_some_and(|c| c.control_plane_initialized()))
}

/// Records on the config the role its data is rendered for and the addresses a joining
/// role joins through (one patch, skipped when both are recorded already). Returns the
/// config's new resourceVersion when it patched.
async fn record_role(
    cfg: &MicroK8sConfig,
    ctx: &Context,
    role: Role,
    join_addresses: &[String],
) -> Result<Option<String>, Error> {
    let joined = (!join_addresses.is_empty()).then(|| join_addresses.join(","));
    let annotations = cfg.annotations();
    if annotations.get(decide::ROLE_ANNOTATION).map(String::as_str) == Some(role.as_str())
        && annotations.get(decide::JOIN_ADDRESSES_ANNOTATION) == joined.as_ref()
    {
        return Ok(None);
    }
    let api: Api<MicroK8sConfig> = Api::namespaced(ctx.rt.client.clone(), &cfg.namespace().unwrap_or_default());
    let patched = api
        .patch(
            &cfg.name_any(),
            &PatchParams::default(),
            &role_patch(cfg.metadata.resource_version.as_deref(), role, joined.as_deref()),
        )
        .await?;
    Ok(patched.metadata.resource_version)
}

/// The merge patch recording the role and the join addresses (`joined`, comma-separated) on a
/// config read at `version`. The version makes the patch fail with a 409 the reconcile
/// recognises ([`Error::is_config_conflict`]) when the cached copy (and the status built from
/// it) is stale; the newer version's event reconciles again.
pub fn role_patch(version: Option<&str>, role: Role, joined: Option<&str>) -> Patch<Value> {
    Patch::Merge(json!({"metadata": {
        "resourceVersion": version,
        "annotations": {
            decide::ROLE_ANNOTATION: role.as_str(),
            decide::JOIN_ADDRESSES_ANNOTATION: joined,
        },
    }}))
}

/// Creates the data Secret; returns a conflict outcome when a foreign Secret has its name.
async fn store_data_secret(
    cfg: &MicroK8sConfig,
    ctx: &Context,
    cluster: &Cluster,
    user_data: String,
) -> Result<Option<Outcome>, Error> {
    let ns = cfg.namespace().unwrap_or_default();
    let name = cfg.name_any();
    let api: Api<Secret> = Api::namespaced(ctx.rt.client.clone(), &ns);
    let data = BTreeMap::from([
        (
            consts::KEY_BOOTSTRAP_VALUE.to_string(),
            ByteString(user_data.into_bytes()),
        ),
        (
            consts::KEY_BOOTSTRAP_FORMAT.to_string(),
            ByteString(consts::BOOTSTRAP_FORMAT_CLOUD_CONFIG.as_bytes().to_vec()),
        ),
    ]);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: Some(BTreeMap::from([(
                consts::LABEL_CLUSTER_NAME.to_string(),
                cluster.name_any(),
            )])),
            owner_references: Some(vec![OwnerReference {
                api_version: MicroK8sConfig::api_version(&()).to_string(),
                kind: MicroK8sConfig::kind(&()).to_string(),
                name: name.clone(),
                uid: cfg.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        type_: Some(consts::SECRET_TYPE_CLUSTER.to_string()),
        data: Some(data.clone()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(created) => {
            // Remembered (name and version only) until the watch shows it, so that a reconcile
            // in between does not take it for deleted and render it again.
            let meta = ObjectMeta {
                name: created.metadata.name,
                namespace: created.metadata.namespace,
                resource_version: created.metadata.resource_version,
                ..Default::default()
            };
            ctx.secrets.wrote(
                Secret {
                    metadata: meta,
                    ..Default::default()
                },
                None,
                false,
            );
            Ok(None)
        }
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            let existing = api.get(&name).await?;
            if !controlled_by(&existing.metadata, cfg) {
                return Ok(Some(Outcome::NotAvailable {
                    reason: reason::DATA_SECRET_CONFLICT,
                    message: format!(
                        "a Secret named {name:?} exists and is not controlled by this MicroK8sConfig; delete or rename it"
                    ),
                }));
            }
            api.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"data": data})))
                .await?;
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// `version`: the resourceVersion of the config as `cfg.status` shows it (this reconcile's
/// own writes to it, which leave the status alone, included).
async fn apply_status(
    cfg: &MicroK8sConfig,
    ctx: &Context,
    version: Option<&str>,
    outcome: &Outcome,
    ca: Option<&CaCondition>,
    join: Option<&status::JoinTargets>,
) -> Result<(), Error> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let current = cfg.status.as_ref();
    let desired = status::desired(current, outcome, ca, join, cfg.metadata.generation, &now);
    if current == Some(&desired) {
        return Ok(());
    }
    let before = status::data_reason(current);
    let api: Api<MicroK8sConfig> = Api::namespaced(ctx.rt.client.clone(), &cfg.namespace().unwrap_or_default());
    // `desired` starts from the cached status; the cache may not show our last write yet (its
    // event can still be on the way when the next reconcile starts). The resourceVersion
    // makes the apply fail then (409, see `reconcile`) instead of undoing that write; the newer
    // version's event reconciles again from it.
    api.patch_status(
        &cfg.name_any(),
        &status_apply_params(),
        &status_patch(version, &desired),
    )
    .await?;
    // One Event per wait reason transition (the decision Events are published where taken).
    if let Outcome::NotAvailable { reason, message } = outcome
        && before.as_deref() != Some(*reason)
    {
        let ty = if status::is_problem(reason) {
            EventType::Warning
        } else {
            EventType::Normal
        };
        event(ctx, cfg, ty, reason, message.clone()).await;
    }
    Ok(())
}

/// The server-side apply of a config's whole `status`, built from the copy read at
/// `version`: with the version, a stale copy makes it fail with a 409 the reconcile recognises
/// ([`Error::is_config_conflict`]) instead of undoing a newer write.
pub fn status_patch(version: Option<&str>, status: &MicroK8sConfigStatus) -> Patch<Value> {
    Patch::Apply(json!({
        "apiVersion": MicroK8sConfig::api_version(&()),
        "kind": MicroK8sConfig::kind(&()),
        "metadata": {"resourceVersion": version},
        "status": status,
    }))
}

/// The parameters of [`status_patch`]: our field manager, taking over fields (the status is
/// ours alone).
pub fn status_apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

async fn event(ctx: &Context, cfg: &MicroK8sConfig, type_: EventType, reason: &str, note: String) {
    let ev = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &cfg.object_ref(&())).await {
        warn!(config = %key_of(cfg), error = %e, "cannot publish Event");
    }
}

/// Reports how many configs are in each `DataSecretAvailable` state, every 15 s.
async fn report_states(
    configs: Store<MicroK8sConfig>,
    metrics: Arc<mk8s_runtime::Metrics>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let seen: Mutex<HashMap<String, i64>> = Mutex::new(HashMap::new());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(15)) => {}
            _ = shutdown.cancelled() => return,
        }
        let mut counts: HashMap<String, i64> = HashMap::new();
        for c in configs.state() {
            let state = status::data_reason(c.status.as_ref()).unwrap_or_else(|| "Unknown".into());
            *counts.entry(state).or_default() += 1;
        }
        if let Ok(mut prev) = seen.lock() {
            for k in prev.keys() {
                if !counts.contains_key(k) {
                    metrics.set_state_count(CONTROLLER, k, 0);
                }
            }
            for (k, v) in &counts {
                metrics.set_state_count(CONTROLLER, k, *v);
            }
            *prev = counts;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned_by(refs: &[(&str, &str, Option<bool>)]) -> ObjectMeta {
        ObjectMeta {
            name: Some("w-1".into()),
            namespace: Some("ns".into()),
            owner_references: Some(
                refs.iter()
                    .map(|(api_version, kind, controller)| OwnerReference {
                        api_version: api_version.to_string(),
                        kind: kind.to_string(),
                        name: format!("{kind}-owner"),
                        uid: "u".into(),
                        controller: *controller,
                        block_owner_deletion: None,
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn a_secret_wakes_only_the_config_that_controls_it() {
        let ours = owned_by(&[
            ("cluster.x-k8s.io/v1beta2", "Cluster", None),
            ("bootstrap.cluster.x-k8s.io/v1beta1", "MicroK8sConfig", Some(true)),
        ]);
        assert_eq!(
            controlling_config(&ours),
            Some(ObjectRef::new("MicroK8sConfig-owner").within("ns"))
        );
        // Owned but not controlled, another group's kind of that name, a cluster Secret, no namespace.
        for meta in [
            owned_by(&[("bootstrap.cluster.x-k8s.io/v1beta1", "MicroK8sConfig", None)]),
            owned_by(&[("example.com/v1", "MicroK8sConfig", Some(true))]),
            owned_by(&[("cluster.x-k8s.io/v1beta2", "Cluster", Some(true))]),
            owned_by(&[]),
            ObjectMeta {
                namespace: None,
                ..ours.clone()
            },
        ] {
            assert_eq!(controlling_config(&meta), None, "{meta:?}");
        }
    }
}
