//! `mk8s-bench` (`make bench`): benchmarks of our MicroK8s CAPI providers on the local
//! management plane (real kube-apiserver, real CAPI core v1.14, the MicroK8s machine
//! simulator, both managers as release processes under their ServiceAccounts).
//!
//! Scenarios (all by default; name some to run only those):
//! * `available` — time from apply to Cluster `Available` for 1 CP + 1 worker and 3 CP + 3
//!   workers, with zero delays and with 30 s VM boot + 60 s snap install (real time; the node
//!   scripts' own sleeps scaled by 0.02), median of `--runs` runs (default 3), a fresh plane per
//!   run, runs interleaved.
//! * `throughput` — bootstrap throughput: `--configs` (default 1000) worker MicroK8sConfigs
//!   of 10 clusters, creation to every data Secret written; median of `--runs` runs.
//! * `resources` — `--resources-n` (default 100) single-control-plane clusters on the
//!   simulator's light mode: peak/steady RSS and CPU of each manager, API requests per machine
//!   by identity (audit log).
//! * `scale` — `--scale-n` (default 1000) single-control-plane clusters, light mode: total
//!   time to Available, where the time goes, memory per cluster, a short `perf` profile.
//! * `takeover` (not in `all`; `make takeover` runs it) — Canonical's running managers
//!   provision a 3 + 2 cluster, then ours take it over as the README's cut-over does, checked
//!   like the synthetic takeover test; needs "theirs" (below), else it records why it did not
//!   run.
//!
//! Results: a table on stdout and `target/bench/results.json` (`--out`), merged with the
//! sections of earlier runs.
//!
//! The "theirs" column: Canonical's providers from a directory built by
//! `hack/build-canonical.sh` (`--theirs DIR`, default `~/.cache/mk8s-capi-canonical/v0.6.11`
//! when complete). With it, `available` alternates ours and theirs (A B A B …, a fresh plane
//! each) and `resources` runs both; the table gives medians and ours/theirs ratios. Without
//! it, the column records exactly why it is missing (the build's recorded error and
//! `go list -m -versions` of both modules).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit;
mod available;
mod env;
mod procstat;
mod scale;
mod takeover;
mod theirs;
mod throughput;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::available::Delays;
use crate::theirs::{Provider, Theirs};

const CANONICAL_MODULES: [&str; 2] = [
    "github.com/canonical/cluster-api-bootstrap-provider-microk8s",
    "github.com/canonical/cluster-api-control-plane-provider-microk8s",
];

struct Args {
    scenarios: Vec<String>,
    runs: usize,
    configs: usize,
    resources_n: usize,
    scale_n: usize,
    shared_ca: bool,
    out: PathBuf,
    manager_args: Vec<String>,
    delays: Vec<Delays>,
    /// Canonical's providers, or why they are missing.
    theirs: Result<Theirs, String>,
}

/// Where `hack/build-canonical.sh` puts Canonical's providers by default.
fn default_theirs_dir() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_default();
    PathBuf::from(home).join(".cache/mk8s-capi-canonical/v0.6.11")
}

fn usage() -> ! {
    eprintln!(
        "usage: mk8s-bench [available|throughput|resources|scale|takeover|report ...] [--runs N] [--configs N] \
         [--resources-n N] [--scale-n N] [--shared-ca] [--delays zero|realistic] [--out FILE] \
         [--manager-arg FLAG ...] [--theirs DIR]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let target = std::env::var("CARGO_TARGET_DIR").map_or_else(|_| PathBuf::from("target"), PathBuf::from);
    let mut a = Args {
        scenarios: vec![],
        runs: 3,
        configs: 1000,
        resources_n: 100,
        scale_n: 1000,
        shared_ca: false,
        out: std::env::var("BENCH_OUT").map_or_else(|_| target.join("bench/results.json"), PathBuf::from),
        manager_args: vec![],
        delays: vec![],
        theirs: Err(String::new()),
    };
    let mut theirs_dir = std::env::var("MK8S_BENCH_THEIRS").ok().map(PathBuf::from);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> usize {
            it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("{name} needs a number");
                usage()
            })
        };
        match arg.as_str() {
            "--runs" => a.runs = num("--runs").max(1),
            "--configs" => a.configs = num("--configs").max(10),
            "--resources-n" => a.resources_n = num("--resources-n").max(1),
            "--scale-n" => a.scale_n = num("--scale-n").max(1),
            "--shared-ca" => a.shared_ca = true,
            "--out" => a.out = it.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            "--manager-arg" => a.manager_args.push(it.next().unwrap_or_else(|| usage())),
            "--theirs" => theirs_dir = Some(it.next().map(PathBuf::from).unwrap_or_else(|| usage())),
            "--delays" => a.delays.push(match it.next().as_deref() {
                Some("zero") => Delays::Zero,
                Some("realistic") => Delays::Realistic,
                _ => usage(),
            }),
            "-h" | "--help" => usage(),
            s if [
                "available",
                "throughput",
                "resources",
                "scale",
                "takeover",
                "report",
                "all",
            ]
            .contains(&s) =>
            {
                a.scenarios.push(s.to_string());
            }
            other => {
                eprintln!("unknown argument {other:?}");
                usage()
            }
        }
    }
    if a.scenarios.is_empty() || a.scenarios.iter().any(|s| s == "all") {
        a.scenarios = ["available", "throughput", "resources", "scale"]
            .map(String::from)
            .to_vec();
    }
    if a.delays.is_empty() {
        a.delays = vec![Delays::Zero, Delays::Realistic];
    }
    a.theirs = match theirs_dir {
        // Asked for explicitly: it must be complete.
        Some(dir) => Ok(Theirs::load(&dir).unwrap_or_else(|e| {
            eprintln!("--theirs {}: {e}", dir.display());
            std::process::exit(2)
        })),
        None => {
            let dir = default_theirs_dir();
            Theirs::load(&dir).map_err(|e| {
                let failed = PathBuf::from(format!("{}.failed", dir.display()));
                match std::fs::read_to_string(&failed) {
                    Ok(why) => format!("hack/build-canonical.sh failed: {}", why.trim()),
                    Err(_) => format!("{e} (run hack/build-canonical.sh)"),
                }
            })
        }
    };
    a
}

/// The build profile of this executable (`target/<profile>/mk8s-bench`): `release` under
/// `make bench`, `debug` under `make takeover`.
fn profile() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.file_name()?.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown".into())
}

/// Canonical's providers for this run: where they come from, or exactly why they are missing
/// (the build's recorded error, and what the Go module proxy says of both modules now).
fn canonical_status(theirs: &Result<Theirs, String>) -> Value {
    let dir = std::env::temp_dir();
    let mut out = vec![];
    for m in CANONICAL_MODULES {
        let r = std::process::Command::new("go")
            .args(["list", "-m", "-versions", m])
            .current_dir(&dir)
            .env("GOFLAGS", "-mod=mod")
            .output();
        let (ok, text) = match r {
            Ok(o) => (
                o.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
                .trim()
                .to_string(),
            ),
            Err(e) => (false, format!("cannot run go: {e}")),
        };
        out.push(json!({"module": m, "command": format!("go list -m -versions {m}"), "served": ok, "output": text}));
    }
    let served = out.iter().all(|o| o["served"] == true);
    match theirs {
        Ok(t) => json!({
            "checked_at": jiff::Timestamp::now().to_string(),
            "available": true,
            "dir": t.dir.display().to_string(),
            "version": t.version,
            "modules_served": served,
            "modules": out,
            "note": "their managers run out of cluster under the same ServiceAccount names as ours (bound to \
                     cluster-admin, as their own RBAC is not installed), with their CRDs labelled for the \
                     v1beta1 contract only; their MachineDeployments carry \
                     machineset.cluster.x-k8s.io/skip-preflight-checks: ControlPlaneIsStable because they \
                     report no status.version; they run without leader election (their main.go has no flag for its \
                     namespace, which controller-runtime cannot find out of cluster), so their idle request \
                     figures lack the lease renewals that ours include (about 12 per minute per manager)",
        }),
        Err(why) => json!({
            "checked_at": jiff::Timestamp::now().to_string(),
            "available": false,
            "why": why,
            "modules_served": served,
            "modules": out,
            "note": "Canonical's providers are not available here, so the 'theirs' column is empty",
        }),
    }
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn load(path: &PathBuf) -> Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| json!({}))
}

fn save(path: &PathBuf, v: &Value) {
    if let Some(d) = path.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let text = serde_json::to_string_pretty(v).expect("JSON");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn meta() -> Value {
    let git = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(mk8s_testenv::workspace_root())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(mk8s_testenv::workspace_root())
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| t.lines().next().map(str::to_string))
        .unwrap_or_default();
    json!({
        "date": jiff::Timestamp::now().to_string(),
        "git": format!("{git}{}", if dirty { " (with uncommitted changes)" } else { "" }),
        "cpus": cpus,
        "memory": mem,
        "builds": format!("{} builds of mk8s-bootstrap, mk8s-controlplane, mk8s-sim and mk8s-bench", profile()),
        "plane": "testenv kube-apiserver/etcd (k8s v1.36.3, etcd v3.6.16), CAPI core v1.14.2",
        "noise": "2 shared cores: compare medians and ratios from the same run only",
    })
}

/// Median of one figure over the runs that have it.
fn median_of(runs: &[available::Run], figure: impl Fn(&available::Run) -> Option<f64>) -> Option<f64> {
    median(&runs.iter().filter_map(figure).collect::<Vec<_>>())
}

/// The providers a scenario compares: ours, then theirs when available.
fn providers(a: &Args) -> Vec<Provider> {
    let mut v = vec![Provider::Ours];
    if let Ok(t) = &a.theirs {
        v.push(Provider::Theirs(t.clone()));
    }
    v
}

/// `ours / theirs`, when both are known.
fn ratio(ours: &Value, theirs: &Value) -> Value {
    match (ours.as_f64(), theirs.as_f64()) {
        (Some(o), Some(t)) if t > 0.0 => json!(o / t),
        _ => Value::Null,
    }
}

async fn scenario_available(a: &Args) -> Value {
    let shapes = [(1, 1), (3, 3)];
    let delays = a.delays.clone();
    let providers = providers(a);
    let mut runs: std::collections::BTreeMap<String, Vec<available::Run>> = Default::default();
    for r in 0..a.runs {
        for &d in &delays {
            for (cp, w) in shapes {
                // Ours and theirs back to back (A B A B …), each on a fresh plane.
                for p in &providers {
                    let who = p.label();
                    let key = format!("{who}/{cp}cp+{w}w/{d:?}");
                    let label = format!("available-{who}-{cp}cp{w}w-{d:?}-{r}").to_lowercase();
                    eprintln!(
                        "bench: available: run {} of {}: {who}, {cp} CP + {w} workers, {}",
                        r + 1,
                        a.runs,
                        d.label()
                    );
                    let run = available::run_once(cp, w, d, &label, p).await;
                    eprintln!("bench: available: {key}: {run:?}");
                    runs.entry(key).or_default().push(run);
                }
            }
        }
    }
    let mut rows = vec![];
    for &d in &delays {
        for (cp, w) in shapes {
            let theirs_runs = runs.remove(&format!("theirs/{cp}cp+{w}w/{d:?}")).unwrap_or_default();
            let theirs_median = json!(median_of(&theirs_runs, |r| r.available_s));
            let rs = runs.remove(&format!("ours/{cp}cp+{w}w/{d:?}")).unwrap_or_default();
            let timeline: serde_json::Map<String, Value> = available::TIMELINE
                .iter()
                .map(|step| {
                    let ts: Vec<f64> = rs.iter().filter_map(|r| r.timeline.get(step).copied()).collect();
                    (step.to_string(), json!(median(&ts)))
                })
                .collect();
            rows.push(json!({
                "shape": format!("{cp} CP + {w} workers"),
                "delays": d.label(),
                "runs": rs,
                "failed_runs": rs.iter().filter(|r| r.available_s.is_none()).count(),
                "median_available_s": median_of(&rs, |r| r.available_s),
                "median_initialized_s": median_of(&rs, |r| r.initialized_s),
                "median_all_nodes_s": median_of(&rs, |r| r.all_nodes_s),
                "median_timeline_s": timeline,
                "ratio_ours_over_theirs": ratio(&json!(median_of(&rs, |r| r.available_s)), &theirs_median),
                "theirs_median_available_s": theirs_median,
                "theirs_failed_runs": theirs_runs.iter().filter(|r| r.available_s.is_none()).count(),
                "theirs_median_initialized_s": median_of(&theirs_runs, |r| r.initialized_s),
                "theirs_median_all_nodes_s": median_of(&theirs_runs, |r| r.all_nodes_s),
                "theirs_runs": theirs_runs,
            }));
        }
    }
    json!({
        "what": "seconds from applying the cluster's objects to the Cluster's Available condition (CAPI v1.14), \
                 median of runs on a fresh plane each; simulator in its normal mode (a real kube-apiserver per \
                 cluster); realistic = 30 s VM boot + 60 s snap install in real time, node scripts' sleeps scaled \
                 by 0.02",
        "rows": rows,
    })
}

async fn scenario_throughput(a: &Args) -> Value {
    let clusters = 10;
    let per = (a.configs / clusters).max(1);
    let mut runs = vec![];
    for r in 0..a.runs {
        eprintln!("bench: throughput: run {} of {}", r + 1, a.runs);
        let run = throughput::run_once(clusters, per, &format!("throughput-{r}"), &a.manager_args).await;
        eprintln!(
            "bench: throughput: {} configs, all data Secrets in {:.2}s ({:.0}/s), {:.2} requests and {:.2} reconciles per config, {:.1} CPU s",
            run.configs,
            run.all_secrets_s,
            run.per_second,
            run.requests_per_config,
            run.reconciles_per_config,
            run.cpu_s
        );
        runs.push(run);
    }
    let secs: Vec<f64> = runs.iter().map(|r| r.all_secrets_s).collect();
    json!({
        "what": format!("{} worker MicroK8sConfigs of {clusters} initialized clusters, from the first creation to every data Secret written (bootstrap manager only; the bench plays CAPI)", clusters * per),
        "runs": runs,
        "median_all_secrets_s": median(&secs),
        "median_configs_per_s": median(&runs.iter().map(|r| r.per_second).collect::<Vec<_>>()),
        "median_requests_per_config": median(&runs.iter().map(|r| r.requests_per_config).collect::<Vec<_>>()),
        "median_cpu_s": median(&runs.iter().map(|r| r.cpu_s).collect::<Vec<_>>()),
        "theirs": Value::Null,
    })
}

async fn scenario_scale(a: &Args, n: usize, label: &str, profile_s: u64, provider: &Provider) -> Value {
    let o = scale::Options {
        clusters: n,
        wave: 50,
        min_free_mib: 3072.0,
        shared_ca: a.shared_ca,
        idle_s: 60,
        profile_s,
        timeout: Duration::from_secs(if n > 200 { 7200 } else { 1800 }),
        label: format!("{label}-{}", provider.label()),
        manager_args: a.manager_args.clone(),
        provider: provider.clone(),
    };
    let r = scale::run(&o).await;
    let mut v = serde_json::to_value(&r).expect("JSON");
    v["what"] = json!(format!(
        "{n} single-control-plane clusters (no workers) on the simulator's light mode, applied in waves of {}; \
         {}; CAPI core with --kube-api-qps=100 --kube-api-burst=200; {}{}",
        o.wave,
        if a.shared_ca {
            "one pre-created CA shared by all clusters"
        } else {
            "a CA generated per cluster by the bootstrap provider"
        },
        match provider {
            Provider::Ours => "our managers with their defaults".to_string(),
            Provider::Theirs(t) => format!("Canonical's managers {} with their defaults", t.version),
        },
        if a.manager_args.is_empty() || matches!(provider, Provider::Theirs(_)) {
            String::new()
        } else {
            format!(" and {}", a.manager_args.join(" "))
        }
    ));
    v
}

fn fmt_s(v: &Value) -> String {
    v.as_f64().map_or("–".into(), |x| format!("{x:.1} s"))
}

/// A "theirs" cell and a ratio cell from their figure (`–` without one).
fn theirs_cells(ours: &Value, theirs: &Value, fmt: impl Fn(f64) -> String, missing: &str) -> (String, String) {
    match theirs.as_f64() {
        Some(t) => (
            fmt(t),
            ratio(ours, theirs).as_f64().map_or("–".into(), |x| format!("{x:.2}")),
        ),
        None => (missing.to_string(), "–".into()),
    }
}

fn report(r: &Value) -> String {
    let mut t = String::new();
    let available = r["canonical"]["available"] == true;
    let missing = if available { "not run" } else { "unavailable¹" };
    let compared = ["available", "throughput", "resources", "scale"]
        .iter()
        .any(|k| r[*k].is_object());
    if compared {
        t.push_str("| scenario | ours (median) | runs | theirs (median) | ours/theirs |\n|---|---|---|---|---|\n");
    }
    let runs_of = |runs: &Value| -> String {
        runs.as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                x["available_s"]
                    .as_f64()
                    .map_or("timeout".into(), |v| format!("{v:.1}"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    for row in r["available"]["rows"].as_array().into_iter().flatten() {
        let (theirs, ratio) = theirs_cells(
            &row["median_available_s"],
            &row["theirs_median_available_s"],
            |x| format!("{x:.1} s ({})", runs_of(&row["theirs_runs"])),
            if row["theirs_runs"].as_array().is_some_and(|v| !v.is_empty()) {
                "timeout"
            } else {
                missing
            },
        );
        t.push_str(&format!(
            "| time to Available, {}, {} | {} | {} | {theirs} | {ratio} |\n",
            row["shape"].as_str().unwrap_or_default(),
            row["delays"].as_str().unwrap_or_default(),
            fmt_s(&row["median_available_s"]),
            runs_of(&row["runs"]),
        ));
    }
    let tp = &r["throughput"];
    if tp.is_object() {
        let runs: Vec<String> = tp["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| format!("{:.1}", x["all_secrets_s"].as_f64().unwrap_or(0.0)))
            .collect();
        let n = tp["runs"][0]["configs"].as_u64().unwrap_or(0);
        t.push_str(&format!(
            "| bootstrap throughput, {n} MicroK8sConfigs → data Secrets | {} ({:.0} configs/s, {:.1} requests/config, {:.1} CPU s) | {} | {}² | – |\n",
            fmt_s(&tp["median_all_secrets_s"]),
            tp["median_configs_per_s"].as_f64().unwrap_or(0.0),
            tp["median_requests_per_config"].as_f64().unwrap_or(0.0),
            tp["median_cpu_s"].as_f64().unwrap_or(0.0),
            runs.join(", "),
            if available { "not run" } else { "unavailable" },
        ));
    }
    for (key, title) in [("resources", "resources"), ("scale", "scale")] {
        let s = &r[key];
        if !s.is_object() {
            continue;
        }
        // Theirs only where the scenario compares (resources).
        let th = if key == "resources" {
            &r["resources_theirs"]
        } else {
            &Value::Null
        };
        let miss = if key == "resources" { missing } else { "ours only" };
        let n = s["applied"].as_u64().unwrap_or(0);
        for who in ["mk8s-bootstrap", "mk8s-controlplane"] {
            let role = if who == "mk8s-bootstrap" {
                "bootstrap manager"
            } else {
                "control plane manager"
            };
            let p = &s["processes"][who];
            let q = &th["processes"][who];
            let (theirs, ratio) = theirs_cells(
                &p["peak_rss_mib"],
                &q["peak_rss_mib"],
                |x| {
                    format!(
                        "{x:.0} / {:.0} MiB, {:.1} CPU s, {:.2} CPU s/min idle",
                        q["steady_rss_mib"].as_f64().unwrap_or(0.0),
                        q["cpu_provisioning_s"].as_f64().unwrap_or(0.0),
                        q["cpu_idle_s_per_min"].as_f64().unwrap_or(0.0)
                    )
                },
                miss,
            );
            t.push_str(&format!(
                "| {title} at {n} clusters: {role} peak / steady RSS, CPU (ratio: peak RSS) | {:.0} / {:.0} MiB, {:.1} CPU s provisioning, {:.2} CPU s/min idle | 1 | {theirs} | {ratio} |\n",
                p["peak_rss_mib"].as_f64().unwrap_or(0.0),
                p["steady_rss_mib"].as_f64().unwrap_or(0.0),
                p["cpu_provisioning_s"].as_f64().unwrap_or(0.0),
                p["cpu_idle_s_per_min"].as_f64().unwrap_or(0.0),
            ));
            let (theirs, ratio) = theirs_cells(
                &s["requests_per_machine"][who],
                &th["requests_per_machine"][who],
                |x| {
                    format!(
                        "{x:.1} ({:.1}/min)",
                        th["requests_idle_per_min"][who].as_f64().unwrap_or(0.0)
                    )
                },
                miss,
            );
            t.push_str(&format!(
                "| {title} at {n} clusters: {role} API requests per machine (idle: per minute; status writes repeating the previous one) | {:.1} ({:.1}/min; {} repeated) | 1 | {theirs} | {ratio} |\n",
                s["requests_per_machine"][who].as_f64().unwrap_or(0.0),
                s["requests_idle_per_min"][who].as_f64().unwrap_or(0.0),
                s["requests_provisioning"][who]["repeated_status_writes"].as_u64().unwrap_or(0),
            ));
        }
        let (theirs, ratio) = theirs_cells(
            &s["total_s"],
            &th["total_s"],
            |x| format!("{x:.1} s"),
            if th.is_object() { "not all Available" } else { miss },
        );
        t.push_str(&format!(
            "| {title}: {n} clusters applied, {} Available, total time to Available | {} ({:.0} clusters/min) | 1 | {theirs} | {ratio} |\n",
            s["available"].as_u64().unwrap_or(0),
            fmt_s(&s["total_s"]),
            s["clusters_per_min"].as_f64().unwrap_or(0.0),
        ));
        let key_mem = "all processes of the run, per cluster";
        let (theirs, ratio) = theirs_cells(
            &s["memory_mib"][key_mem],
            &th["memory_mib"][key_mem],
            |x| format!("{x:.1} MiB"),
            miss,
        );
        t.push_str(&format!(
            "| {title}: memory per cluster (light mode, all processes of the run) | {:.1} MiB | 1 | {theirs} | {ratio} |\n",
            s["memory_mib"][key_mem].as_f64().unwrap_or(0.0)
        ));
    }
    // A takeover alone says for itself whether theirs ran.
    if compared && available {
        t.push_str(&format!(
            "\nTheirs: {} from {}.\n",
            r["canonical"]["version"].as_str().unwrap_or_default(),
            r["canonical"]["dir"].as_str().unwrap_or_default()
        ));
    } else if compared {
        let first = r["canonical"]["modules"][0]["output"].as_str().unwrap_or_default();
        t.push_str(&format!(
            "\n¹ Canonical's providers are not available: {}; `go list -m -versions {}` → `{}` (checked {}).\n",
            r["canonical"]["why"].as_str().unwrap_or_default().replace('\n', " "),
            CANONICAL_MODULES[0],
            first.replace('\n', " "),
            r["canonical"]["checked_at"].as_str().unwrap_or_default()
        ));
    }
    if tp.is_object() {
        t.push_str(
            "² The throughput scenario plays CAPI itself (no CAPI core, so no conversion webhook); Canonical's \
             bootstrap manager reads Clusters as v1beta1 and waits for their v1beta1 ControlPlaneInitialized \
             condition, which only CAPI's conversion produces, so it runs for ours only.\n",
        );
    }
    if r["takeover"].is_object() {
        t.push_str(&takeover::report(&r["takeover"]));
    }
    t
}

fn main() {
    let a = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut results = load(&a.out);
    results["meta"] = meta();
    results["canonical"] = canonical_status(&a.theirs);
    save(&a.out, &results);
    rt.block_on(async {
        for s in a.scenarios.clone() {
            match s.as_str() {
                "available" => results["available"] = scenario_available(&a).await,
                "throughput" => results["throughput"] = scenario_throughput(&a).await,
                "resources" => {
                    results["resources_theirs"] = Value::Null;
                    for p in providers(&a) {
                        let key = match p {
                            Provider::Ours => "resources",
                            Provider::Theirs(_) => "resources_theirs",
                        };
                        results[key] = scenario_scale(&a, a.resources_n, "resources", 0, &p).await;
                        save(&a.out, &results);
                    }
                }
                "scale" => results["scale"] = scenario_scale(&a, a.scale_n, "scale", 30, &Provider::Ours).await,
                "takeover" => {
                    results["takeover"] = match &a.theirs {
                        Ok(t) => takeover::run(t).await,
                        Err(why) => json!({"ran": false, "why": why}),
                    }
                }
                _ => {}
            }
            save(&a.out, &results);
        }
    });
    let table = report(&results);
    println!("{table}");
    println!("results: {}", a.out.display());
    if std::env::var("BENCH_KEEP").as_deref() != Ok("1") {
        let _ = std::fs::remove_dir_all(env::work_root());
    }
}
