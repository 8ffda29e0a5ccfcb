//! `mk8s-bootstrap render`: prints, offline, the exact cloud-config a node would get.
//!
//! ```text
//! mk8s-bootstrap render -f config.yaml --role init --version v1.33.4 --endpoint 10.0.0.10:6443
//! mk8s-bootstrap render -f cp.yaml --role join-control-plane --version v1.33.4 \
//!     --endpoint lb.example.com:6443 --join-address 10.0.0.11 --join-address 10.0.0.12 --check
//! ```
//!
//! The file may hold a `MicroK8sConfig`, `MicroK8sConfigTemplate`, `MicroK8sControlPlane` or
//! `MicroK8sControlPlaneTemplate` (the first of these kinds in the file is used), or a bare
//! `MicroK8sConfigSpec`. Secrets are placeholders unless given.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use mk8s_api::MicroK8sConfigSpec;
use mk8s_cloudinit::{CaFiles, RenderInput, Role, placeholder};

/// Arguments of `render`.
#[derive(Args, Debug, Clone)]
pub struct RenderArgs {
    /// YAML file with the configuration (`-` reads standard input).
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: PathBuf,
    /// The node's role.
    #[arg(long, value_enum)]
    pub role: RoleArg,
    /// The Machine's Kubernetes version, e.g. `v1.33.4`.
    #[arg(long, value_name = "VERSION")]
    pub version: String,
    /// The cluster's control plane endpoint, `host:port` (`[v6]:port` for IPv6).
    #[arg(long, value_name = "HOST:PORT")]
    pub endpoint: String,
    /// Address of a control plane node to join through (join roles; repeatable).
    #[arg(long = "join-address", value_name = "IP")]
    pub join_addresses: Vec<String>,
    /// The join token (default: a placeholder).
    #[arg(long = "join-token", value_name = "TOKEN")]
    pub join_token: Option<String>,
    /// The cluster agent auth token (default: a placeholder).
    #[arg(long = "auth-token", value_name = "TOKEN")]
    pub auth_token: Option<String>,
    /// CA certificate PEM file for the init role (default: a placeholder).
    #[arg(long = "ca-cert", value_name = "PATH")]
    pub ca_cert: Option<PathBuf>,
    /// CA key PEM file for the init role (default: a placeholder).
    #[arg(long = "ca-key", value_name = "PATH")]
    pub ca_key: Option<PathBuf>,
    /// Validate instead of printing: the renderer's checks plus the structure of the result.
    #[arg(long)]
    pub check: bool,
}

/// A node role on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// The first control plane node.
    Init,
    /// A further control plane node.
    JoinControlPlane,
    /// A worker.
    Worker,
}

/// Why `render` failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderCmdError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The YAML holds no configuration.
    #[error("{0}")]
    Input(String),
    /// The renderer refused the input.
    #[error("{0}")]
    Render(#[from] mk8s_cloudinit::RenderError),
    /// The rendered document failed the checks.
    #[error("the rendered cloud-config has problems:\n  {}", .0.join("\n  "))]
    Check(Vec<String>),
}

fn read(path: &PathBuf) -> Result<String, RenderCmdError> {
    let res = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    res.map_err(|source| RenderCmdError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Extracts the bootstrap spec from a YAML text.
pub fn spec_from_yaml(text: &str) -> Result<MicroK8sConfigSpec, RenderCmdError> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| RenderCmdError::Input(format!("not YAML: {e}")))?;
    for doc in &docs {
        let spec = match doc.get("kind").and_then(|k| k.as_str()) {
            Some("MicroK8sConfig") => doc.get("spec").cloned(),
            Some("MicroK8sConfigTemplate") => doc.pointer("/spec/template/spec").cloned(),
            Some("MicroK8sControlPlane") => doc.pointer("/spec/controlPlaneConfig").cloned(),
            Some("MicroK8sControlPlaneTemplate") => doc.pointer("/spec/template/spec/controlPlaneConfig").cloned(),
            Some(_) => continue,
            None if doc.get("initConfiguration").is_some() || doc.get("clusterConfiguration").is_some() => {
                Some(doc.clone())
            }
            None => continue,
        };
        let spec = spec.unwrap_or_else(|| serde_json::json!({}));
        return serde_json::from_value(spec).map_err(|e| RenderCmdError::Input(format!("invalid configuration: {e}")));
    }
    Err(RenderCmdError::Input(
        "no MicroK8sConfig, MicroK8sConfigTemplate, MicroK8sControlPlane(Template) or MicroK8sConfigSpec in the input"
            .into(),
    ))
}

/// Splits `host:port` / `[v6]:port`.
pub fn parse_endpoint(s: &str) -> Result<(String, u16), RenderCmdError> {
    let bad = || RenderCmdError::Input(format!("--endpoint {s:?}: expected HOST:PORT (or [IPv6]:PORT)"));
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        (h.to_string(), p)
    } else {
        let (h, p) = s.rsplit_once(':').ok_or_else(bad)?;
        (h.to_string(), p)
    };
    let port = port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port))
}

/// Renders (or checks) and returns what to print.
pub fn run(args: &RenderArgs) -> Result<String, RenderCmdError> {
    let spec = spec_from_yaml(&read(&args.file)?)?;
    let (host, port) = parse_endpoint(&args.endpoint)?;
    let role = match args.role {
        RoleArg::Init => {
            let cert = match &args.ca_cert {
                Some(p) => read(p)?,
                None => placeholder::CA_CERT.to_string(),
            };
            let key = match &args.ca_key {
                Some(p) => read(p)?,
                None => placeholder::CA_KEY.to_string(),
            };
            Role::Init {
                ca: CaFiles {
                    cert_pem: cert,
                    key_pem: key,
                },
            }
        }
        RoleArg::JoinControlPlane | RoleArg::Worker if args.join_addresses.is_empty() => {
            return Err(RenderCmdError::Input(
                "join roles need at least one --join-address (a control plane node's IP)".into(),
            ));
        }
        RoleArg::JoinControlPlane => Role::JoinControlPlane {
            join_addresses: args.join_addresses.clone(),
        },
        RoleArg::Worker => Role::Worker {
            join_addresses: args.join_addresses.clone(),
        },
    };
    let doc = mk8s_cloudinit::render(&RenderInput {
        role,
        spec: &spec,
        kubernetes_version: &args.version,
        endpoint_host: &host,
        endpoint_port: port,
        join_token: args.join_token.as_deref().unwrap_or(placeholder::JOIN_TOKEN),
        auth_token: args.auth_token.as_deref().unwrap_or(placeholder::AUTH_TOKEN),
    })?;
    if args.check {
        mk8s_cloudinit::check(&doc).map_err(RenderCmdError::Check)?;
        return Ok(format!(
            "ok: {:?} cloud-config for {} is valid ({} bytes)\n",
            args.role,
            args.version,
            doc.len()
        ));
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_spec_in_every_kind() {
        let cp = "apiVersion: controlplane.cluster.x-k8s.io/v1beta1\nkind: MicroK8sControlPlane\nspec:\n  controlPlaneConfig:\n    initConfiguration:\n      addons: [ingress]\n";
        assert_eq!(
            spec_from_yaml(cp).unwrap().init().addons,
            Some(vec!["ingress".to_string()])
        );
        let tpl = "kind: Cluster\n---\nkind: MicroK8sConfigTemplate\nspec:\n  template:\n    spec:\n      initConfiguration:\n        riskLevel: edge\n";
        assert_eq!(spec_from_yaml(tpl).unwrap().init().risk_level.as_deref(), Some("edge"));
        let bare = "initConfiguration:\n  IPinIP: true\n";
        assert_eq!(spec_from_yaml(bare).unwrap().init().ip_in_ip, Some(true));
        assert!(spec_from_yaml("kind: Cluster\n").is_err());
        assert!(spec_from_yaml("kind: MicroK8sConfig\nspec:\n  initConfiguration:\n    IPinIP: maybe\n").is_err());
    }

    #[test]
    fn parses_endpoints() {
        assert_eq!(parse_endpoint("lb:6443").unwrap(), ("lb".into(), 6443));
        assert_eq!(parse_endpoint("[fd00::1]:443").unwrap(), ("fd00::1".into(), 443));
        for bad in ["lb", "lb:0", ":6443", "[fd00::1]", "lb:x"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }
}
