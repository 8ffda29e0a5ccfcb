//! The **light mode** of the workload API servers ([`LightBackend`]), for benchmarks with
//! hundreds or a thousand simulated clusters: ONE shared real `kube-apiserver` (started with
//! the first cluster, storing in the configured etcd) serves every simulated cluster, each
//! through a small TLS proxy of its own on the cluster's endpoint.
//!
//! # What each cluster still gets
//!
//! * Its endpoint (`https://<endpoint>:<port>`) serves TLS with a certificate signed by the
//!   cluster CA the cloud-config delivered (SANs: endpoint IP, `127.0.0.1`, `localhost`), and
//!   verifies client certificates against that CA: a kubeconfig signed by another CA is
//!   refused at the TLS handshake, as by the normal mode's `--client-ca-file`. Without a client
//!   certificate only `/readyz`, `/livez`, `/healthz` and `/version` answer (anonymous access in
//!   a real apiserver), everything else is `401`.
//! * **Its own Nodes only.** Nodes are cluster-scoped, so the proxy keeps clusters apart: a
//!   Node created through a cluster's proxy is labelled `light.mk8s-sim.io/cluster=<id>`,
//!   lists, watches and collection deletes of Nodes get that label selector added, and a Node
//!   name owned by another cluster answers `404` (a create with such a name `409`). So CAPI's
//!   ClusterCache, the control plane provider's Node watch and `microk8s kubectl get nodes`
//!   each see exactly their cluster's Nodes. Node names are the machines' host names, so
//!   they must be unique across the clusters of one simulator (CAPI's generated names are).
//! * Everything else is the real apiserver's: discovery, OpenAPI, server-side apply,
//!   strategic merge patches, watches with bookmarks, `kubectl` as the node scripts use it.
//!
//! # What the light mode does not verify (use the normal mode for these)
//!
//! * The start of a real per-cluster apiserver by `microk8s refresh-certs` (≈ 3.5 s of the
//!   init node's bootstrap in the normal mode; instant here) and its flags.
//! * Isolation of anything but Nodes: namespaces, Pods, Services, Secrets, RBAC are shared by
//!   all clusters. Node action pods (member removal, in-place refresh) and the `capi-auth-token`
//!   Secret in `microk8s-capi-system` would collide between clusters: scale-down, remediation
//!   and upgrades are not supported in this mode. The init script's
//!   `kubectl delete service kubernetes` deletes the shared one (the apiserver recreates it).
//! * Authorization: every authenticated request is forwarded as the shared apiserver's admin
//!   (`system:masters`); the normal mode checks RBAC with the client certificate's user.
//! * Upgrade requests (`exec`, `attach`, `port-forward`) are refused (`501`).
//!
//! Memory: the shared apiserver and its etcd once, plus per cluster a listener, a TLS
//! configuration and the connections its clients keep open (measured by `mk8s-bench`).

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, combinators::UnsyncBoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mk8s_testenv::{EtcdServer, WorkloadApiServer, WorkloadApiServerOptions};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

use crate::config::EtcdMode;
use crate::workload::{BoxFuture, WorkloadApi, WorkloadBackend};

/// Label the proxy puts on the Nodes of a cluster (value `c<id>`).
pub const CLUSTER_LABEL: &str = "light.mk8s-sim.io/cluster";

/// Largest request body the proxy reads (Node creations are a few KiB).
const MAX_BODY: usize = 16 << 20;

type ProxyBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Node name → id of the cluster that created it.
type Owners = Arc<Mutex<HashMap<String, u64>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One shared kube-apiserver for every simulated cluster, behind a TLS proxy per cluster.
pub struct LightBackend {
    kube_apiserver: PathBuf,
    etcd_bin: PathBuf,
    mode: EtcdMode,
    shared: tokio::sync::Mutex<Option<Arc<Shared>>>,
    pids: Mutex<Vec<u32>>,
    next_id: AtomicU64,
    owners: Owners,
}

/// Fields drop in declaration order: the apiserver first, then its etcd.
struct Shared {
    _server: WorkloadApiServer,
    _etcd: Option<EtcdServer>,
    /// Admin client of the shared apiserver (no read timeout: it carries long watches).
    client: kube::Client,
}

impl LightBackend {
    /// A backend running `kube_apiserver` once, storing in the etcd of `mode` (a shared etcd
    /// at a URL, else one it starts with `etcd_bin`).
    pub fn new(kube_apiserver: PathBuf, etcd_bin: PathBuf, mode: EtcdMode) -> LightBackend {
        LightBackend {
            kube_apiserver,
            etcd_bin,
            mode,
            shared: tokio::sync::Mutex::new(None),
            pids: Mutex::new(vec![]),
            next_id: AtomicU64::new(1),
            owners: Arc::default(),
        }
    }

    /// The processes of the shared apiserver (and the etcd it started), once running.
    pub fn pids(&self) -> Vec<u32> {
        lock(&self.pids).clone()
    }

    /// Stops the shared apiserver and its etcd (after every cluster is gone).
    pub async fn stop(&self) {
        let shared = self.shared.lock().await.take();
        lock(&self.pids).clear();
        if let Some(s) = shared {
            let _ = tokio::task::spawn_blocking(move || drop(s)).await;
        }
    }

    async fn shared(&self) -> Result<Arc<Shared>, String> {
        let mut slot = self.shared.lock().await;
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let (url, etcd) = match &self.mode {
            EtcdMode::Shared(Some(url)) => (url.clone(), None),
            _ => {
                let e = EtcdServer::start(&self.etcd_bin)
                    .await
                    .map_err(|e| format!("starting the light mode's etcd: {e}"))?;
                (e.url().to_string(), Some(e))
            }
        };
        let ca = mk8s_testenv::generate_ca("mk8s-sim-light", mk8s_testenv::CaKeyFormat::EcdsaP256)
            .map_err(|e| e.to_string())?;
        let server = mk8s_testenv::start_workload_apiserver(
            &self.kube_apiserver,
            &url,
            WorkloadApiServerOptions::new(&ca.cert_pem, &ca.key_pem),
        )
        .await
        .map_err(|e| format!("starting the shared apiserver: {e}"))?;
        let yaml = server.admin_kubeconfig_yaml().map_err(|e| e.to_string())?;
        let mut config = mk8s_testenv::config_from_kubeconfig_yaml(&yaml)
            .await
            .map_err(|e| e.to_string())?;
        config.read_timeout = None;
        let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
        let mut pids = vec![server.pid()];
        pids.extend(etcd.as_ref().map(EtcdServer::pid));
        *lock(&self.pids) = pids;
        tracing::info!(url = %server.url(), "light mode: the shared workload apiserver runs");
        let s = Arc::new(Shared {
            _server: server,
            _etcd: etcd,
            client,
        });
        *slot = Some(s.clone());
        Ok(s)
    }
}

impl Drop for LightBackend {
    fn drop(&mut self) {
        // `stop` is the orderly way; this only makes sure no process outlives the backend.
        if let Ok(mut slot) = self.shared.try_lock() {
            let _ = slot.take();
        }
    }
}

/// Signs a certificate with the cluster CA: a serving one for `sans`, or a client one.
fn sign(ca_cert: &str, ca_key: &str, cn: &str, sans: &[String], server: bool) -> Result<(String, String), String> {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::from_pem(ca_key).map_err(|e| format!("the cluster CA key: {e}"))?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert, ca_key).map_err(|e| format!("the cluster CA: {e}"))?;
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(sans.to_vec()).map_err(|e| e.to_string())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn pem_der(pem: &str) -> Result<CertificateDer<'static>, String> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| format!("PEM: {e}"))?;
    Ok(CertificateDer::from(p.contents))
}

fn server_config(ca_cert: &str, cert: &str, key: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(pem_der(ca_cert)?)
        .map_err(|e| format!("the cluster CA: {e}"))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("client verifier: {e}"))?;
    let (_, key_pem) = x509_parser::pem::parse_x509_pem(key.as_bytes()).map_err(|e| format!("key PEM: {e}"))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pem.contents));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pem_der(cert)?], key)
        .map_err(|e| format!("TLS server configuration: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

impl WorkloadBackend for LightBackend {
    fn start<'a>(
        &'a self,
        endpoint: SocketAddrV4,
        ca_cert: &'a str,
        ca_key: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn WorkloadApi>, String>> {
        Box::pin(async move {
            let shared = self.shared().await?;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let ip = endpoint.ip().to_string();
            let sans = vec![ip.clone(), "127.0.0.1".to_string(), "localhost".to_string()];
            let (cert, key) = sign(ca_cert, ca_key, "kube-apiserver", &sans, true)?;
            let tls = server_config(ca_cert, &cert, &key)?;
            let url = format!("https://{endpoint}");
            let client_ca = mk8s_testenv::CertKeyPem {
                cert_pem: ca_cert.to_string(),
                key_pem: ca_key.to_string(),
            };
            let admin_kubeconfig = mk8s_testenv::certs::kubeconfig_with_client_cert(
                &url,
                ca_cert,
                &client_ca,
                "admin",
                &["system:masters"],
            )
            .map_err(|e| e.to_string())?;
            let listener = TcpListener::bind(std::net::SocketAddr::V4(endpoint))
                .await
                .map_err(|e| format!("listening on {endpoint}: {e}"))?;
            let ctx = Arc::new(Proxy {
                id,
                label: format!("c{id}"),
                client: shared.client.clone(),
                owners: self.owners.clone(),
            });
            let task = tokio::spawn(serve(listener, tls, ctx.clone()));
            tracing::debug!(%endpoint, id, "light mode: cluster proxy listening");
            Ok(Box::new(LightApi {
                url,
                admin_kubeconfig,
                task: task.abort_handle(),
                proxy: ctx,
            }) as Box<dyn WorkloadApi>)
        })
    }
}

/// A cluster's endpoint in light mode. Dropping it stops its proxy and deletes its Nodes from
/// the shared apiserver.
struct LightApi {
    url: String,
    admin_kubeconfig: String,
    task: tokio::task::AbortHandle,
    proxy: Arc<Proxy>,
}

impl WorkloadApi for LightApi {
    fn url(&self) -> &str {
        &self.url
    }

    fn admin_kubeconfig(&self) -> Result<String, String> {
        Ok(self.admin_kubeconfig.clone())
    }

    fn pids(&self) -> Vec<u32> {
        // The shared apiserver is accounted once, by the simulator handle.
        vec![]
    }
}

impl Drop for LightApi {
    fn drop(&mut self) {
        self.task.abort();
        lock(&self.proxy.owners).retain(|_, id| *id != self.proxy.id);
        let client = self.proxy.client.clone();
        let selector = format!("{CLUSTER_LABEL}={}", self.proxy.label);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
                let lp = kube::api::ListParams::default().labels(&selector);
                if let Err(e) = nodes.delete_collection(&Default::default(), &lp).await {
                    tracing::debug!(%selector, "light mode: deleting the Nodes of a removed cluster: {e}");
                }
            });
        }
    }
}

/// The per-cluster proxy's state.
struct Proxy {
    id: u64,
    label: String,
    client: kube::Client,
    owners: Owners,
}

async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, proxy: Arc<Proxy>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    // Connection tasks live in this set: aborting the serving task closes them all.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok((tcp, _peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        let proxy = proxy.clone();
        conns.spawn(async move {
            let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else {
                return;
            };
            let authenticated = stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let proxy = proxy.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&proxy, authenticated, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn full(status: StatusCode, body: String, content_type: &str) -> Response<ProxyBody> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed_unsync());
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// A `metav1.Status` failure, as the apiserver writes it.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    full(code, body.to_string(), "application/json")
}

/// Which Node requests need the proxy's attention.
#[derive(Debug, PartialEq, Eq)]
enum NodePath<'a> {
    /// `/api/v1/nodes` or `/api/v1/watch/nodes`.
    Collection,
    /// `/api/v1/nodes/<name>[/<sub>]` or `/api/v1/watch/nodes/<name>`.
    Named(&'a str),
    /// Anything else.
    Other,
}

fn node_path(path: &str) -> NodePath<'_> {
    let rest = path
        .strip_prefix("/api/v1/nodes")
        .or_else(|| path.strip_prefix("/api/v1/watch/nodes"));
    match rest {
        Some("" | "/") => NodePath::Collection,
        Some(r) if r.starts_with('/') => {
            let name = r[1..].split('/').next().unwrap_or_default();
            if name.is_empty() {
                NodePath::Collection
            } else {
                NodePath::Named(name)
            }
        }
        _ => NodePath::Other,
    }
}

fn is_public(path: &str) -> bool {
    ["/readyz", "/livez", "/healthz", "/version"]
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The query with `selector` added to its `labelSelector` (AND).
fn with_selector(query: Option<&str>, selector: &str) -> String {
    let mut found = false;
    let mut parts: Vec<String> = query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some(("labelSelector", v)) => {
                found = true;
                let v = percent_decode(v);
                let merged = if v.trim().is_empty() {
                    selector.to_string()
                } else {
                    format!("{v},{selector}")
                };
                format!("labelSelector={}", percent_encode(&merged))
            }
            _ => p.to_string(),
        })
        .collect();
    if !found {
        parts.push(format!("labelSelector={}", percent_encode(selector)));
    }
    parts.join("&")
}

/// Hop-by-hop headers, and those the forwarding client sets itself.
fn forwardable(name: &http::HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
            | "host"
            | "content-length"
            | "authorization"
    ) && !name.as_str().starts_with("impersonate-")
}

async fn handle(proxy: &Proxy, authenticated: bool, req: Request<Incoming>) -> Response<ProxyBody> {
    let path = req.uri().path().to_string();
    if !authenticated && !is_public(&path) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    if req.headers().contains_key(http::header::UPGRADE) {
        return status(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "the simulator's light mode does not proxy upgraded connections (exec, attach, port-forward)",
        );
    }
    let (parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("reading the request body: {e}"),
            );
        }
    };
    let selector = format!("{CLUSTER_LABEL}={}", proxy.label);
    let mut query = parts.uri.query().map(str::to_string);
    let mut body = body;
    let mut created: Option<String> = None;
    let mut deleted: Option<String> = None;
    match node_path(&path) {
        NodePath::Collection if parts.method == http::Method::POST => {
            let mut node: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => {
                    return status(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "UnsupportedMediaType",
                        &format!("the light mode creates Nodes from JSON only: {e}"),
                    );
                }
            };
            let name = node["metadata"]["name"].as_str().unwrap_or_default().to_string();
            if let Some(owner) = lock(&proxy.owners).get(&name)
                && *owner != proxy.id
            {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    &format!(
                        "nodes \"{name}\" already exists in another simulated cluster (light mode: host names must be \
                         unique across clusters)"
                    ),
                );
            }
            node["metadata"]["labels"][CLUSTER_LABEL] = serde_json::Value::String(proxy.label.clone());
            body = Bytes::from(node.to_string());
            created = Some(name);
        }
        NodePath::Collection => {
            // list, watch, deletecollection: this cluster's Nodes only.
            query = Some(with_selector(query.as_deref(), &selector));
        }
        NodePath::Named(name) => {
            let owner = lock(&proxy.owners).get(name).copied();
            if owner.is_some_and(|o| o != proxy.id) {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("nodes \"{name}\" not found"),
                );
            }
            if parts.method == http::Method::DELETE {
                deleted = Some(name.to_string());
            }
        }
        NodePath::Other => {}
    }
    let uri = match &query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.clone(),
    };
    let mut builder = http::Request::builder().method(parts.method.clone()).uri(uri);
    for (k, v) in &parts.headers {
        if forwardable(k) {
            builder = builder.header(k, v);
        }
    }
    let upstream = match builder.body(kube::client::Body::from(body)) {
        Ok(r) => r,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    let resp = match proxy.client.send(upstream).await {
        Ok(r) => r,
        Err(e) => {
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                &format!("the shared workload apiserver: {e}"),
            );
        }
    };
    if resp.status().is_success() {
        if let Some(name) = created {
            lock(&proxy.owners).insert(name, proxy.id);
        }
        if let Some(name) = deleted {
            lock(&proxy.owners).remove(&name);
        }
    }
    let (rparts, rbody) = resp.into_parts();
    let mut out = Response::new(
        rbody
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            .boxed_unsync(),
    );
    *out.status_mut() = rparts.status;
    for (k, v) in &rparts.headers {
        if forwardable(k) {
            out.headers_mut().append(k, v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_node_paths() {
        assert_eq!(node_path("/api/v1/nodes"), NodePath::Collection);
        assert_eq!(node_path("/api/v1/watch/nodes"), NodePath::Collection);
        assert_eq!(node_path("/api/v1/nodes/n1"), NodePath::Named("n1"));
        assert_eq!(node_path("/api/v1/nodes/n1/status"), NodePath::Named("n1"));
        assert_eq!(node_path("/api/v1/watch/nodes/n1"), NodePath::Named("n1"));
        assert_eq!(node_path("/api/v1/nodesx"), NodePath::Other);
        assert_eq!(node_path("/api/v1/namespaces/default/pods"), NodePath::Other);
    }

    #[test]
    fn adds_the_cluster_selector() {
        let s = "light.mk8s-sim.io/cluster=c7";
        assert_eq!(with_selector(None, s), "labelSelector=light.mk8s-sim.io/cluster%3Dc7");
        assert_eq!(
            with_selector(Some("watch=true&labelSelector=a%3Db&limit=5"), s),
            "watch=true&labelSelector=a%3Db%2Clight.mk8s-sim.io/cluster%3Dc7&limit=5"
        );
        assert_eq!(
            with_selector(Some("labelSelector="), s),
            "labelSelector=light.mk8s-sim.io/cluster%3Dc7"
        );
        assert_eq!(percent_decode("a%3Db%2Cc+d"), "a=b,c d");
    }

    #[test]
    fn only_health_and_version_are_public() {
        assert!(is_public("/readyz"));
        assert!(is_public("/readyz/ping"));
        assert!(is_public("/version"));
        assert!(!is_public("/readyzz"));
        assert!(!is_public("/api/v1/nodes"));
    }
}
