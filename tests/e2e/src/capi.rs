//! The real CAPI core manager (v1.14), run out of cluster: its webhooks and conversion are
//! served on loopback with a certificate generated here, the CAPI CRDs' conversion and the
//! webhook configurations point at it — so `cluster.x-k8s.io/v1beta1` objects convert for real
//! and CAPI's defaulting and validation apply, as in a real management cluster.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use mk8s_testenv::Plane;
use serde_json::{Value, json};

/// A running CAPI core manager.
pub struct CapiCore {
    child: std::sync::Mutex<Child>,
    /// Webhook port on 127.0.0.1.
    pub webhook_port: u16,
    /// Health port on 127.0.0.1.
    pub health_port: u16,
    /// Its log file.
    pub log: PathBuf,
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

impl CapiCore {
    /// Starts the manager, waits for it, then wires conversion and webhooks to it.
    pub async fn start(plane: &Plane, dir: &Path) -> CapiCore {
        Self::start_with(plane, dir, &[]).await
    }

    /// [`CapiCore::start`] with extra flags (e.g. `--kube-api-qps`, `--cluster-concurrency`).
    pub async fn start_with(plane: &Plane, dir: &Path, extra_args: &[String]) -> CapiCore {
        std::fs::create_dir_all(dir).unwrap();
        assert!(
            plane.binaries().has_capi_binaries(),
            "capi-manager is missing: run hack/build-testenv.sh --with-capi"
        );
        let bin = plane.binaries().capi_manager.clone();
        let ca = mk8s_pki::generate_ca("capi-webhook-ca", SystemTime::now()).unwrap();
        let parsed = mk8s_pki::Ca::parse(&ca.cert_pem, &ca.key_pem).unwrap();
        let (cert, key) = parsed
            .sign_server(
                "capi-webhook",
                &["127.0.0.1", "localhost"],
                SystemTime::now(),
                Duration::from_secs(86400 * 30),
            )
            .unwrap();
        let cert_dir = dir.join("certs");
        std::fs::create_dir_all(&cert_dir).unwrap();
        std::fs::write(cert_dir.join("tls.crt"), &cert).unwrap();
        std::fs::write(cert_dir.join("tls.key"), &key).unwrap();

        let webhook_port = free_port();
        let health_port = free_port();
        let diag_port = free_port();
        let log = dir.join("capi-manager.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg(format!("--kubeconfig={}", plane.kubeconfig_path().display()))
            .arg("--leader-elect=false")
            .arg(format!("--webhook-port={webhook_port}"))
            .arg(format!("--webhook-cert-dir={}", cert_dir.display()))
            .arg(format!("--health-addr=127.0.0.1:{health_port}"))
            .arg(format!("--diagnostics-address=127.0.0.1:{diag_port}"))
            .arg("--insecure-diagnostics")
            .arg("--feature-gates=ClusterTopology=true,MachinePool=true")
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = mk8s_testenv::spawn_with_pdeathsig(cmd).expect("start capi-manager");
        let core = CapiCore {
            child: std::sync::Mutex::new(child),
            webhook_port,
            health_port,
            log: log.clone(),
        };
        core.wait_ready(Duration::from_secs(120)).await;
        core.wire(plane, &ca.cert_pem).await;
        core
    }

    async fn wait_ready(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(mut c) = self.child.lock()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("capi-manager exited ({status}); log:\n{}", tail(&self.log, 40));
            }
            let ok = tokio::task::spawn_blocking({
                let port = self.health_port;
                move || http_ok(port, "/readyz")
            })
            .await
            .unwrap_or(false);
            if ok {
                return;
            }
            if start.elapsed() > timeout {
                panic!(
                    "capi-manager not ready after {timeout:?}; log:\n{}",
                    tail(&self.log, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Points the CRDs' conversion and the webhook configurations at the manager. CRDs and
    /// webhook configurations installed by `clusterctl init` (pointing at the Service
    /// `capi-webhook-service`, which has no pods here) are rewired the same way.
    async fn wire(&self, plane: &Plane, ca_pem: &str) {
        let client = plane.client().await;
        let base = format!("https://127.0.0.1:{}", self.webhook_port);
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in crds.list(&Default::default()).await.unwrap() {
            // CAPI's own kinds are the multi-version ones (ours and the simulator's serve one).
            if !crd.spec.group.ends_with("cluster.x-k8s.io") || crd.spec.versions.len() < 2 {
                continue;
            }
            let name = crd.metadata.name.clone().unwrap();
            let patch = json!({"spec": {"conversion": {"strategy": "Webhook", "webhook": {
                "conversionReviewVersions": ["v1", "v1beta1"],
                "clientConfig": {"url": format!("{base}/convert"), "caBundle": b64(ca_pem), "service": null}}}}});
            crds.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap_or_else(|e| panic!("conversion for {name}: {e}"));
        }
        let manifests = std::fs::read_to_string(plane.binaries().capi_webhook_manifests()).unwrap();
        for mut doc in serde_saphyr::from_multiple::<Value>(&manifests).unwrap() {
            if doc.is_null() {
                continue;
            }
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            doc["metadata"]["name"] = json!(format!("capi-{}", doc["metadata"]["name"].as_str().unwrap_or_default()));
            if let Some(hooks) = doc["webhooks"].as_array_mut() {
                for h in hooks {
                    let path = h["clientConfig"]["service"]["path"].as_str().unwrap_or("/").to_string();
                    h["clientConfig"] = json!({"url": format!("{base}{path}"), "caBundle": b64(ca_pem)});
                }
            }
            assert!(
                kind.ends_with("WebhookConfiguration"),
                "unexpected {kind} in webhook manifests"
            );
            let ar = kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
                "admissionregistration.k8s.io",
                "v1",
                &kind,
            ));
            let api: Api<kube::api::DynamicObject> = Api::all_with(client.clone(), &ar);
            let name = doc["metadata"]["name"].as_str().unwrap_or_default().to_string();
            if api.get_opt(&name).await.unwrap().is_some() {
                // Installed by clusterctl: replace the webhooks list whole (a merge patch
                // replaces lists), so that no `clientConfig.service` is left beside the URL.
                let patch = json!({"webhooks": doc["webhooks"]});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap_or_else(|e| panic!("rewiring {kind} {name}: {e}"));
            } else {
                crate::apply_value(&client, &doc, None).await;
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().ok().map(|c| c.id())
    }

    /// Whether the process still runs.
    pub fn is_running(&self) -> bool {
        self.child
            .lock()
            .map(|mut c| matches!(c.try_wait(), Ok(None)))
            .unwrap_or(false)
    }
}

impl Drop for CapiCore {
    fn drop(&mut self) {
        if let Ok(mut c) = self.child.lock() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A plain HTTP GET on loopback; true on 200.
pub fn http_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

/// The last lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
