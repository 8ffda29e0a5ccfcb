//! `mk8s-demo` (`make demo`): the main job on the built-in local simulator. Starts a local
//! management plane (real kube-apiserver, the real CAPI core manager, the MicroK8s machine
//! simulator, both providers under their own ServiceAccounts), applies a sample cluster of 3
//! control plane and 2 worker nodes, shows live progress, and ends with the workload cluster's
//! kubeconfig and `kubectl get nodes -o wide`. Ctrl-C tears everything down.
//!
//! `--non-interactive` (or no terminal) prints progress lines instead of a live table and exits
//! once the cluster is Available. `--control-planes N`, `--workers N`, `--version vX.Y.Z`
//! change the sample cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use mk8s_api::capi::MachineExt;
use mk8s_e2e::cluster::{self, Shape};

struct Args {
    interactive: bool,
    control_planes: i32,
    workers: i32,
    version: String,
    timeout: Duration,
}

fn parse_args() -> Args {
    let mut a = Args {
        interactive: std::io::stdout().is_terminal(),
        control_planes: 3,
        workers: 2,
        version: "v1.33.0".into(),
        timeout: Duration::from_secs(900),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| die(&format!("{name} needs a value")));
        match arg.as_str() {
            "--non-interactive" => a.interactive = false,
            "--control-planes" => {
                a.control_planes = value(&arg)
                    .parse()
                    .unwrap_or_else(|_| die("--control-planes: a number"))
            }
            "--workers" => a.workers = value(&arg).parse().unwrap_or_else(|_| die("--workers: a number")),
            "--version" => a.version = value(&arg),
            "--timeout" => {
                a.timeout = Duration::from_secs(value(&arg).parse().unwrap_or_else(|_| die("--timeout: seconds")))
            }
            "-h" | "--help" => {
                println!(
                    "usage: mk8s-demo [--non-interactive] [--control-planes N] [--workers N] [--version vX.Y.Z] [--timeout SECONDS]"
                );
                std::process::exit(0);
            }
            other => die(&format!("unknown argument {other:?} (see --help)")),
        }
    }
    if a.control_planes < 1 || a.workers < 0 {
        die("--control-planes must be at least 1 and --workers at least 0");
    }
    a
}

fn die(msg: &str) -> ! {
    eprintln!("mk8s-demo: {msg}");
    std::process::exit(2)
}

#[derive(Default, PartialEq)]
struct Snapshot {
    available: String,
    rows: Vec<[String; 6]>,
}

async fn snapshot(client: &kube::Client, ns: &str, name: &str) -> Snapshot {
    let clusters = cluster::dynamic(client, ns, "cluster.x-k8s.io/v1beta2", "Cluster");
    let available = match clusters.get(name).await {
        Ok(c) => c.data["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Available"))
            .map(|c| {
                let status = c["status"].as_str().unwrap_or("Unknown");
                let msg = c["message"]
                    .as_str()
                    .unwrap_or_default()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("* ")
                    .to_string();
                if status == "True" {
                    "True".to_string()
                } else {
                    format!("{status}: {msg}")
                }
            })
            .unwrap_or_else(|| "Unknown".into()),
        Err(e) => format!("error: {e}"),
    };
    let mut rows: Vec<[String; 6]> = cluster::machines(client, ns, name)
        .await
        .iter()
        .map(|m| {
            let st = m.status.as_ref();
            [
                m.metadata.name.clone().unwrap_or_default(),
                if m.is_control_plane() {
                    "control-plane"
                } else {
                    "worker"
                }
                .to_string(),
                st.and_then(|s| s.phase.clone()).unwrap_or_else(|| "-".into()),
                m.spec.version.clone().unwrap_or_default(),
                m.node_name().unwrap_or("-").to_string(),
                m.condition("Ready")
                    .map(|c| c.status.clone())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    rows.sort();
    Snapshot { available, rows }
}

fn render(s: &Snapshot, elapsed: Duration, name: &str) -> String {
    let mut out = format!("Cluster {name}  Available: {}   ({:.0?})\n\n", s.available, elapsed);
    let header = ["MACHINE", "ROLE", "PHASE", "VERSION", "NODE", "READY"];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &s.rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: &[&str]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i] + 2))
            .collect::<String>()
            .trim_end()
            .to_string()
            + "\n"
    };
    out.push_str(&line(&header));
    for r in &s.rows {
        out.push_str(&line(&r.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    out
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let start = Instant::now();
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nmk8s-demo: interrupted, tearing down");
            // Every process of the plane dies with this one (PR_SET_PDEATHSIG); the testenv
            // janitor removes their files.
            std::process::exit(130);
        }
    });
    eprintln!("mk8s-demo: starting the local management plane (kube-apiserver, CAPI core, simulator, providers)…");
    let env = match tokio::task::spawn_blocking(mk8s_e2e::env).await.expect("environment") {
        Some(env) => env,
        None => die("the test binaries are missing: run `make demo` (it builds them) or hack/build-testenv.sh --all"),
    };
    eprintln!(
        "mk8s-demo: management plane ready after {:.1?}; management kubeconfig: {}",
        start.elapsed(),
        env.plane.kubeconfig_path().display()
    );
    let client = env.plane.client().await;
    let ns = env.plane.namespace("demo").await.expect("namespace");
    let name = "demo";
    let mut shape = Shape::new(name, args.control_planes, args.workers);
    shape.version = args.version.clone();
    cluster::apply(&client, &ns, &shape.objects()).await;
    eprintln!(
        "mk8s-demo: applied Cluster {ns}/{name} ({} control plane, {} workers, {})",
        args.control_planes, args.workers, args.version
    );

    let t0 = Instant::now();
    let mut last = Snapshot::default();
    loop {
        let s = snapshot(&client, &ns, name).await;
        let ready = s.available == "True"
            && s.rows.len() == (args.control_planes + args.workers) as usize
            && s.rows.iter().all(|r| r[2] == "Running" && r[4] != "-");
        if args.interactive {
            print!("\x1b[H\x1b[2J{}", render(&s, t0.elapsed(), name));
            let _ = std::io::stdout().flush();
        } else if s != last {
            let phases: Vec<String> = s.rows.iter().map(|r| format!("{}={}", r[0], r[2])).collect();
            println!(
                "[{:>5.0?}] Available={} machines: {}",
                t0.elapsed(),
                s.available,
                phases.join(" ")
            );
        }
        last = s;
        if ready {
            break;
        }
        if t0.elapsed() > args.timeout {
            eprintln!(
                "mk8s-demo: the cluster did not become Available within {:?}; logs in {}",
                args.timeout,
                env.dir.display()
            );
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get(&format!("{name}-kubeconfig"))
        .await
        .expect("kubeconfig Secret");
    let kubeconfig = secret
        .data
        .unwrap_or_default()
        .get("value")
        .map(|b| b.0.clone())
        .unwrap_or_default();
    let path = env.dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&path, kubeconfig).expect("write kubeconfig");
    println!(
        "\nCluster {ns}/{name} is Available after {:.0?} ({:.0?} including the management plane).",
        t0.elapsed(),
        start.elapsed()
    );
    println!("Workload kubeconfig: {}\n", path.display());
    let out = std::process::Command::new("kubectl")
        .arg(format!("--kubeconfig={}", path.display()))
        .args(["get", "nodes", "-o", "wide"])
        .output()
        .expect("kubectl is installed");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        std::process::exit(1);
    }
    if args.interactive {
        println!(
            "\nManagement cluster: kubectl --kubeconfig {} get clusters,machines -A",
            env.plane.kubeconfig_path().display()
        );
        println!("Press Ctrl-C to tear everything down.");
        std::future::pending::<()>().await;
    }
}
