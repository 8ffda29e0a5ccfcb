//! Pure cloud-init renderer of the MicroK8s Cluster API bootstrap provider.
//!
//! Given a `MicroK8sConfig` spec, the machine's role and a few cluster facts, [`render`]
//! produces the machine's user-data: a `## template: jinja` cloud-config that installs
//! MicroK8s and creates the cluster, joins it as a control plane member or joins it as a
//! worker. No Kubernetes client, no I/O: the bootstrap controller, the offline `render`
//! subcommand and the machine simulator all call the same functions.
//!
//! ```
//! use mk8s_api::MicroK8sConfigSpec;
//! use mk8s_cloudinit::{render, RenderInput, Role};
//!
//! let spec = MicroK8sConfigSpec::default();
//! let user_data = render(&RenderInput {
//!     role: Role::Worker { join_addresses: vec!["10.0.0.11".into()] },
//!     spec: &spec,
//!     kubernetes_version: "v1.33.4",
//!     endpoint_host: "k8s.example.com",
//!     endpoint_port: 6443,
//!     join_token: mk8s_cloudinit::placeholder::JOIN_TOKEN,
//!     auth_token: "",
//! })?;
//! assert!(user_data.starts_with("## template: jinja\n#cloud-config\n"));
//! assert_eq!(mk8s_cloudinit::check(&user_data), Ok(()));
//! # Ok::<(), mk8s_cloudinit::RenderError>(())
//! ```
//!
//! # The node-side contract
//!
//! Everything below is what a node (or the machine simulator) can rely on. The scripts are
//! the files in `crates/cloudinit/scripts/` ([`scripts`]), our own, written from the
//! behaviour of Canonical's provider.
//!
//! ## Document
//!
//! `## template: jinja`, `#cloud-config`, then a YAML mapping with the keys `write_files`,
//! `runcmd` and — only when `bootCommands` is not empty — `bootcmd`, in this order. Files
//! are `{path, permissions, owner, content}`, permissions always a quoted octal string,
//! multi-line contents literal blocks. Our `runcmd` entries are argument vectors written as
//! JSON arrays (double-quoted strings); users' commands are plain strings.
//!
//! ## Jinja
//!
//! The header stays (users' commands may use instance data such as
//! `{{ ds.meta_data.local_hostname }}`, as with kubeadm's CABPK), so cloud-init renders the
//! whole document as a Jinja template before parsing it. Therefore:
//! - **users' commands** (`bootCommands`, `preRunCommands`, `postRunCommands`) and
//!   **`extraKubeletArgs`** (the lines of `/var/tmp/extra-kubelet-args`, e.g.
//!   `--node-ip={{ ds.meta_data.local_ipv4 }}`, as with Canonical's provider and CABPK) are
//!   passed raw: Jinja applies to them. The only change: a command or line that *ends* with a
//!   block tag or comment (`%}`/`#}`) gets an empty `{{ '' }}` after it, because cloud-init's
//!   `trim_blocks` would otherwise eat the line break that ends it
//!   ([`jinja::guard_trailing_tag`]);
//! - **everything we generate** — every argument (tokens, endpoint, proxies, addons, …), our
//!   scripts, the CA, the auth token, and the content, path and owner of
//!   users' `extraWriteFiles` (files are data, not templates) — is escaped with
//!   [`jinja::escape`]: each `{{`, `{%`, `{#` becomes an expression printing it (`{{ '{{' }}`),
//!   which Jinja renders back to the original and which survives every YAML style we emit.
//!   A value containing `{% endraw %}` needs nothing special. Text without delimiters (all
//!   our scripts, almost every value) is unchanged, so the document stays readable.
//!
//! [`jinja::unescape`] gives what cloud-init's rendering produces for a document whose users'
//! commands use no Jinja. The tests check the escaping through cloud-init's own Jinja handler
//! and YAML loader.
//!
//! ## `runcmd` and fail-stop
//!
//! cloud-init writes `runcmd` to a `/bin/sh` (dash) script, one line per entry, without
//! `set -e`; list entries become words, each single-quoted, so every value reaches our
//! scripts as exactly one argument and is never parsed by a shell. Each of our steps is a
//! script `/capi-scripts/NN-name.sh` (bash, `set -euo pipefail`, bounded retries) that sources
//! `/capi-scripts/lib.sh`. Fail-stop works without `set -e`:
//! 1. a step that fails writes its name and status to [`paths::FAILED_STEP_MARKER`]
//!    (`/run/capi-microk8s/failed-step`) and logs
//!    `capi: <step>: ERROR: this step failed (exit status N); the remaining bootstrap steps will not run`;
//! 2. every later step finds the marker and exits 1 at once
//!    (`capi: <step>: ERROR: not running: an earlier bootstrap step failed (…)`);
//! 3. the last of our entries is `[".", "/capi-scripts/99-bootstrap-complete.sh"]`: **sourced**
//!    by runcmd's own shell (`.` is a special builtin, quoting does not matter), it ends
//!    runcmd with `exit 1` when the marker exists — `postRunCommands` do not run and cloud-init
//!    reports the module as failed — and otherwise writes Cluster API's sentinel
//!    [`paths::BOOTSTRAP_SENTINEL`] (`/run/cluster-api/bootstrap-success.complete`, content
//!    `success`).
//!
//! Every message our steps print starts with `capi: <step>: `. Neither the join token nor
//! the auth token is ever printed (join URLs are logged up to the `/`, `add-node` output is
//! discarded); `set -x` is not used.
//!
//! ## Steps per role, in order
//!
//! Scripts are `/capi-scripts/<name>`; entries marked *if …* only appear when the setting asks
//! for them.
//!
//! | # | entry (argv) | init | join CP | worker |
//! |---|---|---|---|---|
//! | 1 | each `preRunCommands` entry (string) | ✓ | ✓ | ✓ |
//! | 2 | `00-snapd-proxy.sh HTTP HTTPS` (`snapstoreHTTP(S)Proxy`, "" = unset) *if either is set* | ✓ | ✓ | ✓ |
//! | 3 | `00-snapstore-proxy.sh SCHEME DOMAIN ID` *if domain and ID both set; scheme default `http`* | ✓ | ✓ | ✓ |
//! | 4 | `00-disable-host-services.sh` | ✓ | ✓ | ✓ |
//! | 5 | `10-install-microk8s.sh --channel CH [--classic] [--refresh-hold HOLD] [--disable-cni]` | ✓ | ✓ | ✓ (never `--disable-cni`) |
//! | 6 | `10-containerd-proxy.sh HTTP HTTPS NO_PROXY` *if any of them set* | ✓ | ✓ | ✓ |
//! | 7 | `10-kubelet-args.sh` *if `extraKubeletArgs` not empty* | ✓ | ✓ (after 14) | ✓ (after 14) |
//! | 8 | `20-wait-apiserver.sh` | ✓ | ✓ | ✓ |
//! | 9 | `30-refresh-certs.sh` | ✓ | | |
//! | 10 | `30-calico-ipip.sh` *if `IPinIP: true`* | ✓ | ✓ | |
//! | 11 | `30-cluster-agent-port.sh PORT` (30000, or 25000 without `portCompatibilityRemap`) | ✓ | ✓ | ✓ (after 8) |
//! | 12 | `30-dqlite-port.sh PORT` (2379, or 19001) | ✓ | ✓ | |
//! | 13 | `30-cert-san.sh IP\|DNS HOST` (endpoint host; IPv6 without brackets) | ✓ | ✓ | |
//! | 14 | `40-join.sh [--worker] HOST:PORT/TOKEN...` (one URL per address, IPv6 in brackets) | | ✓ | ✓ `--worker` |
//! | 15 | `50-apiserver-port.sh` | ✓ | ✓ | |
//! | 16 | `60-add-node.sh TOKEN TTL` (TTL = `joinTokenTTLInSecs`, default 315569260) | ✓ | ✓ | |
//! | 17 | `80-mark-accepts-joins.sh microk8s.cluster.x-k8s.io/accepts-joins=true` | ✓ | | |
//! | 18 | `60-enable-addons.sh [--proxy HTTP HTTPS NO_PROXY] ADDON...` (`--proxy` with the containerd proxies, *if any is set*; exported to `microk8s enable`) (init: `addons` + `dns` unless an entry contains `dns`; join CP: exactly `addons`, no implicit dns, *if `addons` is not empty*) | ✓ | ✓ | |
//! | 19 | `70-apiserver-proxy.sh HOST:PORT [--no-refresh]` (endpoint host and port; `--no-refresh` from track 1.25) | | | ✓ |
//! | 20 | `. 99-bootstrap-complete.sh` (sourced) | ✓ | ✓ | ✓ |
//! | 21 | each `postRunCommands` entry (string) | ✓ | ✓ | ✓ |
//!
//! The channel `CH` is [`install_channel`]: `<major>.<minor>/<risk>` with `--classic`, or
//! `<major>.<minor>-strict/<risk>` for strict confinement (track 1.25 or newer).
//!
//! ## Files per role
//!
//! All `owner: root:root`. First `/capi-scripts/lib.sh` and the scripts the role's `runcmd`
//! calls, once each, in order of first use (`"0700"`; only what the role uses keeps the
//! user-data small), then:
//!
//! | path | mode | init | join CP | worker |
//! |---|---|---|---|---|
//! | [`paths::CA_CERT`] `/var/tmp/ca.crt` | `0600` | ✓ | | |
//! | [`paths::CA_KEY`] `/var/tmp/ca.key` | `0600` | ✓ | | |
//! | [`paths::AUTH_TOKEN`] `/capi/etc/token` (auth token, verbatim) | `0600` | ✓ | ✓ | |
//! | each `extraWriteFiles` entry | its own | ✓ | ✓ | ✓ |
//! | [`paths::EXTRA_KUBELET_ARGS`] `/var/tmp/extra-kubelet-args` (one argument per line, final newline) | `0400` | if any | if any | if any |
//!
//! ## What each script does (and calls)
//!
//! `$SNAP_CURRENT` is `/var/snap/microk8s/current`. "Restart X" is
//! `snap restart microk8s.X`; "wait" is `microk8s kubectl get --raw /readyz` until it
//! succeeds (120 × 5 s, 30 s each); "configure hook" is
//! `snap set microk8s hack.update.csr=capi-<pid>-<random>`.
//!
//! - `00-snapd-proxy.sh`: `snap set system proxy.http=HTTP` / `proxy.https=HTTPS` for
//!   non-empty values.
//! - `00-snapstore-proxy.sh`: `curl -fsSL --max-time 60 SCHEME://DOMAIN/v2/auth/store/assertions | snap ack /dev/stdin`,
//!   `snap set core proxy.store=ID`, `systemctl restart snapd` (curl must be on the image).
//! - `00-disable-host-services.sh`: `systemctl stop` and `systemctl disable` of
//!   `kubelet.service` and `containerd.service`, failures ignored.
//! - `10-install-microk8s.sh`: unless `snap list microk8s` succeeds (preinstalled image):
//!   `snap install microk8s --channel=CH [--classic]` (5 attempts); then
//!   `snap refresh --hold=HOLD microk8s`; with `--disable-cni` moves
//!   `$SNAP_CURRENT/args/cni-network/cni.yaml` to `cni.yaml.disabled` — also on preinstalled
//!   images.
//! - `10-containerd-proxy.sh`: appends `http_proxy='…'`/`HTTP_PROXY='…'` (and https, no)
//!   lines, single-quoted for the shell that sources the file, to
//!   `$SNAP_CURRENT/args/containerd-env`; restart `daemon-containerd`.
//! - `10-kubelet-args.sh`: appends `/var/tmp/extra-kubelet-args` to
//!   `$SNAP_CURRENT/args/kubelet` between two marker lines, after removing a block between
//!   them (joining roles run it after `microk8s join`, which copies the control plane node's
//!   arguments, its block included); restart `daemon-kubelite`.
//! - `20-wait-apiserver.sh`: wait.
//! - `30-refresh-certs.sh`: `microk8s refresh-certs /var/tmp` (reads `ca.crt`, `ca.key`),
//!   then deletes both files (also when it fails); wait.
//! - `30-calico-ipip.sh`: if `cni.yaml` exists: wait, `microk8s kubectl delete
//!   daemonset/calico-node -n kube-system --ignore-not-found`, `microk8s kubectl delete
//!   ippools --all` (failure ignored), switches the manifest to IP-in-IP (`CALICO_IPV4POOL_IPIP`,
//!   `calico_backend: "bird"`, bird probes), `microk8s kubectl apply -f <cni.yaml>`.
//! - `30-cluster-agent-port.sh`: sets `--bind=…:PORT` in `$SNAP_CURRENT/args/cluster-agent`
//!   (appends `--bind=0.0.0.0:PORT` if absent); restart `daemon-cluster-agent` if changed.
//! - `30-dqlite-port.sh`: writes the `Address:` line of
//!   `$SNAP_CURRENT/var/kubernetes/backend/info.yaml` with port PORT to `update.yaml` in the
//!   same directory; restart `daemon-k8s-dqlite`; wait. Nothing if the port is already PORT.
//! - `30-cert-san.sh`: puts `IP.100 = HOST` or `DNS.100 = HOST` right after `[ alt_names ]`
//!   in `$SNAP_CURRENT/certs/csr.conf.template` (replacing an older `.100` entry); configure
//!   hook; restart `daemon-kubelite`; wait.
//! - `40-join.sh`: `microk8s join URL [--worker]` for each URL in turn, rounds 5 s apart
//!   for up to 20 minutes (at most 240 rounds), a worker for up to 60 minutes (720 rounds:
//!   it may start joining while the machine it joins through still initializes the
//!   cluster), 600 s per attempt; then configure
//!   hook, restart `daemon-containerd` and
//!   `daemon-kubelite`; control plane: wait.
//! - `50-apiserver-port.sh`: in `$SNAP_CURRENT/args/kube-apiserver` sets
//!   `--service-node-port-range=30001-32767` and replaces port 16443 by 6443, likewise in
//!   `$SNAP_CURRENT/credentials/*.config`; configure hook; restart `daemon-kubelite`; wait;
//!   while the kubernetes Service still targets 16443 (the first node), `microk8s kubectl
//!   delete service kubernetes -n default --ignore-not-found` (recreated on 6443);
//!   `iptables -w 30 -t nat -C/-A OUTPUT -o lo -p tcp --dport 16443 -j REDIRECT --to-port 6443`
//!   and the same in `PREROUTING`; writes [`paths::APISERVER_REDIRECT_UNIT`] (a oneshot unit
//!   re-adding both rules at boot — no `iptables-persistent`, no `apt-get`), `systemctl
//!   daemon-reload`, `systemctl enable capi-microk8s-apiserver-redirect.service`.
//! - `60-enable-addons.sh`: `microk8s enable community` (failure ignored: no such
//!   repository before 1.24), then `microk8s enable ADDON` for each (3 attempts), wait after
//!   each.
//! - `60-add-node.sh`: `microk8s add-node --token TOKEN --token-ttl TTL` (output discarded).
//! - `70-apiserver-proxy.sh`: waits for `$SNAP_CURRENT/args/traefik/provider.yaml`, replaces
//!   its server addresses by one `address: 'HOST:PORT'` (at the first one's place and
//!   indentation); with `--no-refresh`: replaces `--refresh-interval` in
//!   `$SNAP_CURRENT/args/apiserver-proxy` by `--refresh-interval 0s`, restart
//!   `daemon-apiserver-proxy`.
//! - `80-mark-accepts-joins.sh`: node = the last `--hostname-override` in
//!   `$SNAP_CURRENT/args/kubelet`, else `hostname`, in lower case; waits for `microk8s kubectl
//!   get node NODE`, then `microk8s kubectl label node NODE KEY=VALUE --overwrite`. The label
//!   ([`mk8s_api::consts::NODE_LABEL_JOINS_ACCEPTED`]`=true`) tells the management cluster that
//!   the join token is registered, long after the Node itself appeared.
//! - `99-bootstrap-complete.sh`: see fail-stop above.
//!
//! Commands the scripts need on the node: bash, sh, coreutils (`mkdir`, `mv`, `rm`, `cat`,
//! `sleep`, `timeout`), `sed`, `grep`, `hostname`, plus `snap`, `microk8s`, `systemctl`,
//! `iptables` and (store proxy only) `curl`. Nothing is downloaded besides the snap.
//!
//! ## `CAPI_ROOT` (tests only)
//!
//! Every absolute path the scripts read or write is prefixed with `$CAPI_ROOT`
//! ([`paths::ROOT_ENV`]), which nothing sets on a real node (cloud-init runs runcmd with its
//! own environment), so it is empty there. Tests and the machine simulator set it to a
//! scratch directory, move the `/capi-scripts/…` paths of `runcmd` under it, and put stub
//! commands first in `PATH`.
//!
//! ## Validation
//!
//! [`render`] refuses, with a [`RenderError`] meant for a Kubernetes condition (never
//! containing a secret), anything the node would trip over late: a join token that is not 32
//! URL-safe characters, a TTL ≤ 0, a version that is not semantic, strict confinement below
//! 1.25, unknown enum values, an endpoint host that is neither an IP address nor a DNS name or
//! port 0, a joining role without addresses, empty CA or auth token, line breaks in values
//! written to one line (proxies, addons, kubelet arguments), malformed `extraWriteFiles`, a
//! malformed `snapRefreshHold`. Empty strings mean "not set". It never panics.

mod channel;
mod check;
mod error;
pub mod jinja;
mod model;
pub mod paths;
mod roles;
mod scripts;
mod validate;
mod yaml;

pub use channel::{Channel, FIRST_STRICT_TRACK, install_channel};
pub use check::check;
pub use error::RenderError;
pub use model::{CloudConfig, RunCmd, WriteFile};
pub use roles::{CaFiles, RenderInput, Role, cloud_config, validate_spec};
pub use scripts::scripts;
pub use validate::JOIN_TOKEN_LEN;
pub use yaml::HEADER;

/// Renders the user-data of one machine: [`HEADER`] and the YAML of [`cloud_config`].
pub fn render(input: &RenderInput<'_>) -> Result<String, RenderError> {
    cloud_config(input)?.to_document()
}

/// Placeholders for rendering without secrets (the bootstrap binary's offline `render`
/// subcommand). Each passes the renderer's validation.
pub mod placeholder {
    /// A join token: 32 characters, as the renderer requires.
    pub const JOIN_TOKEN: &str = "JOINTOKENPLACEHOLDER000000000000";
    /// The cluster agent auth token.
    pub const AUTH_TOKEN: &str = "<cluster-agent-auth-token>";
    /// The cluster CA certificate.
    pub const CA_CERT: &str = "<cluster-ca-certificate-pem>\n";
    /// The cluster CA private key.
    pub const CA_KEY: &str = "<cluster-ca-private-key-pem>\n";
}
