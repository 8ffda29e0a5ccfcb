//! T0b: every role's runcmd executed the way cloud-init runs it, against stub tools.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests: failing is the point

mod common;

use common::node::{Machine, Run, have_shells};
use common::*;
use mk8s_api::bootstrap::MicroK8sConfigSpec;
use mk8s_cloudinit::{Role, paths, render};

/// The rich spec with user commands that leave traces inside the scratch root.
fn spec() -> MicroK8sConfigSpec {
    let mut spec = rich_spec();
    if let Some(ic) = spec.init_configuration.as_mut() {
        ic.pre_run_commands = v(&["touch \"$CAPI_ROOT/pre-ran\""]);
        ic.post_run_commands = v(&["touch \"$CAPI_ROOT/post-ran\""]);
    }
    spec
}

fn boot(test: &str, role: Role, spec: &MicroK8sConfigSpec, fail: Option<&str>) -> Option<(Machine, Run)> {
    boot_prepared(test, role, spec, fail, |_| {})
}

/// [`boot`] on a machine `prepare` has set up first (a preinstalled snap, a stub's state).
fn boot_prepared(
    test: &str,
    role: Role,
    spec: &MicroK8sConfigSpec,
    fail: Option<&str>,
    prepare: impl FnOnce(&Machine),
) -> Option<(Machine, Run)> {
    if !have_shells() {
        return None;
    }
    let doc = render(&input(role, spec)).expect("render");
    let machine = Machine::new(test);
    prepare(&machine);
    let run = machine.boot(&doc, fail);
    Some((machine, run))
}

/// Leaves a file at `node_path` that the stub tools act on.
fn stub_state(node_path: &'static str, content: &'static str) -> impl FnOnce(&Machine) {
    move |m| std::fs::write(m.path(node_path), content).expect("stub state")
}

fn assert_success(m: &Machine, run: &Run) {
    assert_eq!(
        run.status,
        0,
        "runcmd failed:\n{}\n--- calls:\n{}",
        run.output,
        run.dump()
    );
    assert!(m.exists(paths::BOOTSTRAP_SENTINEL), "no sentinel:\n{}", run.output);
    assert!(!m.exists(paths::FAILED_STEP_MARKER));
    assert!(
        m.exists("/pre-ran") && m.exists("/post-ran"),
        "user commands did not run"
    );
}

/// Steps every role shares with the rich spec.
fn assert_common(m: &Machine, run: &Run) {
    let snapd_http = run.assert_called(&["snap", "set", "system", "proxy.http=http://snap-proxy.example:3128"]);
    run.assert_called(&["snap", "set", "system", "proxy.https=http://snap-proxy.example:3129"]);
    let assertions = run.assert_called(&[
        "curl",
        "-fsSL",
        "--max-time",
        "60",
        "https://snapstore.example.com/v2/auth/store/assertions",
    ]);
    run.assert_called(&["snap", "ack", "/dev/stdin"]);
    let store = run.assert_called(&["snap", "set", "core", "proxy.store=ID123456789"]);
    run.assert_called(&["systemctl", "restart", "snapd"]);
    run.assert_called(&["systemctl", "stop", "kubelet.service"]);
    run.assert_called(&["systemctl", "disable", "containerd.service"]);
    let install = run.assert_called(&["snap", "install", "microk8s", "--channel=1.33/candidate", "--classic"]);
    run.assert_called(&["snap", "refresh", "--hold=forever", "microk8s"]);
    assert!(snapd_http < assertions && assertions < store && store < install);

    let env = m.read("/var/snap/microk8s/current/args/containerd-env");
    for line in [
        "http_proxy='http://proxy.example:3128'",
        "HTTPS_PROXY='http://proxy.example:3128'",
        "NO_PROXY='10.0.0.0/8,.svc,localhost'",
    ] {
        assert!(
            env.lines().any(|l| l == line),
            "{line} missing from containerd-env:\n{env}"
        );
    }
    run.assert_called(&["snap", "restart", "microk8s.daemon-containerd"]);
    let kubelet = m.read("/var/snap/microk8s/current/args/kubelet");
    assert!(
        kubelet.ends_with(
            "\n# Extra arguments from Cluster API (MicroK8sConfig initConfiguration.extraKubeletArgs)\n\
             --max-pods=200\n--node-labels=tier=gold\n# End of the extra arguments from Cluster API\n"
        ),
        "{kubelet}"
    );
    assert_eq!(
        kubelet.matches("# Extra arguments from Cluster API").count(),
        1,
        "{kubelet}"
    );
    if kubelet.contains("--cluster-dns=") {
        // A joining node: its copy of the control plane node's arguments lost that node's
        // extras, but kept what MicroK8s wrote (the --node-ip join set for this node, DNS).
        assert!(!kubelet.contains("--register-with-taints"), "{kubelet}");
        assert!(
            kubelet.contains("\n--node-ip=10.0.0.99\n--cluster-dns=10.152.183.10\n"),
            "{kubelet}"
        );
    }
    assert!(kubelet.starts_with("--kubeconfig="), "{kubelet}");
    assert_eq!(
        m.read(paths::EXTRA_KUBELET_ARGS),
        "--max-pods=200\n--node-labels=tier=gold\n"
    );
    assert_eq!(m.read("/etc/sysctl.d/99-capi.conf"), "net.ipv4.ip_forward = 1\n");
    assert!(
        m.read("/var/snap/microk8s/current/args/cluster-agent")
            .lines()
            .any(|l| l == "--bind=0.0.0.0:30000"),
        "cluster agent port"
    );
}

fn assert_control_plane(m: &Machine, run: &Run) {
    assert_eq!(
        m.read("/var/snap/microk8s/current/var/kubernetes/backend/update.yaml"),
        "Address: 127.0.0.1:2379\n"
    );
    let csr = m.read("/var/snap/microk8s/current/certs/csr.conf.template");
    assert!(
        csr.contains("[ alt_names ]\nDNS.100 = k8s.example.com\nDNS.1 = kubernetes\n"),
        "{csr}"
    );
    let apiserver = m.read("/var/snap/microk8s/current/args/kube-apiserver");
    assert!(apiserver.lines().any(|l| l == "--secure-port=6443"), "{apiserver}");
    assert!(
        apiserver.lines().any(|l| l == "--service-node-port-range=30001-32767"),
        "{apiserver}"
    );
    for c in ["client", "scheduler", "kubelet", "proxy", "controller"] {
        let config = m.read(&format!("/var/snap/microk8s/current/credentials/{c}.config"));
        assert!(config.contains("https://127.0.0.1:6443\n"), "{c}: {config}");
    }
    run.assert_called(&[
        "microk8s",
        "kubectl",
        "delete",
        "service",
        "kubernetes",
        "-n",
        "default",
        "--ignore-not-found",
    ]);
    let redirect = ["-p", "tcp", "--dport", "16443", "-j", "REDIRECT", "--to-port", "6443"];
    let out: Vec<&str> = ["iptables", "-w", "30", "-t", "nat", "-A", "OUTPUT", "-o", "lo"]
        .into_iter()
        .chain(redirect)
        .collect();
    let pre: Vec<&str> = ["iptables", "-w", "30", "-t", "nat", "-A", "PREROUTING"]
        .into_iter()
        .chain(redirect)
        .collect();
    run.assert_called(&out);
    run.assert_called(&pre);
    let unit = m.read(paths::APISERVER_REDIRECT_UNIT);
    assert!(
        unit.contains("ExecStart=") && unit.contains("--dport 16443 -j REDIRECT --to-port 6443"),
        "{unit}"
    );
    assert_boots_without_an_ordering_cycle(&unit);
    run.assert_called(&["systemctl", "enable", "capi-microk8s-apiserver-redirect.service"]);
    assert_eq!(m.read(paths::AUTH_TOKEN), AUTH);
    // disableDefaultCNI
    assert!(!m.exists("/var/snap/microk8s/current/args/cni-network/cni.yaml"));
    assert!(m.exists("/var/snap/microk8s/current/args/cni-network/cni.yaml.disabled"));
    assert!(run.calls.iter().all(|c| c[..] != ["apt-get"] && c[0] != "apt-get"));
}

/// `systemd-analyze verify` of the redirect unit in a boot with cloud-init and the network:
/// an ordering cycle would make systemd drop one of them (or the unit) at every reboot.
fn assert_boots_without_an_ordering_cycle(unit: &str) {
    assert!(unit.contains("DefaultDependencies=no"), "{unit}");
    if !require("systemd-analyze", &["--version"]) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("mk8s-unit-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("capi-microk8s-apiserver-redirect.service"), unit).unwrap();
    std::fs::write(
        dir.join("capi-boot-check.target"),
        "[Unit]\nDescription=a node's boot\nWants=capi-microk8s-apiserver-redirect.service cloud-init.service systemd-networkd.service systemd-networkd-wait-online.service\n",
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no", "./capi-boot-check.target"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("ordering cycle"), "{text}");
    assert!(!text.contains("capi-microk8s-apiserver-redirect.service:"), "{text}");
}

#[test]
fn init_node_creates_the_cluster_and_accepts_joins_before_its_addons() {
    let Some((m, run)) = boot("init", Role::Init { ca: ca() }, &spec(), None) else {
        return;
    };
    assert_success(&m, &run);
    assert_common(&m, &run);
    assert_control_plane(&m, &run);
    run.assert_called(&["microk8s", "refresh-certs", &m.path("/var/tmp").display().to_string()]);
    assert_eq!(
        std::fs::read_to_string(m.log.join("refreshed-ca.crt")).ok(),
        Some(ca().cert_pem)
    );
    assert!(
        !m.exists(paths::CA_CERT) && !m.exists(paths::CA_KEY),
        "the CA files must be removed"
    );
    let ingress = run.assert_called(&["microk8s", "enable", "ingress"]);
    let metrics = run.assert_called(&["microk8s", "enable", "metrics-server"]);
    let dns = run.assert_called(&["microk8s", "enable", "dns"]);
    // `microk8s enable` fetches through the proxies.
    let env = std::fs::read_to_string(m.log_dir().join("enable-env")).unwrap();
    assert!(
        env.lines()
            .any(|l| l == "ingress http://proxy.example:3128 10.0.0.0/8,.svc,localhost"),
        "{env}"
    );
    let add = run.assert_called(&["microk8s", "add-node", "--token", TOKEN, "--token-ttl", "900000"]);
    let label = run.assert_called(&[
        "microk8s",
        "kubectl",
        "label",
        "node",
        "test-node-1",
        "microk8s.cluster.x-k8s.io/accepts-joins=true",
        "--overwrite",
    ]);
    assert!(
        add < label && label < ingress && ingress < metrics && metrics < dns,
        "joins are accepted before the addons:\n{}",
        run.dump()
    );
    assert!(run.calls_of("microk8s", &["join"]).is_empty());
    assert!(
        !run.output.contains(TOKEN),
        "the join token leaked into the log:\n{}",
        run.output
    );
}

/// An addon that cannot be enabled fails the machine's bootstrap (it says which), but the
/// cluster has formed by then: the token is registered and the Node — named by the kubelet's
/// `--hostname-override`, not the host name — is marked, so other nodes can join.
#[test]
fn a_failing_addon_costs_the_addon_not_the_cluster() {
    let mut spec = spec();
    if let Some(ic) = spec.init_configuration.as_mut() {
        ic.extra_kubelet_args = v(&["--hostname-override=Node-From-Cloud", "--max-pods=200"]);
    }
    let Some((m, run)) = boot("addon-fails", Role::Init { ca: ca() }, &spec, Some("enable ingress")) else {
        return;
    };
    assert_eq!(run.status, 1, "the bootstrap reports the failure:\n{}", run.output);
    assert!(!m.exists(paths::BOOTSTRAP_SENTINEL));
    assert_eq!(
        m.read(paths::FAILED_STEP_MARKER),
        "60-enable-addons.sh exited with status 1\n"
    );
    run.assert_called(&["microk8s", "add-node", "--token", TOKEN, "--token-ttl", "900000"]);
    run.assert_called(&[
        "microk8s",
        "kubectl",
        "label",
        "node",
        "node-from-cloud",
        "microk8s.cluster.x-k8s.io/accepts-joins=true",
        "--overwrite",
    ]);
    assert!(run.calls_of("microk8s", &["enable", "metrics-server"]).is_empty());
    assert!(!m.exists("/post-ran"));
}

#[test]
fn joining_control_plane_node_joins_as_a_full_member_then_registers_the_token() {
    let role = Role::JoinControlPlane {
        join_addresses: addresses(),
    };
    let Some((m, run)) = boot("join-cp", role, &spec(), None) else {
        return;
    };
    assert_success(&m, &run);
    assert_common(&m, &run);
    assert_control_plane(&m, &run);
    let url = format!("10.0.0.11:30000/{TOKEN}");
    let join = run.assert_called(&["microk8s", "join", &url]);
    assert_eq!(
        run.calls_of("microk8s", &["join"]).len(),
        1,
        "joined once, through the first address"
    );
    let san = run
        .position(&["snap", "restart", "microk8s.daemon-kubelite"])
        .unwrap_or(usize::MAX);
    assert!(san < join, "the endpoint SAN is added before joining");
    let add = run.assert_called(&["microk8s", "add-node", "--token", TOKEN, "--token-ttl", "900000"]);
    let ingress = run.assert_called(&["microk8s", "enable", "ingress"]);
    run.assert_called(&["microk8s", "enable", "metrics-server"]);
    assert!(join < add && add < ingress, "addons come after add-node");
    assert!(
        run.position(&["microk8s", "enable", "dns"]).is_none(),
        "no implicit dns on joining nodes"
    );
    assert!(run.calls_of("microk8s", &["refresh-certs"]).is_empty());
    assert!(run.calls_of("microk8s", &["kubectl", "label"]).is_empty());
    assert!(!m.exists(paths::CA_KEY));
    assert!(
        !run.output.contains(TOKEN),
        "the join token leaked into the log:\n{}",
        run.output
    );
}

#[test]
fn worker_joins_with_worker_flag_and_proxies_to_the_endpoint() {
    let role = Role::Worker {
        join_addresses: addresses(),
    };
    let Some((m, run)) = boot("worker", role, &spec(), None) else {
        return;
    };
    assert_success(&m, &run);
    assert_common(&m, &run);
    let url = format!("10.0.0.11:30000/{TOKEN}");
    run.assert_called(&["microk8s", "join", &url, "--worker"]);
    let provider = m.read("/var/snap/microk8s/current/args/traefik/provider.yaml");
    assert!(
        provider.ends_with("        servers:\n        - address: 'k8s.example.com:6443'\n"),
        "{provider}"
    );
    let proxy_args = m.read("/var/snap/microk8s/current/args/apiserver-proxy");
    assert!(
        proxy_args.ends_with("\n--refresh-interval 0s\n") && !proxy_args.contains("30s"),
        "{proxy_args}"
    );
    run.assert_called(&["snap", "restart", "microk8s.daemon-apiserver-proxy"]);
    // No control plane steps on workers, and the CNI is never disabled there.
    for tool_args in [
        &["add-node"][..],
        &["enable"],
        &["refresh-certs"],
        &["kubectl", "label"],
    ] {
        assert!(run.calls_of("microk8s", tool_args).is_empty(), "{tool_args:?}");
    }
    assert!(run.calls_of("iptables", &[]).is_empty());
    assert!(!m.exists("/var/snap/microk8s/current/var/kubernetes/backend/update.yaml"));
    assert!(m.exists("/var/snap/microk8s/current/args/cni-network/cni.yaml"));
    assert!(!m.exists(paths::AUTH_TOKEN));
}

#[test]
fn worker_below_1_25_keeps_the_proxy_refresh() {
    let role = Role::Worker {
        join_addresses: addresses(),
    };
    let spec = minimal_spec();
    let doc = render(&mk8s_cloudinit::RenderInput {
        kubernetes_version: "v1.24.3",
        endpoint_port: 8443,
        ..input(role, &spec)
    })
    .expect("render");
    if !have_shells() {
        return;
    }
    let m = Machine::new("worker-124");
    let run = m.boot(&doc, None);
    assert_eq!(run.status, 0, "{}", run.output);
    run.assert_called(&["snap", "install", "microk8s", "--channel=1.24/stable", "--classic"]);
    let provider = m.read("/var/snap/microk8s/current/args/traefik/provider.yaml");
    assert!(
        provider.contains("- address: 'k8s.example.com:8443'\n"),
        "the real endpoint port: {provider}"
    );
    assert!(
        m.read("/var/snap/microk8s/current/args/apiserver-proxy")
            .contains("--refresh-interval 30s")
    );
    assert!(
        run.position(&["snap", "restart", "microk8s.daemon-apiserver-proxy"])
            .is_none()
    );
}

#[test]
fn minimal_specs_boot_every_role() {
    let spec = minimal_spec();
    for (name, role) in roles() {
        let control_plane = role.is_control_plane();
        let init = matches!(role, Role::Init { .. });
        let Some((m, run)) = boot(name, role, &spec, None) else {
            return;
        };
        assert_eq!(run.status, 0, "{name}: {}", run.output);
        assert!(m.exists(paths::BOOTSTRAP_SENTINEL), "{name}");
        run.assert_called(&["snap", "install", "microk8s", "--channel=1.33/stable", "--classic"]);
        assert!(
            run.calls_of("snap", &["set", "system"]).is_empty(),
            "{name}: no snapd proxy"
        );
        assert!(run.calls_of("curl", &[]).is_empty(), "{name}: no store proxy");
        assert!(run.calls_of("snap", &["refresh"]).is_empty(), "{name}: no refresh hold");
        assert!(run.calls_of("snap", &["restart", "microk8s.daemon-containerd"]).len() <= 1);
        assert!(
            !m.read("/var/snap/microk8s/current/args/containerd-env")
                .contains("proxy")
        );
        assert!(!m.exists(paths::EXTRA_KUBELET_ARGS));
        if init {
            // dns is enabled implicitly, and is the only addon.
            assert_eq!(run.calls_of("microk8s", &["enable"]).len(), 2, "{}", run.dump());
            run.assert_called(&["microk8s", "enable", "community"]);
            run.assert_called(&["microk8s", "enable", "dns"]);
        } else {
            assert!(run.calls_of("microk8s", &["enable"]).is_empty(), "{name}");
        }
        if control_plane {
            run.assert_called(&[
                "microk8s",
                "add-node",
                "--token",
                TOKEN,
                "--token-ttl",
                &mk8s_api::bootstrap::DEFAULT_JOIN_TOKEN_TTL_SECS.to_string(),
            ]);
            assert!(
                m.exists("/var/snap/microk8s/current/args/cni-network/cni.yaml"),
                "CNI kept"
            );
        }
    }
}

/// An install that outlived its `timeout` goes on in snapd: the retry waits for that change
/// and counts it, instead of failing against it ("change in progress") five times.
#[test]
fn a_timed_out_install_is_waited_for_not_repeated() {
    let role = Role::Worker {
        join_addresses: addresses(),
    };
    let prepare = stub_state("/.stub-slow-install", "");
    let Some((m, run)) = boot_prepared("slow-install", role, &minimal_spec(), None, prepare) else {
        return;
    };
    assert_eq!(run.status, 0, "{}\n{}", run.output, run.dump());
    assert!(m.exists(paths::BOOTSTRAP_SENTINEL));
    assert_eq!(
        run.calls_of("snap", &["install"]).len(),
        1,
        "installed once, by the first attempt:\n{}",
        run.dump()
    );
    let watches = run.calls_of("snap", &["watch", "--last=install"]).len();
    assert_eq!(watches, 2, "each attempt looks for a running install first");
    assert_eq!(
        run.calls_of("sleep", &["15"]).len(),
        1,
        "one pause between the attempts"
    );
    assert!(
        !m.exists("/.stub-install-running"),
        "the stranded install was waited for"
    );
    assert!(
        run.output.contains("installed MicroK8s from channel 1.33/stable"),
        "{}",
        run.output
    );
}

#[test]
fn a_failed_step_stops_the_bootstrap_and_the_post_commands() {
    let role = Role::JoinControlPlane {
        join_addresses: addresses(),
    };
    let Some((m, run)) = boot("fail-stop", role, &spec(), Some("microk8s join")) else {
        return;
    };
    assert_eq!(run.status, 1, "runcmd must end in failure:\n{}", run.output);
    assert!(!m.exists(paths::BOOTSTRAP_SENTINEL));
    assert!(m.exists("/pre-ran"));
    assert!(!m.exists("/post-ran"), "postRunCommands must not run after a failure");
    assert_eq!(m.read(paths::FAILED_STEP_MARKER), "40-join.sh exited with status 1\n");
    // Bounded: 240 rounds over both addresses (`sleep` is a stub here, so the 20-minute
    // deadline never comes first), 5 s apart.
    assert_eq!(run.calls_of("microk8s", &["join"]).len(), 480);
    assert_eq!(run.calls_of("sleep", &["5"]).len(), 239);
    assert!(run.calls_of("microk8s", &["add-node"]).is_empty());
    assert!(run.calls_of("iptables", &[]).is_empty());
    for expected in [
        "capi: 40-join.sh: ERROR: could not join the cluster through any of the 2 control plane addresses",
        "capi: 40-join.sh: ERROR: this step failed (exit status 1); the remaining bootstrap steps will not run",
        "capi: 50-apiserver-port.sh: ERROR: not running: an earlier bootstrap step failed (40-join.sh exited with status 1)",
        "capi: 60-add-node.sh: ERROR: not running",
        "capi: bootstrap FAILED: 40-join.sh exited with status 1",
    ] {
        assert!(
            run.output.contains(expected),
            "missing {expected:?} in:\n{}",
            run.output
        );
    }
    assert!(!run.output.contains(TOKEN), "the join token leaked into the log");
    if std::env::var_os("SHOW_OUTPUT").is_some() {
        eprintln!("{}", run.output);
    }
}

/// A worker may be rendered while the cluster still initializes: its node keeps trying for
/// an hour (720 rounds), three times a control plane node's window.
#[test]
fn a_worker_tries_to_join_for_an_hour() {
    let role = Role::Worker {
        join_addresses: addresses(),
    };
    let Some((m, run)) = boot("worker-window", role, &minimal_spec(), Some("microk8s join")) else {
        return;
    };
    assert_eq!(run.status, 1, "{}", run.output);
    assert_eq!(m.read(paths::FAILED_STEP_MARKER), "40-join.sh exited with status 1\n");
    assert_eq!(run.calls_of("microk8s", &["join"]).len(), 1440);
    assert_eq!(run.calls_of("sleep", &["5"]).len(), 719);
    assert!(run.output.contains("(round 720 of at most 720)"), "{}", run.output);
}

/// The kubernetes Service is recreated once, by the first node: a joining control plane node
/// finds it on 6443 already and leaves it (a deletion cuts in-cluster clients off).
#[test]
fn a_joining_control_plane_node_leaves_the_moved_kubernetes_service() {
    let role = Role::JoinControlPlane {
        join_addresses: addresses(),
    };
    let prepare = stub_state("/.stub-service-port", "6443");
    let Some((_, run)) = boot_prepared("service-moved", role, &minimal_spec(), None, prepare) else {
        return;
    };
    assert_eq!(run.status, 0, "{}", run.output);
    assert!(
        !run.calls_of("microk8s", &["kubectl", "get", "service", "kubernetes"])
            .is_empty()
    );
    assert!(
        run.calls_of("microk8s", &["kubectl", "delete", "service"]).is_empty(),
        "{}",
        run.dump()
    );
}

/// A control plane bootstrapped before the end marker existed: only its start marker goes,
/// so flags MicroK8s appended after the block (cluster DNS) survive the copy.
#[test]
fn an_old_unterminated_block_keeps_what_follows_it() {
    let role = Role::Worker {
        join_addresses: addresses(),
    };
    let prepare = stub_state("/.stub-old-block", "");
    let Some((m, run)) = boot_prepared("old-block", role, &rich_spec(), None, prepare) else {
        return;
    };
    assert_eq!(run.status, 0, "{}", run.output);
    let kubelet = m.read("/var/snap/microk8s/current/args/kubelet");
    assert!(kubelet.contains("\n--cluster-dns=10.152.183.10\n"), "{kubelet}");
    assert_eq!(
        kubelet.matches("# Extra arguments from Cluster API").count(),
        1,
        "{kubelet}"
    );
    assert!(
        kubelet.ends_with("--max-pods=200\n--node-labels=tier=gold\n# End of the extra arguments from Cluster API\n"),
        "{kubelet}"
    );
}

#[test]
fn join_falls_back_to_the_next_address() {
    let role = Role::Worker {
        join_addresses: addresses(),
    };
    let Some((m, run)) = boot("fallback", role, &spec(), Some("join 10.0.0.11")) else {
        return;
    };
    assert_success(&m, &run);
    let second = format!("10.0.0.12:30000/{TOKEN}");
    run.assert_called(&["microk8s", "join", &second, "--worker"]);
    assert!(
        run.output.contains("joined the cluster through 10.0.0.12:30000"),
        "{}",
        run.output
    );
}

#[test]
fn preinstalled_snap_still_disables_the_default_cni() {
    let Some((m, run)) = boot_prepared(
        "preinstalled",
        Role::Init { ca: ca() },
        &spec(),
        None,
        Machine::preinstall,
    ) else {
        return;
    };
    assert_success(&m, &run);
    assert!(run.calls_of("snap", &["install"]).is_empty(), "{}", run.dump());
    assert!(m.exists("/var/snap/microk8s/current/args/cni-network/cni.yaml.disabled"));
    assert!(!m.exists("/var/snap/microk8s/current/args/cni-network/cni.yaml"));
    run.assert_called(&["snap", "refresh", "--hold=forever", "microk8s"]);
}

#[test]
fn ipinip_switches_calico() {
    let mut spec = spec();
    if let Some(ic) = spec.init_configuration.as_mut() {
        ic.disable_default_cni = Some(false);
    }
    let Some((m, run)) = boot("ipip", Role::Init { ca: ca() }, &spec, None) else {
        return;
    };
    assert_success(&m, &run);
    let cni = m.read("/var/snap/microk8s/current/args/cni-network/cni.yaml");
    for (gone, now) in [
        ("CALICO_IPV4POOL_VXLAN", "CALICO_IPV4POOL_IPIP"),
        ("calico_backend: \"vxlan\"", "calico_backend: \"bird\""),
        ("-felix-ready", "-bird-ready"),
        ("-felix-live", "-bird-live"),
    ] {
        assert!(!cni.contains(gone) && cni.contains(now), "{cni}");
    }
    run.assert_called(&[
        "microk8s",
        "kubectl",
        "delete",
        "daemonset/calico-node",
        "-n",
        "kube-system",
        "--ignore-not-found",
    ]);
    let path = m
        .path("/var/snap/microk8s/current/args/cni-network/cni.yaml")
        .display()
        .to_string();
    run.assert_called(&["microk8s", "kubectl", "apply", "-f", &path]);
}

#[test]
fn ports_without_remap_stay_stock() {
    let mut spec = minimal_spec();
    spec.cluster_configuration = Some(mk8s_api::bootstrap::ClusterConfiguration {
        port_compatibility_remap: Some(false),
        ..Default::default()
    });
    let role = Role::JoinControlPlane {
        join_addresses: addresses(),
    };
    let Some((m, run)) = boot("no-remap", role, &spec, None) else {
        return;
    };
    assert_eq!(run.status, 0, "{}", run.output);
    let url = format!("10.0.0.11:25000/{TOKEN}");
    run.assert_called(&["microk8s", "join", &url]);
    assert!(
        m.read("/var/snap/microk8s/current/args/cluster-agent")
            .contains("--bind=0.0.0.0:25000\n")
    );
    assert!(
        run.position(&["snap", "restart", "microk8s.daemon-cluster-agent"])
            .is_none()
    );
    assert!(
        run.position(&["snap", "restart", "microk8s.daemon-k8s-dqlite"])
            .is_none()
    );
    assert!(!m.exists("/var/snap/microk8s/current/var/kubernetes/backend/update.yaml"));
}

#[test]
fn ipv6_addresses_are_bracketed() {
    let spec = minimal_spec();
    let v6 = vec!["fd00::11".to_string()];
    for (name, role) in [
        (
            "v6-join",
            Role::JoinControlPlane {
                join_addresses: v6.clone(),
            },
        ),
        (
            "v6-worker",
            Role::Worker {
                join_addresses: v6.clone(),
            },
        ),
    ] {
        let worker = !role.is_control_plane();
        let doc = render(&mk8s_cloudinit::RenderInput {
            endpoint_host: "fd00::10",
            ..input(role, &spec)
        })
        .expect("render");
        if !have_shells() {
            return;
        }
        let m = Machine::new(name);
        let run = m.boot(&doc, None);
        assert_eq!(run.status, 0, "{}", run.output);
        let url = format!("[fd00::11]:30000/{TOKEN}");
        if worker {
            run.assert_called(&["microk8s", "join", &url, "--worker"]);
            let provider = m.read("/var/snap/microk8s/current/args/traefik/provider.yaml");
            assert!(provider.contains("- address: '[fd00::10]:6443'\n"), "{provider}");
        } else {
            run.assert_called(&["microk8s", "join", &url]);
            let csr = m.read("/var/snap/microk8s/current/certs/csr.conf.template");
            assert!(csr.contains("\nIP.100 = fd00::10\n"), "{csr}");
        }
    }
}

#[test]
fn strict_confinement_installs_without_classic() {
    let mut spec = minimal_spec();
    spec.init_configuration = Some(mk8s_api::bootstrap::InitConfiguration {
        confinement: s("strict"),
        risk_level: s("edge"),
        ..Default::default()
    });
    let role = Role::Worker {
        join_addresses: addresses(),
    };
    let Some((_m, run)) = boot("strict", role, &spec, None) else {
        return;
    };
    assert_eq!(run.status, 0, "{}", run.output);
    run.assert_called(&["snap", "install", "microk8s", "--channel=1.33-strict/edge"]);
}

#[test]
fn retries_are_bounded_and_explained() {
    let role = Role::Worker {
        join_addresses: addresses(),
    };
    let Some((m, run)) = boot("install-fails", role, &spec(), Some("snap install")) else {
        return;
    };
    assert_eq!(run.status, 1);
    assert_eq!(run.calls_of("snap", &["install"]).len(), 5, "{}", run.dump());
    assert_eq!(
        run.calls_of("sleep", &[]).len(),
        4,
        "a pause between attempts, none after the last"
    );
    for expected in [
        "capi: 10-install-microk8s.sh: installing MicroK8s from channel 1.33/candidate: attempt 1 of 5 failed, retrying in 15s",
        "capi: 10-install-microk8s.sh: ERROR: installing MicroK8s from channel 1.33/candidate: failed 5 times, giving up",
        "capi: bootstrap FAILED: 10-install-microk8s.sh exited with status 1",
    ] {
        assert!(
            run.output.contains(expected),
            "missing {expected:?} in:\n{}",
            run.output
        );
    }
    assert!(!m.exists(paths::BOOTSTRAP_SENTINEL) && !m.exists("/post-ran"));
    assert!(
        !run.output.contains("ERROR: line"),
        "no misleading trap message:\n{}",
        run.output
    );
    if std::env::var_os("SHOW_OUTPUT").is_some() {
        eprintln!("{}", run.output);
    }
}
