//! Scenarios 3 and 4: many single-control-plane clusters on the simulator's light mode —
//! resource use of our managers (RSS and CPU from `/proc`, API requests per identity from the
//! audit log), where the time goes (per-cluster phase timestamps seen by watches in the
//! bench, and a short `perf` profile of our managers), and memory per cluster.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt as _, watcher};
use mk8s_e2e::ManagerKind;
use mk8s_e2e::cluster::{self, Shape};
use serde::Serialize;
use serde_json::json;

use crate::env::{BenchEnv, EnvOptions, SimOptions, metric_by_label, metric_sum};
use crate::theirs::Provider;
use crate::{audit, procstat};

/// Settings of a scale run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Clusters to create.
    pub clusters: usize,
    /// Clusters applied per wave (memory is checked before each wave).
    pub wave: usize,
    /// Stop applying when the machine's available memory falls below this (MiB).
    pub min_free_mib: f64,
    /// Pre-create one shared `<cluster>-ca` for every cluster (user-supplied CAs).
    pub shared_ca: bool,
    /// Seconds of idle measurement after the last cluster is Available.
    pub idle_s: u64,
    /// Seconds of `perf` profile of our managers (0: none).
    pub profile_s: u64,
    /// Give up waiting after this long.
    pub timeout: Duration,
    /// Directory name.
    pub label: String,
    /// Extra flags of our managers.
    pub manager_args: Vec<String>,
    /// Whose managers run (figures keyed `mk8s-bootstrap` / `mk8s-controlplane` are those of
    /// the provider's bootstrap / control plane manager).
    pub provider: Provider,
}

/// Figures of one process.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcFigures {
    /// Peak RSS (kernel high water mark), MiB.
    pub peak_rss_mib: f64,
    /// Mean RSS over the idle window, MiB.
    pub steady_rss_mib: f64,
    /// CPU seconds from the first apply to the last Available.
    pub cpu_provisioning_s: f64,
    /// CPU seconds per minute while idle.
    pub cpu_idle_s_per_min: f64,
}

/// Median, 90th percentile and maximum of a phase, seconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Clusters measured.
    pub n: usize,
    /// Median.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Maximum.
    pub max: f64,
}

/// Result of a scale run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Result {
    /// `ours` or `theirs`.
    pub provider: String,
    /// Clusters asked for.
    pub requested: usize,
    /// Clusters applied (fewer if memory ran low).
    pub applied: usize,
    /// Clusters that reached Available.
    pub available: usize,
    /// Seconds to apply every cluster.
    pub apply_s: f64,
    /// Seconds from the first apply to the last cluster Available.
    pub total_s: Option<f64>,
    /// Clusters Available per minute over the run.
    pub clusters_per_min: Option<f64>,
    /// Per process (ours, CAPI core, the management apiserver and etcd, the shared workload
    /// apiserver, the bench process hosting the simulator).
    pub processes: BTreeMap<String, ProcFigures>,
    /// Requests per identity while provisioning.
    pub requests_provisioning: BTreeMap<String, audit::Counts>,
    /// Requests per minute per identity while idle.
    pub requests_idle_per_min: BTreeMap<String, f64>,
    /// Requests per identity in the idle window (by verb and resource).
    pub requests_idle: BTreeMap<String, audit::Counts>,
    /// Requests of our managers per provisioned machine (one per cluster).
    pub requests_per_machine: BTreeMap<String, f64>,
    /// Reconciles per cluster of our managers.
    pub reconciles_per_cluster: BTreeMap<String, f64>,
    /// Reconciles per cluster of our managers by what woke them (`mk8s_reconcile_causes_total`;
    /// empty for Canonical's).
    pub reconcile_causes_per_cluster: BTreeMap<String, BTreeMap<String, f64>>,
    /// Phase durations over the clusters.
    pub phases: BTreeMap<String, Stats>,
    /// Memory (PSS, MiB) by component after the last cluster, and per cluster.
    pub memory_mib: BTreeMap<String, f64>,
    /// Flat profile of our managers (top symbols), if `perf` worked.
    pub profile: BTreeMap<String, Vec<String>>,
    /// Busy CPU seconds of the whole machine (all cores) while provisioning, and the share of
    /// the cores' capacity that is.
    pub machine_cpu_busy_s: f64,
    /// `machine_cpu_busy_s` / (cores × provisioning time).
    pub machine_cpu_utilisation: f64,
    /// Why the run stopped early, if it did.
    pub stopped: Option<String>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn ar(g: &str, v: &str, k: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(g, v, k))
}

/// Timestamps (seconds since the start) of a cluster's phases.
#[derive(Clone, Debug, Default)]
struct Phases {
    applied: Option<f64>,
    infra: Option<f64>,
    machine: Option<f64>,
    data: Option<f64>,
    vm: Option<f64>,
    booted: Option<f64>,
    initialized: Option<f64>,
    node_ref: Option<f64>,
    available: Option<f64>,
}

type Book = Arc<Mutex<BTreeMap<String, Phases>>>;

fn set(slot: &mut Option<f64>, t: f64) {
    if slot.is_none() {
        *slot = Some(t);
    }
}

fn cond_true(o: &DynamicObject, type_: &str) -> bool {
    o.data["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == type_ && c["status"] == "True"))
}

fn cluster_label(o: &DynamicObject) -> Option<String> {
    o.metadata
        .labels
        .as_ref()?
        .get("cluster.x-k8s.io/cluster-name")
        .cloned()
}

/// Watches one kind and records phases with `f`.
fn watch(
    client: &kube::Client,
    ns: &str,
    ar: ApiResource,
    book: Book,
    t0: Instant,
    f: fn(&DynamicObject, &mut BTreeMap<String, Phases>, f64),
) -> tokio::task::JoinHandle<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    tokio::spawn(async move {
        let mut s = watcher(api, watcher::Config::default()).applied_objects().boxed();
        loop {
            match s.try_next().await {
                Ok(Some(o)) => {
                    let t = t0.elapsed().as_secs_f64();
                    if let Ok(mut b) = book.lock() {
                        f(&o, &mut b, t);
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    eprintln!("bench: watch: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    })
}

fn on_cluster(o: &DynamicObject, b: &mut BTreeMap<String, Phases>, t: f64) {
    let Some(name) = o.metadata.name.clone() else { return };
    let p = b.entry(name).or_default();
    if o.data["status"]["initialization"]["infrastructureProvisioned"] == true {
        set(&mut p.infra, t);
    }
    if cond_true(o, "Available") {
        set(&mut p.available, t);
    }
}

fn on_machine(o: &DynamicObject, b: &mut BTreeMap<String, Phases>, t: f64) {
    let Some(c) = cluster_label(o) else { return };
    let p = b.entry(c).or_default();
    set(&mut p.machine, t);
    if o.data["spec"]["bootstrap"]["dataSecretName"].is_string() {
        set(&mut p.data, t);
    }
    if o.data["status"]["nodeRef"].is_object() {
        set(&mut p.node_ref, t);
    }
}

fn on_sim_machine(o: &DynamicObject, b: &mut BTreeMap<String, Phases>, t: f64) {
    let Some(c) = cluster_label(o) else { return };
    let p = b.entry(c).or_default();
    if o.data["status"]["initialization"]["provisioned"] == true {
        set(&mut p.vm, t);
    }
    if cond_true(o, "BootstrapSucceeded") {
        set(&mut p.booted, t);
    }
}

fn on_mcp(o: &DynamicObject, b: &mut BTreeMap<String, Phases>, t: f64) {
    let Some(name) = o.metadata.name.as_deref() else { return };
    let Some(c) = name.strip_suffix("-control-plane") else {
        return;
    };
    if o.data["status"]["initialized"] == true {
        set(&mut b.entry(c.to_string()).or_default().initialized, t);
    }
}

fn stats(mut v: Vec<f64>) -> Stats {
    if v.is_empty() {
        return Stats::default();
    }
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Stats {
        n: v.len(),
        median: q(0.5),
        p90: q(0.9),
        max: v[v.len() - 1],
    }
}

fn phase_stats(book: &BTreeMap<String, Phases>) -> BTreeMap<String, Stats> {
    type Get = fn(&Phases) -> Option<f64>;
    let steps: [(&str, Get, Get); 8] = [
        (
            "1 apply -> infrastructure provisioned (simulator, CAPI)",
            |p| p.applied,
            |p| p.infra,
        ),
        (
            "2 apply -> control plane Machine created (ours: controlplane)",
            |p| p.applied,
            |p| p.machine,
        ),
        (
            "3 Machine -> bootstrap data (ours: bootstrap, CAPI copies dataSecretName)",
            |p| p.machine,
            |p| p.data,
        ),
        ("4 bootstrap data -> VM up (simulator)", |p| p.data, |p| p.vm),
        (
            "5 VM up -> node bootstrapped (node scripts in the simulator)",
            |p| p.vm,
            |p| p.booted,
        ),
        (
            "6 node bootstrapped -> control plane initialized (ours: controlplane)",
            |p| p.booted,
            |p| p.initialized,
        ),
        (
            "7 initialized -> Machine nodeRef (ours: providerID; CAPI)",
            |p| p.initialized,
            |p| p.node_ref,
        ),
        ("8 nodeRef -> Cluster Available (CAPI)", |p| p.node_ref, |p| p.available),
    ];
    let mut out = BTreeMap::new();
    for (name, from, to) in steps {
        let v: Vec<f64> = book
            .values()
            .filter_map(|p| Some((to(p)? - from(p)?).max(0.0)))
            .collect();
        out.insert(name.to_string(), stats(v));
    }
    let total: Vec<f64> = book.values().filter_map(|p| Some(p.available? - p.applied?)).collect();
    out.insert("total: apply -> Cluster Available".into(), stats(total));
    out
}

/// PSS (or RSS) in MiB of every descendant of this process, grouped by command name.
fn memory_by_command() -> BTreeMap<String, (usize, f64)> {
    let me = std::process::id();
    let mut parent: BTreeMap<u32, u32> = BTreeMap::new();
    let mut comm: BTreeMap<u32, String> = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let name = stat[open + 1..close].to_string();
            let ppid = stat[close + 2..]
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            parent.insert(pid, ppid);
            comm.insert(pid, name);
        }
    }
    let is_ours = |mut p: u32| {
        for _ in 0..64 {
            if p == me {
                return true;
            }
            match parent.get(&p) {
                Some(pp) if *pp != 0 => p = *pp,
                _ => return false,
            }
        }
        false
    };
    let mut out: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    for (pid, name) in &comm {
        if !is_ours(*pid) {
            continue;
        }
        let pss = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("Pss:"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .map(|k| k / 1024.0)
            .or_else(|| procstat::rss_mib(*pid))
            .unwrap_or(0.0);
        let key = if *pid == me {
            "mk8s-bench (simulator, light proxies)".to_string()
        } else {
            name.clone()
        };
        let e = out.entry(key).or_default();
        e.0 += 1;
        e.1 += pss;
    }
    out
}

async fn perf_profile(
    pids: Vec<(String, u32)>,
    seconds: u64,
    dir: std::path::PathBuf,
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut children = vec![];
    for (name, pid) in &pids {
        let file = dir.join(format!("perf-{name}.data"));
        let child = tokio::process::Command::new("perf")
            .args(["record", "-F", "99", "-p", &pid.to_string(), "-o"])
            .arg(&file)
            .args(["--", "sleep", &seconds.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if let Ok(c) = child {
            children.push((name.clone(), file, c));
        }
    }
    for (name, file, mut c) in children {
        let _ = c.wait().await;
        let report = tokio::process::Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--sort",
                "symbol",
                "--percent-limit",
                "1.5",
                "-i",
            ])
            .arg(&file)
            .output()
            .await;
        let lines: Vec<String> = report
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .take(25)
            .map(|l| l.trim().to_string())
            .collect();
        let _ = std::fs::remove_file(&file);
        out.insert(name, lines);
    }
    out
}

/// A scale run.
pub async fn run(o: &Options) -> Result {
    let env = BenchEnv::start(&EnvOptions {
        name: o.label.clone(),
        audit: true,
        capi: true,
        // CAPI's defaults (20 QPS, burst 30) throttle it long before our providers at this
        // scale; the Metal3 1000-cluster runs use the same 100/200.
        capi_args: vec!["--kube-api-qps=100".into(), "--kube-api-burst=200".into()],
        sim: Some(SimOptions {
            light: true,
            boot_delay: Duration::ZERO,
            install_delay: Duration::ZERO,
            concurrency: 32,
        }),
        provider: o.provider.clone(),
        managers: vec![ManagerKind::Bootstrap, ManagerKind::ControlPlane],
        manager_args: o.manager_args.clone(),
    })
    .await;
    let client = env.client.clone();
    let ns = env.plane().namespace("scale").await.expect("namespace");
    let mut res = Result {
        provider: o.provider.label().to_string(),
        requested: o.clusters,
        ..Default::default()
    };
    if o.shared_ca {
        let ca = mk8s_testenv::generate_ca("10.152.183.1", mk8s_testenv::CaKeyFormat::RsaPkcs1).expect("CA");
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        for i in 0..o.clusters {
            let s: Secret = serde_json::from_value(json!({
                "metadata": {"name": format!("s{i:04}-ca")},
                "stringData": {"tls.crt": ca.cert_pem, "tls.key": ca.key_pem}}))
            .expect("secret");
            secrets.create(&PostParams::default(), &s).await.expect("CA secret");
        }
    }

    let mut procs: Vec<(String, u32)> = vec![("mk8s-bench (simulator)".into(), std::process::id())];
    procs.extend(
        env.manager_pid(ManagerKind::Bootstrap)
            .map(|p| ("mk8s-bootstrap".into(), p)),
    );
    procs.extend(
        env.manager_pid(ManagerKind::ControlPlane)
            .map(|p| ("mk8s-controlplane".into(), p)),
    );
    procs.extend(env.capi_pid().map(|p| ("capi-manager".into(), p)));
    procs.extend(
        env.plane_pid("kube-apiserver")
            .map(|p| ("kube-apiserver (management)".into(), p)),
    );
    procs.extend(env.plane_pid("etcd").map(|p| ("etcd (management)".into(), p)));
    let sampler = procstat::Sampler::start(procs.clone(), Duration::from_secs(1));
    let mem0 = procstat::mem_available_mib().unwrap_or(0.0);
    let sim_mem0: f64 = memory_by_command().values().map(|(_, m)| m).sum();

    let book: Book = Arc::default();
    let busy0 = procstat::machine_busy_seconds().unwrap_or(0.0);
    let t0 = Instant::now();
    let unix0 = unix_now();
    let s0 = sampler.now();
    let watches = vec![
        watch(
            &client,
            &ns,
            ar("cluster.x-k8s.io", "v1beta2", "Cluster"),
            book.clone(),
            t0,
            on_cluster,
        ),
        watch(
            &client,
            &ns,
            ar("cluster.x-k8s.io", "v1beta2", "Machine"),
            book.clone(),
            t0,
            on_machine,
        ),
        watch(
            &client,
            &ns,
            ar("infrastructure.cluster.x-k8s.io", "v1alpha1", "SimMachine"),
            book.clone(),
            t0,
            on_sim_machine,
        ),
        watch(
            &client,
            &ns,
            ar("controlplane.cluster.x-k8s.io", "v1beta1", "MicroK8sControlPlane"),
            book.clone(),
            t0,
            on_mcp,
        ),
    ];
    let profile = if o.profile_s > 0 {
        let pids: Vec<(String, u32)> = procs
            .iter()
            .filter(|(n, _)| n.starts_with("mk8s-bootstrap") || n.starts_with("mk8s-controlplane"))
            .cloned()
            .collect();
        let (secs, dir) = (o.profile_s, env.dir.clone());
        let delay = Duration::from_secs(5);
        Some(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            perf_profile(pids, secs, dir).await
        }))
    } else {
        None
    };

    // Apply in waves, watching the machine's memory.
    let mut applied = 0;
    while applied < o.clusters {
        if procstat::mem_available_mib().is_some_and(|m| m < o.min_free_mib) {
            res.stopped = Some(format!(
                "stopped applying at {applied} clusters: less than {:.0} MiB of memory available",
                o.min_free_mib
            ));
            break;
        }
        let end = (applied + o.wave).min(o.clusters);
        futures::stream::iter(applied..end)
            .map(|i| {
                let (client, ns, book) = (client.clone(), ns.clone(), book.clone());
                let provider = o.provider.clone();
                async move {
                    let name = format!("s{i:04}");
                    let shape = Shape::new(&name, 1, -1);
                    cluster::apply(&client, &ns, &crate::available::objects_for(&shape, &provider)).await;
                    let t = t0.elapsed().as_secs_f64();
                    if let Ok(mut b) = book.lock() {
                        set(&mut b.entry(name).or_default().applied, t);
                    }
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
        applied = end;
    }
    res.applied = applied;
    res.apply_s = t0.elapsed().as_secs_f64();
    eprintln!("bench: {}: applied {applied} clusters in {:.1}s", o.label, res.apply_s);

    // Wait for every applied cluster to be Available.
    let mut last_report = Instant::now();
    loop {
        let available = book
            .lock()
            .map(|b| {
                b.values()
                    .filter(|p| p.applied.is_some() && p.available.is_some())
                    .count()
            })
            .unwrap_or(0);
        res.available = available;
        if available >= applied {
            break;
        }
        if t0.elapsed() > o.timeout {
            res.stopped = Some(format!(
                "timed out after {:?} with {available}/{applied} Available",
                o.timeout
            ));
            break;
        }
        if procstat::mem_available_mib().is_some_and(|m| m < o.min_free_mib / 2.0) {
            res.stopped = Some(format!("memory nearly exhausted with {available}/{applied} Available"));
            break;
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "bench: {}: {available}/{applied} Available after {:.0}s (MemAvailable {:.0} MiB)",
                o.label,
                t0.elapsed().as_secs_f64(),
                procstat::mem_available_mib().unwrap_or(0.0)
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let t_done = t0.elapsed().as_secs_f64();
    res.machine_cpu_busy_s = procstat::machine_busy_seconds().unwrap_or(0.0) - busy0;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    res.machine_cpu_utilisation = res.machine_cpu_busy_s / (cores * t_done.max(1e-9));
    let s_done = sampler.now();
    let unix_done = unix_now();
    if res.available == applied {
        res.total_s = book
            .lock()
            .ok()
            .and_then(|b| b.values().filter_map(|p| p.available).reduce(f64::max));
        res.clusters_per_min = res.total_s.map(|t| applied as f64 / t * 60.0);
    }
    eprintln!(
        "bench: {}: {}/{applied} Available after {t_done:.1}s; idling {}s",
        o.label, res.available, o.idle_s
    );
    let mut causes_done: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let reconciles_done: BTreeMap<String, f64> = {
        let mut m = BTreeMap::new();
        for (kind, name, controller) in [
            (ManagerKind::Bootstrap, "mk8s-bootstrap", "microk8sconfig"),
            (ManagerKind::ControlPlane, "mk8s-controlplane", "microk8scontrolplane"),
        ] {
            let text = env.metrics(kind).await;
            m.insert(name.to_string(), metric_sum(&text, o.provider.reconcile_metric()));
            let causes = metric_by_label(
                &text,
                "mk8s_reconcile_causes_total",
                &format!("controller=\"{controller}\""),
                "cause",
            );
            if !causes.is_empty() {
                causes_done.insert(name.to_string(), causes);
            }
        }
        m
    };
    if let Some(p) = profile {
        res.profile = p.await.unwrap_or_default();
    }

    // Idle window: steady RSS, idle CPU and requests.
    let idle_from_s = sampler.now();
    let idle_from_unix = unix_now();
    tokio::time::sleep(Duration::from_secs(o.idle_s)).await;
    let idle_to_s = sampler.now();
    let idle_to_unix = unix_now();
    let mem_by_cmd = memory_by_command();
    let mem1 = procstat::mem_available_mib().unwrap_or(0.0);
    for w in watches {
        w.abort();
    }
    let samples = sampler.finish();
    for (name, pid) in &procs {
        let s = samples.get(name).cloned().unwrap_or_default();
        let minutes = (idle_to_s - idle_from_s) / 60.0;
        res.processes.insert(
            name.clone(),
            ProcFigures {
                peak_rss_mib: procstat::hwm_mib(*pid)
                    .or_else(|| procstat::max_rss(&s, s0, idle_to_s))
                    .unwrap_or(0.0),
                steady_rss_mib: procstat::mean_rss(&s, idle_from_s, idle_to_s).unwrap_or(0.0),
                cpu_provisioning_s: procstat::cpu_between(&s, s0, s_done).unwrap_or(0.0),
                cpu_idle_s_per_min: procstat::cpu_between(&s, idle_from_s, idle_to_s).unwrap_or(0.0)
                    / minutes.max(1e-9),
            },
        );
    }
    for pid in env
        .sim
        .as_ref()
        .map(|s| s.light_pids())
        .unwrap_or_default()
        .into_iter()
        .take(1)
    {
        res.processes.insert(
            "kube-apiserver (shared workload, light mode)".into(),
            ProcFigures {
                peak_rss_mib: procstat::hwm_mib(pid).unwrap_or(0.0),
                steady_rss_mib: procstat::rss_mib(pid).unwrap_or(0.0),
                cpu_provisioning_s: procstat::cpu_seconds(pid).unwrap_or(0.0),
                cpu_idle_s_per_min: f64::NAN,
            },
        );
    }
    let n = applied.max(1) as f64;
    let sim_mem1: f64 = mem_by_cmd.values().map(|(_, m)| m).sum();
    for (k, (count, mib)) in &mem_by_cmd {
        res.memory_mib
            .insert(format!("{k} (x{count})"), (mib * 10.0).round() / 10.0);
    }
    res.memory_mib
        .insert("all processes of the run, after".into(), sim_mem1);
    res.memory_mib.insert(
        "all processes of the run, per cluster".into(),
        (sim_mem1 - sim_mem0) / n,
    );
    res.memory_mib
        .insert("machine MemAvailable drop per cluster".into(), (mem0 - mem1) / n);

    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Some(log) = env.audit_log.clone() {
        res.requests_provisioning = audit::count(&log, unix0, unix_done);
        let idle = audit::count(&log, idle_from_unix, idle_to_unix);
        let minutes = (idle_to_unix - idle_from_unix) / 60.0;
        res.requests_idle_per_min = idle
            .iter()
            .map(|(k, c)| (k.clone(), c.total as f64 / minutes.max(1e-9)))
            .collect();
        res.requests_idle = idle;
        for who in ["mk8s-bootstrap", "mk8s-controlplane"] {
            let total = res.requests_provisioning.get(who).map_or(0, |c| c.total);
            res.requests_per_machine.insert(who.into(), total as f64 / n);
        }
    }
    for (k, v) in reconciles_done {
        res.reconciles_per_cluster.insert(k, v / n);
    }
    for (who, causes) in causes_done {
        let per: BTreeMap<String, f64> = causes.into_iter().map(|(c, v)| (c, v / n)).collect();
        let mut by_count: Vec<_> = per.iter().collect();
        by_count.sort_by(|a, b| b.1.total_cmp(a.1));
        let line: Vec<String> = by_count.iter().map(|(c, v)| format!("{c} {v:.1}")).collect();
        eprintln!("bench: {who}: reconciles per cluster by cause: {}", line.join(", "));
        res.reconcile_causes_per_cluster.insert(who, per);
    }
    res.phases = book.lock().map(|b| phase_stats(&b)).unwrap_or_default();
    env.stop().await;
    res
}
