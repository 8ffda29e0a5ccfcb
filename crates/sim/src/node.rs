//! A node's life: the "VM" (a private mount, PID and UTS namespace over the node's tree,
//! with its own sockets), cloud-init (write_files, bootcmd, runcmd as a `/bin/sh` script in
//! that namespace), and its end.
//!
//! The namespace is held by `unshare --mount --uts --pid --fork --kill-child` running a small
//! `/bin/sh` (PID 1 of the namespace) that sets the host name, bind-mounts the node's
//! directories ([`BOUND_DIRS`]) over the host's and then waits forever. Everything the node
//! runs (runcmd, the kubelet's pods) enters it with `nsenter`. Killing PID 1 kills every
//! process of the node; the holder is started with `PR_SET_PDEATHSIG`, so a dying simulator
//! takes its nodes along.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::cloudconfig::{self, InstanceData};
use crate::state::{BOUND_DIRS, NodeRt, Phase, Role, Sim, lock};

/// The script of a node's namespace holder: `$1` tree, `$2` host name, `$3` ready file,
/// `$4` the node's snapd socket, `$5` its simulator socket (both bound on the host in a short
/// directory: unix socket paths are limited to 108 bytes).
const HOLDER: &str = r#"set -e
root=$1 host=$2 ready=$3 snapd=$4 sim=$5
hostname "$host"
for d in /var/snap /capi-scripts /capi /var/tmp /run /etc/systemd/system /var/lib/cloud; do
  mount --bind "$root$d" "$d"
done
mkdir -p /run/mk8s-sim
: >/run/snapd.socket
: >/run/mk8s-sim/sim.sock
mount --bind "$snapd" /run/snapd.socket
mount --bind "$sim" /run/mk8s-sim/sim.sock
echo ready >"$ready"
while :; do sleep 3600 & wait $!; done
"#;

/// Standard `PATH` of a node (without the stubs).
pub const NODE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Creates the host directories the node directories are mounted over (empty; nothing is
/// ever written to them on the host).
pub fn ensure_mountpoints() -> Result<(), String> {
    for d in BOUND_DIRS {
        std::fs::create_dir_all(d).map_err(|e| format!("creating the mount point {d}: {e}"))?;
    }
    Ok(())
}

/// Creates the node's tree.
fn prepare_tree(node: &NodeRt) -> std::io::Result<()> {
    for d in BOUND_DIRS {
        std::fs::create_dir_all(node.root.join(d.trim_start_matches('/')))?;
    }
    for d in [
        "run/mk8s-sim",
        "var/lib/cloud/instance/scripts",
        "var/log",
        "etc",
        "var/snap",
    ] {
        std::fs::create_dir_all(node.root.join(d))?;
    }
    std::fs::write(node.root.join("etc/hostname"), format!("{}\n", node.hostname))?;
    Ok(())
}

/// Starts the namespace holder and waits until its mounts are in place. Returns the host
/// pid of the namespace's PID 1.
async fn start_holder(node: &NodeRt) -> Result<u32, String> {
    let ready = node.dir.join("ns-ready");
    let _ = std::fs::remove_file(&ready);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node.dir.join("namespace.log"))
        .map_err(|e| format!("namespace log: {e}"))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--uts",
        "--pid",
        "--fork",
        "--kill-child",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        HOLDER,
        "mk8s-sim-node",
    ])
    .arg(&node.root)
    .arg(&node.hostname)
    .arg(&ready)
    .arg(node.socket("snapd"))
    .arg(node.socket("sim"))
    .env_clear()
    .env("PATH", NODE_PATH)
    .stdin(Stdio::null())
    .stdout(log)
    .stderr(log2)
    .process_group(0);
    let mut child = mk8s_testenv::spawn_with_pdeathsig(cmd).map_err(|e| format!("starting unshare: {e}"))?;
    let upid = child.id();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(node.dir.join("namespace.log")).unwrap_or_default();
            return Err(format!(
                "the node's namespace could not be set up ({status}): {}",
                text.trim()
            ));
        }
        if ready.exists() {
            let children = std::fs::read_to_string(format!("/proc/{upid}/task/{upid}/children")).unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next().and_then(|p| p.parse().ok()) {
                *lock(&node.holder) = Some(child);
                return Ok(pid);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the node's namespace was not ready after 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A command run inside the node's namespaces (`nsenter`), with an empty environment.
pub fn ns_command(ns_pid: u32, workdir: &str, program: &str, args: &[String]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--target={ns_pid}"))
        .args(["--mount", "--uts", "--pid"])
        .arg(format!("--wd={workdir}"))
        .arg("--")
        .arg(program)
        .args(args)
        .env_clear()
        .stdin(Stdio::null());
    cmd
}

fn write_file(node: &NodeRt, f: &cloudconfig::File) -> std::io::Result<()> {
    use std::io::Write as _;
    let path = node.root.join(f.path.trim_start_matches('/'));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(f.append)
        .truncate(!f.append)
        .open(&path)?;
    file.write_all(&f.content)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))
}

/// Runs a `/bin/sh` script in the node, output appended to its cloud-init log. Returns the
/// exit code (-1 when killed).
async fn run_script(sim: &Sim, node: &NodeRt, ns_pid: u32, name: &str, script: &str) -> Result<i32, String> {
    let node_path = format!("/var/lib/cloud/instance/scripts/{name}");
    let host = node.root.join(node_path.trim_start_matches('/'));
    std::fs::write(&host, script).map_err(|e| format!("writing {node_path}: {e}"))?;
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node.log_path())
        .map_err(|e| e.to_string())?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = ns_command(ns_pid, "/", "/bin/sh", &[node_path]);
    cmd.env("PATH", format!("{}:{NODE_PATH}", sim.stub_dir.display()))
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8")
        .env("INSTANCE_ID", node.provider_id())
        .stdout(log)
        .stderr(log2)
        .process_group(0);
    let mut child = mk8s_testenv::spawn_with_pdeathsig(cmd).map_err(|e| format!("starting nsenter: {e}"))?;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(status.code().unwrap_or(-1))
}

/// The last lines of the node's cloud-init log (at most 4000 bytes).
pub fn log_tail(node: &NodeRt, lines: usize) -> String {
    let text = std::fs::read_to_string(node.log_path()).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let mut tail = all[all.len().saturating_sub(lines)..].join("\n");
    if tail.len() > 4000 {
        let cut = tail.len() - 4000;
        let cut = (cut..tail.len())
            .find(|i| tail.is_char_boundary(*i))
            .unwrap_or(tail.len());
        tail = tail[cut..].to_string();
    }
    tail
}

fn fail(sim: &Sim, node: &NodeRt, message: String) {
    node.log(&format!("mk8s-sim: {message}"));
    {
        let mut st = lock(&node.st);
        st.phase = Phase::BootstrapFailed;
        st.failure = Some(message);
    }
    sim.trigger_machine(&node.key);
}

/// Boots a node: waits `delay`, brings the "VM" up, then runs cloud-init with `user_data`.
pub async fn boot(sim: Arc<Sim>, node: Arc<NodeRt>, user_data: String, delay: Duration) {
    tokio::time::sleep(delay).await;
    lock(&node.st).phase = Phase::Booting;
    sim.trigger_machine(&node.key);
    if let Err(e) = prepare_tree(&node) {
        fail(&sim, &node, format!("creating the machine's tree: {e}"));
        return;
    }
    if let Err(e) = crate::control::start(&sim, &node) {
        fail(&sim, &node, e);
        return;
    }
    if let Err(e) = crate::snapd::start(&sim, &node) {
        fail(&sim, &node, e);
        return;
    }
    let ns_pid = match start_holder(&node).await {
        Ok(p) => p,
        Err(e) => {
            fail(&sim, &node, e);
            return;
        }
    };
    {
        let mut st = lock(&node.st);
        st.ns_pid = Some(ns_pid);
        st.vm_up = true;
        st.phase = Phase::Bootstrapping;
    }
    sim.trigger_machine(&node.key);
    tracing::info!(machine = %node.key, ip = %node.ip, "machine is up; running cloud-init");
    let now = crate::state::now_rfc3339();
    node.log(&format!(
        "Cloud-init v. 24.4 (mk8s-sim) running 'init' at {now}. Up 0.1 seconds.\nci-info: instance {} ({}) {}",
        node.provider_id(),
        node.hostname,
        node.ip
    ));

    let instance = InstanceData {
        local_hostname: node.hostname.clone(),
        instance_id: node.provider_id(),
        availability_zone: node.failure_domain.clone().unwrap_or_default(),
        local_ipv4: node.ip.to_string(),
    };
    let config = match cloudconfig::parse(&user_data, &instance) {
        Ok(c) => c,
        Err(e) => {
            fail(&sim, &node, format!("cloud-init refused the user-data: {e}"));
            return;
        }
    };
    for w in &config.warnings {
        node.log(&format!("mk8s-sim: WARNING: {w}"));
    }
    if !config.bootcmd.is_empty() {
        let script = cloudconfig::shellify(&config.bootcmd);
        match run_script(&sim, &node, ns_pid, "bootcmd", &script).await {
            Ok(0) => {}
            Ok(code) => node.log(&format!(
                "cc_bootcmd.py[WARNING]: Failed to run bootcmd module bootcmd (exit status {code})"
            )),
            Err(e) => node.log(&format!("cc_bootcmd.py[WARNING]: {e}")),
        }
    }
    for f in &config.write_files {
        if f.owner != "root:root" && f.owner != "root" {
            node.log(&format!(
                "mk8s-sim: WARNING: {}: owner {} not applied (the simulator writes as root)",
                f.path, f.owner
            ));
        }
        if let Err(e) = write_file(&node, f) {
            fail(&sim, &node, format!("write_files: {}: {e}", f.path));
            return;
        }
    }
    let now = crate::state::now_rfc3339();
    node.log(&format!(
        "Cloud-init v. 24.4 (mk8s-sim) running 'modules:final' at {now}."
    ));
    let script = cloudconfig::shellify(&config.runcmd);
    let code = match run_script(&sim, &node, ns_pid, "runcmd", &script).await {
        Ok(c) => c,
        Err(e) => {
            fail(&sim, &node, format!("running runcmd: {e}"));
            return;
        }
    };
    finish(&sim, &node, code);
}

fn finish(sim: &Sim, node: &NodeRt, code: i32) {
    let sentinel = node.host_path(mk8s_cloudinit::paths::BOOTSTRAP_SENTINEL);
    let marker = node.host_path(mk8s_cloudinit::paths::FAILED_STEP_MARKER);
    let failed_step = std::fs::read_to_string(&marker).ok().map(|s| s.trim().to_string());
    if code != 0 {
        node.log(&format!(
            "{} - cc_scripts_user.py[WARNING]: Failed to run module scripts_user (scripts in \
             /var/lib/cloud/instance/scripts)\nrunparts: exit status {code}",
            crate::state::now_rfc3339()
        ));
    }
    let now = crate::state::now_rfc3339();
    node.log(&format!("Cloud-init v. 24.4 (mk8s-sim) finished at {now}."));
    let ok = sentinel.exists() && failed_step.is_none();
    {
        let mut st = lock(&node.st);
        st.exit_code = Some(code);
        st.failed_step = failed_step.clone();
        if st.running {
            st.phase = if ok {
                Phase::Bootstrapped
            } else {
                Phase::BootstrapFailed
            };
        }
    }
    if ok {
        tracing::info!(machine = %node.key, "bootstrap succeeded");
    } else {
        let what = match &failed_step {
            Some(step) => format!("bootstrap step failed: {step}"),
            None if sentinel.exists() => format!("runcmd exited with status {code}"),
            None => format!("runcmd exited with status {code} without writing the bootstrap sentinel"),
        };
        let tail = log_tail(node, 25);
        tracing::warn!(machine = %node.key, "{what}");
        lock(&node.st).failure = Some(format!("{what}; last lines of {}:\n{tail}", node.log_path().display()));
    }
    sim.trigger_machine(&node.key);
}

/// Stops a node: its tasks, listeners and every process of its namespace.
pub fn stop(node: &NodeRt) {
    for t in lock(&node.tasks).drain(..) {
        t.abort();
    }
    if let Some(a) = lock(&node.agent).take() {
        a.abort();
    }
    let ns_pid = {
        let mut st = lock(&node.st);
        st.running = false;
        st.phase = Phase::Stopped;
        st.agent_port = None;
        st.ns_pid.take()
    };
    if let Some(pid) = ns_pid {
        kill(pid as i32, libc::SIGKILL);
    }
    if let Some(mut child) = lock(&node.holder).take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    for s in ["snapd", "sim"] {
        let _ = std::fs::remove_file(node.socket(s));
    }
}

/// Sends `signal` to a process (or, with a negative pid, a process group).
pub fn kill(pid: i32, signal: i32) {
    // SAFETY: kill(2) takes plain integers and has no memory-safety preconditions.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Whether the node plays a role in the cluster that runs dqlite.
pub fn runs_dqlite(node: &NodeRt) -> bool {
    lock(&node.st).role == Role::ControlPlane
}

/// Whether `path` exists inside the node (host view of the tree).
pub fn exists(node: &NodeRt, node_path: &str) -> bool {
    Path::new(&node.host_path(node_path)).exists()
}
