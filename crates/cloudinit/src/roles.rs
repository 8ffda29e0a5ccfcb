//! What each role does: the order of the steps in `runcmd` and the files they need.

use std::fmt;

use mk8s_api::bootstrap::{DEFAULT_JOIN_TOKEN_TTL_SECS, InitConfiguration, InvalidEnum, MicroK8sConfigSpec};
use mk8s_api::consts::{NODE_LABEL_JOINS_ACCEPTED, node_ports};
use mk8s_api::version::KubeVersion;

use crate::channel::{FIRST_STRICT_TRACK, install_channel};
use crate::error::RenderError;
use crate::model::{CloudConfig, RunCmd, WriteFile};
use crate::paths;
use crate::scripts::{self, Script};
use crate::validate;

/// The cluster CA the first control plane node installs. `Debug` leaves the PEMs out.
#[derive(Clone, PartialEq, Eq)]
pub struct CaFiles {
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM private key.
    pub key_pem: String,
}

/// What the machine does in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The first control plane node: creates the cluster with the given CA.
    Init {
        /// The cluster CA.
        ca: CaFiles,
    },
    /// Another control plane node: joins as a full (dqlite voting) member.
    JoinControlPlane {
        /// Addresses (IPs or DNS names, no port) of control plane nodes to join through,
        /// tried in order.
        join_addresses: Vec<String>,
    },
    /// A worker node.
    Worker {
        /// Addresses of control plane nodes to join through, tried in order.
        join_addresses: Vec<String>,
    },
}

impl Role {
    /// Whether the node runs the control plane.
    pub fn is_control_plane(&self) -> bool {
        !matches!(self, Role::Worker { .. })
    }
}

/// Everything a cloud-config is rendered from. `Debug` leaves the secrets out.
#[derive(Clone)]
pub struct RenderInput<'a> {
    /// The machine's role.
    pub role: Role,
    /// The `MicroK8sConfig` spec.
    pub spec: &'a MicroK8sConfigSpec,
    /// The Machine's `spec.version`, e.g. `v1.33.4` or `1.33.4`.
    pub kubernetes_version: &'a str,
    /// The cluster's `spec.controlPlaneEndpoint.host` (IP address or DNS name).
    pub endpoint_host: &'a str,
    /// The cluster's `spec.controlPlaneEndpoint.port`.
    pub endpoint_port: u16,
    /// The cluster's join token (32 characters).
    pub join_token: &'a str,
    /// The cluster agent auth token (control plane roles only; ignored for workers).
    pub auth_token: &'a str,
}

impl fmt::Debug for CaFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaFiles")
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &format_args!("<redacted>"))
            .finish()
    }
}

impl fmt::Debug for RenderInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderInput")
            .field("role", &self.role)
            .field("spec", &self.spec)
            .field("kubernetes_version", &self.kubernetes_version)
            .field("endpoint_host", &self.endpoint_host)
            .field("endpoint_port", &self.endpoint_port)
            .field("join_token", &format_args!("<redacted>"))
            .field("auth_token", &format_args!("<redacted>"))
            .finish()
    }
}

/// Settings of `initConfiguration`, checked, with empty strings read as absent.
struct Settings<'a> {
    snapd_http_proxy: Option<&'a str>,
    snapd_https_proxy: Option<&'a str>,
    snapstore: Option<(&'a str, &'a str, &'a str)>,
    http_proxy: Option<&'a str>,
    https_proxy: Option<&'a str>,
    no_proxy: Option<&'a str>,
    refresh_hold: Option<&'a str>,
    ttl: i64,
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

fn list(value: &Option<Vec<String>>) -> &[String] {
    value.as_deref().unwrap_or_default()
}

fn settings(init: &InitConfiguration) -> Result<Settings<'_>, RenderError> {
    const IC: &str = "initConfiguration";
    let single_line = |name: &'static str, value: Option<&str>| -> Result<(), RenderError> {
        match value {
            Some(v) => validate::single_line(|| format!("{IC}.{name}"), v),
            None => Ok(()),
        }
    };
    let snapd_http_proxy = non_empty(&init.snapstore_http_proxy);
    let snapd_https_proxy = non_empty(&init.snapstore_https_proxy);
    let http_proxy = non_empty(&init.http_proxy);
    let https_proxy = non_empty(&init.https_proxy);
    let no_proxy = non_empty(&init.no_proxy);
    single_line("snapstoreHTTPProxy", snapd_http_proxy)?;
    single_line("snapstoreHTTPSProxy", snapd_https_proxy)?;
    single_line("httpProxy", http_proxy)?;
    single_line("httpsProxy", https_proxy)?;
    single_line("noProxy", no_proxy)?;

    let scheme = match init.snapstore_proxy_scheme.as_deref().unwrap_or("") {
        "" | "http" => "http",
        "https" => "https",
        other => {
            return Err(InvalidEnum {
                field: "initConfiguration.snapstoreProxyScheme",
                value: other.to_string(),
                expected: "http, https",
            }
            .into());
        }
    };
    let domain = non_empty(&init.snapstore_proxy_domain);
    let store_id = non_empty(&init.snapstore_proxy_id);
    if let Some(domain) = domain {
        validate::host_port(|| format!("{IC}.snapstoreProxyDomain"), domain)?;
    }
    if let Some(id) = store_id {
        validate::word(|| format!("{IC}.snapstoreProxyId"), id)?;
    }
    let snapstore = domain.zip(store_id).map(|(domain, id)| (scheme, domain, id));

    for (i, addon) in list(&init.addons).iter().enumerate() {
        if addon.is_empty() {
            return Err(RenderError::field(format!("{IC}.addons[{i}]"), "must not be empty"));
        }
        validate::single_line(|| format!("{IC}.addons[{i}]"), addon)?;
    }
    for (i, arg) in list(&init.extra_kubelet_args).iter().enumerate() {
        validate::single_line(|| format!("{IC}.extraKubeletArgs[{i}]"), arg)?;
    }
    for (i, file) in init.extra_write_files.as_deref().unwrap_or_default().iter().enumerate() {
        let field = |name: &str| format!("{IC}.extraWriteFiles[{i}].{name}");
        if !file.path.starts_with('/') || file.path.len() < 2 || file.path.ends_with('/') {
            return Err(RenderError::field(field("path"), "must be the absolute path of a file"));
        }
        validate::single_line(|| field("path"), &file.path)?;
        if !validate::permissions(&file.permissions) {
            return Err(RenderError::field(
                field("permissions"),
                "must be octal permissions such as \"0644\"",
            ));
        }
        if file.owner.is_empty() {
            return Err(RenderError::field(field("owner"), "must not be empty"));
        }
        validate::word(|| field("owner"), &file.owner)?;
    }

    let refresh_hold = non_empty(&init.snap_refresh_hold);
    if let Some(hold) = refresh_hold
        && !validate::refresh_hold(hold)
    {
        return Err(RenderError::field(
            format!("{IC}.snapRefreshHold"),
            "must be \"forever\" or a duration such as \"720h\"",
        ));
    }

    let ttl = match init.join_token_ttl_in_secs {
        None => DEFAULT_JOIN_TOKEN_TTL_SECS,
        Some(ttl) if ttl > 0 => ttl,
        Some(ttl) => return Err(RenderError::NonPositiveTokenTtl { ttl }),
    };

    Ok(Settings {
        snapd_http_proxy,
        snapd_https_proxy,
        snapstore,
        http_proxy,
        https_proxy,
        no_proxy,
        refresh_hold,
        ttl,
    })
}

/// One planned `runcmd` entry.
enum Step {
    /// Run one of our scripts with arguments.
    Run(Script, Vec<String>),
    /// Source one of our scripts into runcmd's shell.
    Source(Script),
    /// A user's command line.
    User(String),
}

#[derive(Default)]
struct Plan {
    steps: Vec<Step>,
}

impl Plan {
    fn run<I, S>(&mut self, script: Script, args: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.steps
            .push(Step::Run(script, args.into_iter().map(Into::into).collect()));
    }

    fn step(&mut self, script: Script) {
        self.steps.push(Step::Run(script, Vec::new()));
    }

    fn user(&mut self, commands: &[String]) {
        self.steps.extend(commands.iter().cloned().map(Step::User));
    }

    /// The scripts the plan uses, the library first, each once, in order of first use.
    fn scripts(&self) -> Vec<Script> {
        let mut used = vec![scripts::LIB];
        for step in &self.steps {
            if let Step::Run(script, _) | Step::Source(script) = step
                && !used.contains(script)
            {
                used.push(*script);
            }
        }
        used
    }

    fn runcmd(self) -> Vec<RunCmd> {
        self.steps
            .into_iter()
            .map(|step| match step {
                Step::Run(script, args) => {
                    let mut argv = Vec::with_capacity(args.len() + 1);
                    argv.push(paths::script(script.name));
                    argv.extend(args);
                    RunCmd::Argv(argv)
                }
                Step::Source(script) => RunCmd::Argv(vec![".".to_string(), paths::script(script.name)]),
                Step::User(command) => RunCmd::Shell(command),
            })
            .collect()
    }
}

fn file(path: &str, permissions: &str, content: &str) -> WriteFile {
    WriteFile {
        path: path.to_string(),
        permissions: permissions.to_string(),
        owner: "root:root".to_string(),
        content: content.to_string(),
        template: false,
    }
}

/// Whether the init node enables `dns` on top of the user's addons: unless an entry
/// mentions it (e.g. `dns:10.0.0.10` or `coredns`), as Canonical's provider decides.
pub(crate) fn needs_implicit_dns(addons: &[String]) -> bool {
    !addons.iter().any(|a| a.contains("dns"))
}

/// Checks what [`cloud_config`] checks of a config spec alone for `kubernetes_version` (the
/// version, the install channel, proxies, snap store proxy, addons, kubelet arguments, extra
/// files, refresh hold and join token TTL), so that a bad spec is reported before any wait for
/// the cluster's facts (tokens, CA, endpoint, join addresses) that rendering also needs.
pub fn validate_spec(spec: &MicroK8sConfigSpec, kubernetes_version: &str) -> Result<(), RenderError> {
    let empty = InitConfiguration::default();
    let init = spec.init_configuration.as_ref().unwrap_or(&empty);
    KubeVersion::parse(kubernetes_version)?;
    install_channel(kubernetes_version, init)?;
    settings(init).map(|_| ())
}

/// Builds the cloud-config of one machine. See the crate documentation for the contract.
pub fn cloud_config(input: &RenderInput<'_>) -> Result<CloudConfig, RenderError> {
    let empty = InitConfiguration::default();
    let init = input.spec.init_configuration.as_ref().unwrap_or(&empty);

    let track = KubeVersion::parse(input.kubernetes_version)?.track();
    let channel = install_channel(input.kubernetes_version, init)?;
    validate::join_token(input.join_token)?;
    let endpoint = validate::endpoint(input.endpoint_host, input.endpoint_port)?;
    let control_plane = input.role.is_control_plane();
    if control_plane {
        validate::auth_token(input.auth_token)?;
    }
    let join_hosts = match &input.role {
        Role::Init { ca } => {
            if ca.cert_pem.trim().is_empty() {
                return Err(RenderError::EmptyCa { what: "certificate" });
            }
            if ca.key_pem.trim().is_empty() {
                return Err(RenderError::EmptyCa { what: "private key" });
            }
            Vec::new()
        }
        Role::JoinControlPlane { join_addresses } | Role::Worker { join_addresses } => {
            validate::join_addresses(join_addresses)?
        }
    };
    let s = settings(init)?;
    let (agent_port, dqlite_port) = node_ports(input.spec.port_compatibility_remap());
    let addons = list(&init.addons);
    let kubelet_args = list(&init.extra_kubelet_args);
    let join_urls: Vec<String> = join_hosts
        .iter()
        .map(|host| format!("{}/{}", host.with_port(agent_port), input.join_token))
        .collect();

    let mut plan = Plan::default();
    plan.user(list(&init.pre_run_commands));
    if s.snapd_http_proxy.is_some() || s.snapd_https_proxy.is_some() {
        plan.run(
            scripts::SNAPD_PROXY,
            [s.snapd_http_proxy.unwrap_or(""), s.snapd_https_proxy.unwrap_or("")],
        );
    }
    if let Some((scheme, domain, id)) = s.snapstore {
        plan.run(scripts::SNAPSTORE_PROXY, [scheme, domain, id]);
    }
    plan.step(scripts::DISABLE_HOST_SERVICES);
    let mut install = vec!["--channel".to_string(), channel.channel.clone()];
    if channel.classic {
        install.push("--classic".into());
    }
    if let Some(hold) = s.refresh_hold {
        install.extend(["--refresh-hold".into(), hold.to_string()]);
    }
    if control_plane && init.disable_default_cni == Some(true) {
        install.push("--disable-cni".into());
    }
    plan.run(scripts::INSTALL, install);
    let proxies = [
        s.http_proxy.unwrap_or(""),
        s.https_proxy.unwrap_or(""),
        s.no_proxy.unwrap_or(""),
    ];
    let proxied = s.http_proxy.is_some() || s.https_proxy.is_some() || s.no_proxy.is_some();
    if proxied {
        plan.run(scripts::CONTAINERD_PROXY, proxies);
    }
    // `microk8s enable` fetches from the network too.
    let enable_args = |addons: Vec<String>| -> Vec<String> {
        let proxy = proxied.then(|| std::iter::once("--proxy").chain(proxies).map(str::to_string));
        proxy.into_iter().flatten().chain(addons).collect()
    };
    // `microk8s join` replaces a joining node's kubelet arguments with the control plane
    // node's: joining roles add theirs after the join.
    let add_kubelet_args = |plan: &mut Plan| {
        if !kubelet_args.is_empty() {
            plan.step(scripts::KUBELET_ARGS);
        }
    };
    if matches!(input.role, Role::Init { .. }) {
        add_kubelet_args(&mut plan);
    }
    plan.step(scripts::WAIT_APISERVER);

    let control_plane_network = |plan: &mut Plan| {
        if init.ip_in_ip == Some(true) {
            plan.step(scripts::CALICO_IPIP);
        }
        plan.run(scripts::CLUSTER_AGENT_PORT, [agent_port.to_string()]);
        plan.run(scripts::DQLITE_PORT, [dqlite_port.to_string()]);
        plan.run(scripts::CERT_SAN, [endpoint.san_kind().to_string(), endpoint.bare()]);
    };
    let add_node = [input.join_token.to_string(), s.ttl.to_string()];
    match &input.role {
        Role::Init { .. } => {
            plan.step(scripts::REFRESH_CERTS);
            control_plane_network(&mut plan);
            plan.step(scripts::APISERVER_PORT);
            // The cluster accepts joins before any addon is enabled, so that an addon that
            // fails (a typo, one that asks for input, one a site cannot fetch) costs that
            // addon — the machine's bootstrap still fails and says so — not the cluster.
            plan.run(scripts::ADD_NODE, add_node);
            plan.run(
                scripts::MARK_ACCEPTS_JOINS,
                [format!("{NODE_LABEL_JOINS_ACCEPTED}=true")],
            );
            let mut enable = addons.to_vec();
            if needs_implicit_dns(addons) {
                enable.push("dns".into());
            }
            plan.run(scripts::ENABLE_ADDONS, enable_args(enable));
        }
        Role::JoinControlPlane { .. } => {
            control_plane_network(&mut plan);
            plan.run(scripts::JOIN, join_urls);
            add_kubelet_args(&mut plan);
            plan.step(scripts::APISERVER_PORT);
            plan.run(scripts::ADD_NODE, add_node);
            if !addons.is_empty() {
                plan.run(scripts::ENABLE_ADDONS, enable_args(addons.to_vec()));
            }
        }
        Role::Worker { .. } => {
            plan.run(scripts::CLUSTER_AGENT_PORT, [agent_port.to_string()]);
            plan.run(scripts::JOIN, std::iter::once("--worker".to_string()).chain(join_urls));
            add_kubelet_args(&mut plan);
            let mut proxy = vec![endpoint.with_port(input.endpoint_port)];
            if track >= FIRST_STRICT_TRACK {
                // MicroK8s 1.25 replaced traefik by apiserver-proxy, which refreshes its
                // endpoints from the cluster unless told not to.
                proxy.push("--no-refresh".into());
            }
            plan.run(scripts::APISERVER_PROXY, proxy);
        }
    }
    plan.steps.push(Step::Source(scripts::BOOTSTRAP_COMPLETE));
    plan.user(list(&init.post_run_commands));

    let mut write_files: Vec<WriteFile> = plan
        .scripts()
        .into_iter()
        .map(|script| file(&paths::script(script.name), "0700", script.content))
        .collect();
    if let Role::Init { ca } = &input.role {
        write_files.push(file(paths::CA_CERT, "0600", &ca.cert_pem));
        write_files.push(file(paths::CA_KEY, "0600", &ca.key_pem));
    }
    if control_plane {
        write_files.push(file(paths::AUTH_TOKEN, "0600", input.auth_token));
    }
    for extra in init.extra_write_files.as_deref().unwrap_or_default() {
        write_files.push(WriteFile {
            path: extra.path.clone(),
            permissions: extra.permissions.clone(),
            owner: extra.owner.clone(),
            content: extra.content.clone(),
            template: false,
        });
    }
    if !kubelet_args.is_empty() {
        let mut content = kubelet_args.join("\n");
        content.push('\n');
        write_files.push(WriteFile {
            template: true,
            ..file(paths::EXTRA_KUBELET_ARGS, "0400", &content)
        });
    }

    Ok(CloudConfig {
        write_files,
        runcmd: plan.runcmd(),
        bootcmd: list(&init.boot_commands).to_vec(),
    })
}
