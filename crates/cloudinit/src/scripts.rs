//! The node scripts, embedded from `crates/cloudinit/scripts/`.

/// One embedded script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Script {
    /// File name under [`crate::paths::SCRIPTS_DIR`].
    pub name: &'static str,
    /// Content.
    pub content: &'static str,
}

macro_rules! scripts {
    ($($ident:ident = $file:literal;)*) => {
        $(
            pub(crate) const $ident: Script = Script {
                name: $file,
                content: include_str!(concat!("../scripts/", $file)),
            };
        )*
        static ALL: &[(&str, &str)] = &[$(($file, $ident.content)),*];
    };
}

scripts! {
    LIB = "lib.sh";
    SNAPD_PROXY = "00-snapd-proxy.sh";
    SNAPSTORE_PROXY = "00-snapstore-proxy.sh";
    DISABLE_HOST_SERVICES = "00-disable-host-services.sh";
    INSTALL = "10-install-microk8s.sh";
    CONTAINERD_PROXY = "10-containerd-proxy.sh";
    KUBELET_ARGS = "10-kubelet-args.sh";
    WAIT_APISERVER = "20-wait-apiserver.sh";
    REFRESH_CERTS = "30-refresh-certs.sh";
    CALICO_IPIP = "30-calico-ipip.sh";
    CLUSTER_AGENT_PORT = "30-cluster-agent-port.sh";
    DQLITE_PORT = "30-dqlite-port.sh";
    CERT_SAN = "30-cert-san.sh";
    JOIN = "40-join.sh";
    APISERVER_PORT = "50-apiserver-port.sh";
    ENABLE_ADDONS = "60-enable-addons.sh";
    ADD_NODE = "60-add-node.sh";
    APISERVER_PROXY = "70-apiserver-proxy.sh";
    MARK_ACCEPTS_JOINS = "80-mark-accepts-joins.sh";
    BOOTSTRAP_COMPLETE = "99-bootstrap-complete.sh";
}

/// Every node script as `(file name, content)`, the shared library `lib.sh` first. A role's
/// cloud-config writes the library and the scripts its `runcmd` calls to
/// [`crate::paths::SCRIPTS_DIR`].
pub fn scripts() -> &'static [(&'static str, &'static str)] {
    ALL
}
