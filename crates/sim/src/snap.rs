//! The MicroK8s snap as the simulated snapd knows it: channels, tracks, confinement, and the
//! files an install puts under `/var/snap/microk8s/current` (the ones the node scripts edit,
//! in the formats MicroK8s writes them).

use std::path::Path;

/// Risks snapd knows.
pub const RISKS: [&str; 4] = ["stable", "candidate", "beta", "edge"];

/// Services of the MicroK8s snap (`snap restart microk8s.<service>`).
pub const SERVICES: [&str; 8] = [
    "daemon-apiserver-kicker",
    "daemon-apiserver-proxy",
    "daemon-cluster-agent",
    "daemon-containerd",
    "daemon-etcd",
    "daemon-flanneld",
    "daemon-k8s-dqlite",
    "daemon-kubelite",
];

/// A snap channel, `<track>/<risk>[/<branch>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// `latest`, `1.33`, `1.33-strict`, …
    pub track: String,
    /// `stable`, `candidate`, `beta` or `edge`.
    pub risk: String,
    /// Optional branch.
    pub branch: Option<String>,
}

impl Channel {
    /// `<track>/<risk>[/<branch>]`.
    pub fn full(&self) -> String {
        match &self.branch {
            Some(b) => format!("{}/{}/{b}", self.track, self.risk),
            None => format!("{}/{}", self.track, self.risk),
        }
    }
}

/// Why snapd refuses a channel (HTTP status, snapd error kind, message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapError {
    /// HTTP status of snapd's answer.
    pub status: u16,
    /// snapd's error `kind` (may be empty).
    pub kind: &'static str,
    /// snapd's message.
    pub message: String,
}

impl SnapError {
    fn new(status: u16, kind: &'static str, message: String) -> SnapError {
        SnapError { status, kind, message }
    }
}

/// Parses a channel as snapd does: `risk`, `track`, `track/risk`, `track/risk/branch`.
pub fn parse_channel(channel: &str) -> Result<Channel, SnapError> {
    let invalid = |what: &str| SnapError::new(400, "", format!("invalid {what} in channel name: {channel}"));
    let parts: Vec<&str> = channel.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) || parts.len() > 3 {
        return Err(invalid("channel"));
    }
    let (track, risk, branch) = match parts.as_slice() {
        [one] if RISKS.contains(one) => ("latest", *one, None),
        [one] => (*one, "stable", None),
        [t, r] => (*t, *r, None),
        [t, r, b] => (*t, *r, Some(b.to_string())),
        _ => return Err(invalid("channel")),
    };
    if !RISKS.contains(&risk) {
        return Err(invalid("risk"));
    }
    Ok(Channel {
        track: track.to_string(),
        risk: risk.to_string(),
        branch,
    })
}

/// What a MicroK8s track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Track {
    /// Kubernetes major.
    pub major: u32,
    /// Kubernetes minor.
    pub minor: u32,
    /// Strict confinement (`-strict` tracks); otherwise classic.
    pub strict: bool,
}

/// The Kubernetes version and confinement of a MicroK8s track, or snapd's "not available"
/// for tracks MicroK8s does not publish (`latest` carries `1.<latest_minor>`; `1.N` for
/// N ≥ 10; `1.N-strict` for N ≥ 25).
pub fn track(channel: &Channel, latest_minor: u32) -> Result<Track, SnapError> {
    let not_available = || {
        SnapError::new(
            404,
            "snap-channel-not-available",
            format!(
                "requested channel \"{}\" is not available for snap \"microk8s\"",
                channel.full()
            ),
        )
    };
    if channel.track == "latest" {
        return Ok(Track {
            major: 1,
            minor: latest_minor,
            strict: false,
        });
    }
    let (version, strict) = match channel.track.strip_suffix("-strict") {
        Some(v) => (v, true),
        None => (channel.track.as_str(), false),
    };
    let (major, minor) = version.split_once('.').ok_or_else(not_available)?;
    if major != "1" || minor.is_empty() || minor.len() > 2 || !minor.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_available());
    }
    let minor: u32 = minor.parse().map_err(|_| not_available())?;
    let first_strict = u32::try_from(mk8s_cloudinit::FIRST_STRICT_TRACK.minor).unwrap_or(25);
    if minor < 10 || (strict && minor < first_strict) || minor > latest_minor.max(40) {
        return Err(not_available());
    }
    Ok(Track {
        major: 1,
        minor,
        strict,
    })
}

/// The message snapd gives for a classic snap installed or switched without `--classic`.
pub fn needs_classic() -> SnapError {
    SnapError::new(
        400,
        "snap-needs-classic",
        "This revision of snap \"microk8s\" was published using classic confinement and thus may perform \
         arbitrary system changes outside of the security sandbox that snaps are usually confined to, which \
         may put your system at risk.\n\nIf you understand and want to proceed repeat the command including \
         --classic."
            .to_string(),
    )
}

/// `$SNAP_DATA` of the snap under a node root.
pub fn snap_current(root: &Path) -> std::path::PathBuf {
    root.join("var/snap/microk8s/current")
}

/// Control plane node labels MicroK8s puts in the kubelet arguments.
pub const CONTROL_PLANE_LABELS: &str =
    "microk8s.io/cluster=true,node.kubernetes.io/microk8s-controlplane=microk8s-controlplane";
/// Worker node labels MicroK8s puts in the kubelet arguments when joining with `--worker`.
pub const WORKER_LABELS: &str = "microk8s.io/cluster=true,node.kubernetes.io/microk8s-worker=microk8s-worker";

/// Writes the tree of a fresh MicroK8s install (revision `revision`) under `root`:
/// `/var/snap/microk8s/<revision>` and the `current` symlink.
pub fn install_tree(root: &Path, revision: u32) -> std::io::Result<()> {
    let base = root.join("var/snap/microk8s");
    let data = base.join(revision.to_string());
    for d in [
        "args/cni-network",
        "args/traefik",
        "credentials",
        "certs",
        "var/kubernetes/backend",
    ] {
        std::fs::create_dir_all(data.join(d))?;
    }
    std::fs::create_dir_all(base.join("common"))?;
    let current = base.join("current");
    if current.symlink_metadata().is_err() {
        std::os::unix::fs::symlink(revision.to_string(), &current)?;
    }
    let w = |rel: &str, content: String| std::fs::write(data.join(rel), content);
    w(
        "args/kubelet",
        format!(
            "--kubeconfig=${{SNAP_DATA}}/credentials/kubelet.config\n--cert-dir=${{SNAP_DATA}}/certs\n\
             --client-ca-file=${{SNAP_DATA}}/certs/ca.crt\n--anonymous-auth=false\n\
             --root-dir=${{SNAP_COMMON}}/var/lib/kubelet\n--fail-swap-on=false\n\
             --container-runtime-endpoint=${{SNAP_COMMON}}/run/containerd.sock\n\
             --node-labels=\"{CONTROL_PLANE_LABELS}\"\n--authentication-token-webhook=true\n--read-only-port=0\n"
        ),
    )?;
    w(
        "args/kube-apiserver",
        "--cert-dir=${SNAP_DATA}/certs\n--service-cluster-ip-range=10.152.183.0/24\n--authorization-mode=RBAC,Node\n\
         --service-account-key-file=${SNAP_DATA}/certs/serviceaccount.key\n--client-ca-file=${SNAP_DATA}/certs/ca.crt\n\
         --tls-cert-file=${SNAP_DATA}/certs/server.crt\n--tls-private-key-file=${SNAP_DATA}/certs/server.key\n\
         --secure-port=16443\n--etcd-servers=unix://${SNAP_DATA}/var/kubernetes/backend/kine.sock:12379\n\
         --allow-privileged=true\n"
            .to_string(),
    )?;
    w(
        "args/containerd-env",
        "# Attempt to change the maximum number of open file descriptors\nulimit -n 65536 || true\n".to_string(),
    )?;
    w(
        "args/cluster-agent",
        "--bind=0.0.0.0:25000\n--keyfile=${SNAP_DATA}/certs/server.key\n--certfile=${SNAP_DATA}/certs/server.crt\n\
         --timeout 240\n"
            .to_string(),
    )?;
    w(
        "args/apiserver-proxy",
        "--traefik-config ${SNAP_DATA}/args/traefik/traefik.yaml\n--kubeconfig ${SNAP_DATA}/credentials/kubelet.config\n\
         --refresh-interval 30s\n"
            .to_string(),
    )?;
    w(
        "args/traefik/provider.yaml",
        "tcp:\n  routers:\n    Router-1:\n      rule: \"HostSNI(`*`)\"\n      service: \"kube-apiserver\"\n      tls:\n        \
         passthrough: true\n  services:\n    kube-apiserver:\n      loadBalancer:\n        servers:\n        \
         - address: \"127.0.0.1:16443\"\n"
            .to_string(),
    )?;
    w(
        "args/cni-network/cni.yaml",
        // A small but valid Calico manifest: `30-calico-ipip.sh` rewrites it and applies it to
        // the workload API server, which validates it.
        CNI_YAML.to_string(),
    )?;
    for c in ["client", "scheduler", "kubelet", "proxy", "controller"] {
        w(
            &format!("credentials/{c}.config"),
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: ''\n    \
             server: https://127.0.0.1:16443\n  name: microk8s-cluster\nkind: Config\n"
                .to_string(),
        )?;
    }
    w(
        "certs/csr.conf.template",
        "[ req ]\ndefault_bits = 2048\nprompt = no\ndefault_md = sha256\nreq_extensions = req_ext\n\
         distinguished_name = dn\n\n[ dn ]\nC = GB\nST = Canonical\nL = Canonical\nO = Canonical\nOU = Canonical\n\
         CN = 127.0.0.1\n\n[ req_ext ]\nsubjectAltName = @alt_names\n\n[ alt_names ]\nDNS.1 = kubernetes\n\
         DNS.2 = kubernetes.default\nDNS.3 = kubernetes.default.svc\nDNS.4 = kubernetes.default.svc.cluster\n\
         DNS.5 = kubernetes.default.svc.cluster.local\nIP.1 = 127.0.0.1\nIP.2 = 10.152.183.1\n#MOREIPS\n"
            .to_string(),
    )?;
    w(
        "var/kubernetes/backend/info.yaml",
        format!(
            "Address: 127.0.0.1:19001\nID: {}\nRole: 0\n",
            3_297_041_220_608_546_238u64 + u64::from(revision)
        ),
    )?;
    Ok(())
}

/// The port of `--bind=<addr>:<port>` in `args/cluster-agent` (the last such line).
pub fn agent_port(args: &str) -> Option<u16> {
    args.lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("--bind")
                .map(|r| r.trim_start_matches(['=', ' ']))
        })
        .filter_map(|v| v.rsplit_once(':').and_then(|(_, p)| p.trim().parse().ok()))
        .next_back()
}

/// The port of the `Address:` line of a dqlite `info.yaml`/`update.yaml`.
pub fn dqlite_port(yaml: &str) -> Option<u16> {
    yaml.lines()
        .find_map(|l| l.strip_prefix("Address:"))
        .map(|a| a.trim().trim_matches(['"', '\'']))
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
}

/// The labels of every `--node-labels` argument of `args/kubelet`, merged in order.
pub fn node_labels(args: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for l in args.lines() {
        let Some(v) = l.trim().strip_prefix("--node-labels") else {
            continue;
        };
        let v = v.trim_start_matches(['=', ' ']).trim().trim_matches(['"', '\'']);
        for pair in v.split(',').filter(|p| !p.is_empty()) {
            let (k, val) = pair.split_once('=').unwrap_or((pair, ""));
            out.retain(|(ok, _)| ok != k);
            out.push((k.trim().to_string(), val.trim().to_string()));
        }
    }
    out
}

/// Replaces MicroK8s' role labels in `args/kubelet` (the `--node-labels` line written at
/// install) by `labels`.
pub fn set_role_labels(args: &str, labels: &str) -> String {
    let mut out = String::new();
    for l in args.lines() {
        if l.contains("node.kubernetes.io/microk8s-controlplane") || l.contains("node.kubernetes.io/microk8s-worker") {
            out.push_str(&format!("--node-labels=\"{labels}\"\n"));
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn channels() {
        let c = parse_channel("1.33/stable").unwrap();
        assert_eq!((c.track.as_str(), c.risk.as_str()), ("1.33", "stable"));
        assert_eq!(parse_channel("edge").unwrap().full(), "latest/edge");
        assert_eq!(parse_channel("1.33").unwrap().full(), "1.33/stable");
        assert_eq!(
            parse_channel("1.33/foo").unwrap_err().message,
            "invalid risk in channel name: 1.33/foo"
        );
        assert!(parse_channel("1.33//").is_err());
        let t = track(&parse_channel("1.33-strict/candidate").unwrap(), 36).unwrap();
        assert_eq!((t.minor, t.strict), (33, true));
        assert_eq!(track(&parse_channel("latest/stable").unwrap(), 36).unwrap().minor, 36);
        for bad in [
            "v1.33/stable",
            "1.24-strict/stable",
            "2.1/stable",
            "1.x/stable",
            "1.9/stable",
        ] {
            assert_eq!(
                track(&parse_channel(bad).unwrap(), 36).unwrap_err().status,
                404,
                "{bad}"
            );
        }
    }

    #[test]
    fn reads_the_files_the_scripts_edit() {
        assert_eq!(agent_port("--bind=0.0.0.0:25000\n--timeout 240\n"), Some(25000));
        assert_eq!(agent_port("--bind 0.0.0.0:30000\n"), Some(30000));
        assert_eq!(dqlite_port("Address: 127.0.0.1:2379\n"), Some(2379));
        assert_eq!(dqlite_port("Address: \"10.0.0.1:19001\"\n"), Some(19001));
        let labels = node_labels(&format!(
            "--x\n--node-labels=\"{CONTROL_PLANE_LABELS}\"\n--node-labels=tier=gold\n"
        ));
        assert_eq!(labels.len(), 3);
        assert_eq!(labels[2], ("tier".into(), "gold".into()));
        let worker = set_role_labels(
            &format!("--node-labels=\"{CONTROL_PLANE_LABELS}\"\n--y\n"),
            WORKER_LABELS,
        );
        assert!(worker.contains("microk8s-worker") && !worker.contains("controlplane") && worker.contains("--y"));
    }
}

/// The simulated Calico manifest: the objects and lines `30-calico-ipip.sh` rewrites.
const CNI_YAML: &str = r#"# Calico (simulated)
apiVersion: v1
kind: ConfigMap
metadata:
  name: calico-config
  namespace: kube-system
data:
  calico_backend: "vxlan"
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: calico-node
  namespace: kube-system
spec:
  selector:
    matchLabels:
      k8s-app: calico-node
  template:
    metadata:
      labels:
        k8s-app: calico-node
    spec:
      containers:
        - name: calico-node
          image: docker.io/calico/node:v3.28.1
          env:
            - name: CALICO_IPV4POOL_VXLAN
              value: "Always"
          readinessProbe:
            exec:
              command:
                - /bin/calico-node
                - -felix-ready
          livenessProbe:
            exec:
              command:
                - /bin/calico-node
                - -felix-live
"#;

#[cfg(test)]
mod cni_tests {
    #[test]
    fn simulated_calico_manifest_is_valid_yaml_with_the_lines_the_script_rewrites() {
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(super::CNI_YAML).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[1]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"][1],
            "-felix-ready"
        );
        for needle in [
            "CALICO_IPV4POOL_VXLAN",
            "calico_backend: \"vxlan\"",
            "-felix-ready",
            "-felix-live",
        ] {
            assert!(super::CNI_YAML.contains(needle), "{needle}");
        }
    }
}
