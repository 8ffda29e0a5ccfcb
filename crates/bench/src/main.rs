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
//!
//! Results: a table on stdout and `target/bench/results.json` (`--out`), merged with the
//! sections of earlier runs. Canonical's providers (the "theirs" column) are checked with
//! `go list -m -versions`; the Go module proxy refuses them, so that column records why.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit;
mod available;
mod env;
mod procstat;
mod scale;
mod throughput;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::available::Delays;

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
}

fn usage() -> ! {
    eprintln!(
        "usage: mk8s-bench [available|throughput|resources|scale|report ...] [--runs N] [--configs N] \
         [--resources-n N] [--scale-n N] [--shared-ca] [--delays zero|realistic] [--out FILE] \
         [--manager-arg FLAG ...]"
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
    };
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
            "--delays" => a.delays.push(match it.next().as_deref() {
                Some("zero") => Delays::Zero,
                Some("realistic") => Delays::Realistic,
                _ => usage(),
            }),
            "-h" | "--help" => usage(),
            s if ["available", "throughput", "resources", "scale", "report", "all"].contains(&s) => {
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
    a
}

/// Whether the Go module proxy serves Canonical's providers; the exact error otherwise.
fn canonical_check() -> Value {
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
    json!({
        "checked_at": jiff::Timestamp::now().to_string(),
        "buildable": served,
        "modules": out,
        "note": if served {
            "the modules are served; building and running them side by side is not implemented in this bench"
        } else {
            "Canonical's providers cannot be built here (the Go module proxy refuses the modules), so the \
             'theirs' column is unavailable"
        },
    })
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
        "builds": "release builds of mk8s-bootstrap, mk8s-controlplane, mk8s-sim and mk8s-bench",
        "plane": "testenv kube-apiserver/etcd (k8s v1.36.3, etcd v3.6.16), CAPI core v1.14.2",
        "noise": "2 shared cores: compare medians and ratios from the same run only",
    })
}

async fn scenario_available(a: &Args) -> Value {
    let shapes = [(1, 1), (3, 3)];
    let delays = a.delays.clone();
    let mut runs: std::collections::BTreeMap<String, Vec<available::Run>> = Default::default();
    for r in 0..a.runs {
        for &d in &delays {
            for (cp, w) in shapes {
                let key = format!("{cp}cp+{w}w/{d:?}");
                let label = format!("available-{cp}cp{w}w-{d:?}-{r}").to_lowercase();
                eprintln!(
                    "bench: available: run {} of {}: {cp} CP + {w} workers, {}",
                    r + 1,
                    a.runs,
                    d.label()
                );
                let run = available::run_once(cp, w, d, &label).await;
                eprintln!("bench: available: {key}: {run:?}");
                runs.entry(key).or_default().push(run);
            }
        }
    }
    let mut rows = vec![];
    for &d in &delays {
        for (cp, w) in shapes {
            let key = format!("{cp}cp+{w}w/{d:?}");
            let rs = runs.remove(&key).unwrap_or_default();
            let avail: Vec<f64> = rs.iter().filter_map(|r| r.available_s).collect();
            let init: Vec<f64> = rs.iter().filter_map(|r| r.initialized_s).collect();
            let nodes: Vec<f64> = rs.iter().filter_map(|r| r.all_nodes_s).collect();
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
                "median_available_s": median(&avail),
                "median_initialized_s": median(&init),
                "median_all_nodes_s": median(&nodes),
                "median_timeline_s": timeline,
                "theirs_median_available_s": Value::Null,
                "ratio_ours_over_theirs": Value::Null,
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

async fn scenario_scale(a: &Args, n: usize, label: &str, profile_s: u64) -> Value {
    let o = scale::Options {
        clusters: n,
        wave: 50,
        min_free_mib: 3072.0,
        shared_ca: a.shared_ca,
        idle_s: 60,
        profile_s,
        timeout: Duration::from_secs(if n > 200 { 7200 } else { 1800 }),
        label: label.to_string(),
        manager_args: a.manager_args.clone(),
    };
    let r = scale::run(&o).await;
    let mut v = serde_json::to_value(&r).expect("JSON");
    v["what"] = json!(format!(
        "{n} single-control-plane clusters (no workers) on the simulator's light mode, applied in waves of {}; \
         {}; CAPI core with --kube-api-qps=100 --kube-api-burst=200; our managers with their defaults{}",
        o.wave,
        if a.shared_ca {
            "one pre-created CA shared by all clusters"
        } else {
            "a CA generated per cluster by our bootstrap provider"
        },
        if a.manager_args.is_empty() {
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

fn report(r: &Value) -> String {
    let mut t = String::new();
    let theirs = if r["canonical"]["buildable"] == true {
        "not run"
    } else {
        "unavailable¹"
    };
    t.push_str("| scenario | ours (median) | runs | theirs | ours/theirs |\n|---|---|---|---|---|\n");
    for row in r["available"]["rows"].as_array().into_iter().flatten() {
        let runs: Vec<String> = row["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                x["available_s"]
                    .as_f64()
                    .map_or("timeout".into(), |v| format!("{v:.1}"))
            })
            .collect();
        t.push_str(&format!(
            "| time to Available, {}, {} | {} | {} | {theirs} | – |\n",
            row["shape"].as_str().unwrap_or_default(),
            row["delays"].as_str().unwrap_or_default(),
            fmt_s(&row["median_available_s"]),
            runs.join(", "),
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
            "| bootstrap throughput, {n} MicroK8sConfigs → data Secrets | {} ({:.0} configs/s, {:.1} requests/config, {:.1} CPU s) | {} | {theirs} | – |\n",
            fmt_s(&tp["median_all_secrets_s"]),
            tp["median_configs_per_s"].as_f64().unwrap_or(0.0),
            tp["median_requests_per_config"].as_f64().unwrap_or(0.0),
            tp["median_cpu_s"].as_f64().unwrap_or(0.0),
            runs.join(", ")
        ));
    }
    for (key, title) in [("resources", "resources"), ("scale", "scale")] {
        let s = &r[key];
        if !s.is_object() {
            continue;
        }
        let n = s["applied"].as_u64().unwrap_or(0);
        for who in ["mk8s-bootstrap", "mk8s-controlplane"] {
            let p = &s["processes"][who];
            t.push_str(&format!(
                "| {title} at {n} clusters: {who} peak / steady RSS, CPU | {:.0} / {:.0} MiB, {:.1} CPU s provisioning, {:.2} CPU s/min idle | 1 | {theirs} | – |\n",
                p["peak_rss_mib"].as_f64().unwrap_or(0.0),
                p["steady_rss_mib"].as_f64().unwrap_or(0.0),
                p["cpu_provisioning_s"].as_f64().unwrap_or(0.0),
                p["cpu_idle_s_per_min"].as_f64().unwrap_or(0.0),
            ));
            t.push_str(&format!(
                "| {title} at {n} clusters: {who} API requests per machine (idle: per minute) | {:.1} ({:.1}/min) | 1 | {theirs} | – |\n",
                s["requests_per_machine"][who].as_f64().unwrap_or(0.0),
                s["requests_idle_per_min"][who].as_f64().unwrap_or(0.0),
            ));
        }
        t.push_str(&format!(
            "| {title}: {n} clusters applied, {} Available, total time to Available | {} ({:.0} clusters/min) | 1 | {theirs} | – |\n",
            s["available"].as_u64().unwrap_or(0),
            fmt_s(&s["total_s"]),
            s["clusters_per_min"].as_f64().unwrap_or(0.0),
        ));
        t.push_str(&format!(
            "| {title}: memory per cluster (light mode, all processes of the run) | {:.1} MiB | 1 | {theirs} | – |\n",
            s["memory_mib"]["all processes of the run, per cluster"]
                .as_f64()
                .unwrap_or(0.0)
        ));
    }
    if r["canonical"]["buildable"] != true {
        let first = r["canonical"]["modules"][0]["output"].as_str().unwrap_or_default();
        t.push_str(&format!(
            "\n¹ Canonical's v0.6.11 providers cannot be built: `go list -m -versions {}` → `{}` (both modules, every version; checked {}).\n",
            CANONICAL_MODULES[0],
            first.replace('\n', " "),
            r["canonical"]["checked_at"].as_str().unwrap_or_default()
        ));
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
    results["canonical"] = canonical_check();
    save(&a.out, &results);
    rt.block_on(async {
        for s in a.scenarios.clone() {
            match s.as_str() {
                "available" => results["available"] = scenario_available(&a).await,
                "throughput" => results["throughput"] = scenario_throughput(&a).await,
                "resources" => results["resources"] = scenario_scale(&a, a.resources_n, "resources", 0).await,
                "scale" => results["scale"] = scenario_scale(&a, a.scale_n, "scale", 30).await,
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
