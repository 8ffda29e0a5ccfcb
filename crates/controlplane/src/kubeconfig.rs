//! The `<cluster>-kubeconfig` Secret: created, rotated and adopted here.
//!
//! Ownership rule: the Secret is ours to manage when it carries our owner reference, or when it
//! has Canonical's fingerprint (no owner references, the cluster-name label, exactly one user
//! `admin` whose certificate the cluster CA signed) — then it is replaced by a compliant one
//! (type `cluster.x-k8s.io/secret`, which cannot be changed in place). Any other existing
//! Secret is user-supplied and never touched.
//!
//! Client certificates (`CN=admin`, `O=admin,system:masters`, as Canonical's) are valid for a
//! year by default and renewed once half of their life has passed, and at once when the CA or
//! the control plane endpoint changes.

use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use mk8s_api::capi::{Cluster, ClusterExt};
use mk8s_api::conditions::Condition;
use mk8s_api::consts::{self, LABEL_CLUSTER_NAME, SECRET_TYPE_CLUSTER};
use mk8s_pki::{Ca, cert_info, is_signed_by, kubeconfig_facts};

use crate::error::{Error, Result, is_already_exists};
use crate::names;
use crate::status::types::CERTIFICATES_AVAILABLE;

/// `CertificatesAvailable` reason while the cluster CA Secret is a deleted Cluster's leftover
/// (the bootstrap provider's reason for the same wait).
pub const WAITING_FOR_STALE_CA: &str = "WaitingForStaleClusterSecretRemoval";

/// The kubeconfig's user.
pub const USER: &str = "admin";
/// The client certificate's organizations (Canonical's).
pub const ORGANIZATIONS: [&str; 2] = ["admin", "system:masters"];

/// Who manages an existing kubeconfig Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// No Secret.
    Absent,
    /// Ours (owner reference to this control plane).
    Ours,
    /// Made by Canonical's provider: replace it.
    Canonical,
    /// Supplied by someone else: never touch it.
    UserSupplied,
}

/// Data of a Secret key as text.
pub fn secret_text(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .or_else(|| s.string_data.as_ref().and_then(|d| d.get(key).cloned()))
}

/// Whether an owner reference points at this control plane (group, kind and name; the uid
/// changes across `clusterctl move`).
pub fn owned_by_control_plane(owners: Option<&Vec<OwnerReference>>, mcp: &str) -> bool {
    owners.is_some_and(|o| o.iter().any(|r| names::is_control_plane_owner(r) && r.name == mcp))
}

/// Classifies an existing kubeconfig Secret. `ca_cert_pem` is the cluster CA, when readable
/// (without it, Canonical's fingerprint cannot be checked and the Secret is left alone).
pub fn ownership(secret: Option<&Secret>, mcp: &str, ca_cert_pem: Option<&str>) -> Ownership {
    let Some(s) = secret else { return Ownership::Absent };
    if owned_by_control_plane(s.metadata.owner_references.as_ref(), mcp) {
        return Ownership::Ours;
    }
    let no_owner = s.metadata.owner_references.as_ref().is_none_or(Vec::is_empty);
    let labelled = s
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(LABEL_CLUSTER_NAME));
    let signed_admin = || {
        let (Some(ca), Some(facts)) = (
            ca_cert_pem,
            secret_text(s, consts::KEY_KUBECONFIG).and_then(|v| kubeconfig_facts(&v)),
        ) else {
            return false;
        };
        matches!(facts.users.as_slice(), [(name, cert)] if name == USER && !cert.is_empty() && is_signed_by(cert, ca))
    };
    if no_owner && labelled && signed_admin() {
        Ownership::Canonical
    } else {
        Ownership::UserSupplied
    }
}

/// `https://<host>:<port>`, bracketing IPv6 hosts.
pub fn server_url(host: &str, port: i32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// Whether our kubeconfig must be regenerated, and when to look again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Current; renew at this time.
    Current {
        /// When half of the certificate's life has passed.
        renew_at: SystemTime,
    },
    /// Regenerate, for this reason.
    Stale(String),
}

/// Checks our kubeconfig against the endpoint, the CA and the clock.
pub fn freshness(kubeconfig: &str, server: &str, ca: &Ca, now: SystemTime) -> Freshness {
    let ca_cert_pem = ca.cert_pem();
    let Some(facts) = kubeconfig_facts(kubeconfig) else {
        return Freshness::Stale("the kubeconfig cannot be read".into());
    };
    if facts.server != server {
        return Freshness::Stale(format!("the endpoint changed from {} to {server}", facts.server));
    }
    if facts.ca_cert_pem.trim() != ca_cert_pem.trim() {
        return Freshness::Stale("the cluster CA changed".into());
    }
    let [(name, cert)] = facts.users.as_slice() else {
        return Freshness::Stale("the kubeconfig does not have exactly one user".into());
    };
    if name != USER || !is_signed_by(cert, ca_cert_pem) {
        return Freshness::Stale("the client certificate is not signed by the cluster CA".into());
    }
    let Ok(info) = cert_info(cert) else {
        return Freshness::Stale("the client certificate cannot be read".into());
    };
    // A client certificate cannot outlive the CA (it is signed to end with it at the latest):
    // one that ends with the CA is as good as any renewal would make it, and renewing it at
    // half of an ever shorter life would rewrite the Secret in a loop as the CA's end nears.
    // Look again when the CA expires.
    if info.not_after >= ca.not_after() {
        return Freshness::Current {
            renew_at: ca.not_after(),
        };
    }
    let life = info.not_after.duration_since(info.not_before).unwrap_or_default();
    let renew_at = info.not_before + life / 2;
    if now >= renew_at {
        return Freshness::Stale("the client certificate is past half of its validity".into());
    }
    Freshness::Current { renew_at }
}

/// Renders a kubeconfig for `server` with a fresh client certificate.
pub fn render(ca: &Ca, server: &str, now: SystemTime, validity: Duration) -> Result<String> {
    let (cert, key) = ca.sign_client(USER, &ORGANIZATIONS, now, validity)?;
    Ok(mk8s_pki::kubeconfig(server, ca.cert_pem(), USER, &cert, &key))
}

/// The `CertificatesAvailable` condition when the CA has expired by `now`: nothing it signs
/// authenticates, so no kubeconfig is written (an existing one is kept as it is). The CA
/// Secret's watch brings its replacement.
pub fn expired(ca: &Ca, secret: &str, now: SystemTime) -> Option<Condition> {
    if ca.not_after() > now {
        return None;
    }
    let at = k8s_openapi::jiff::Timestamp::try_from(ca.not_after())
        .map_or_else(|_| "an unreadable time".to_string(), |t| t.to_string());
    Some(cond_false(
        CA_EXPIRED,
        format!(
            "the cluster CA in Secret {secret} expired at {at}; replace it (no kubeconfig is signed by an expired CA)"
        ),
    ))
}

/// `CertificatesAvailable` reason once the cluster CA has expired.
pub const CA_EXPIRED: &str = "ClusterCAExpired";

/// The cluster CA from `<cluster>-ca`: `tls.crt`/`tls.key`, else Canonical's `crt`/`key`.
pub fn read_ca(secret: &Secret) -> std::result::Result<Ca, String> {
    let pair = |c: &str, k: &str| Some((secret_text(secret, c)?, secret_text(secret, k)?));
    let Some((cert, key)) =
        pair(consts::KEY_TLS_CRT, consts::KEY_TLS_KEY).or_else(|| pair(consts::KEY_CRT, consts::KEY_KEY))
    else {
        return Err("it has neither tls.crt/tls.key nor crt/key".into());
    };
    Ca::parse(&cert, &key).map_err(|e| e.to_string())
}

/// What the kubeconfig step produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// `CertificatesAvailable`.
    pub condition: Condition,
    /// The kubeconfig to reach the workload cluster with (ours or the user's).
    pub kubeconfig: Option<String>,
    /// When to look again (renewal).
    pub renew_in: Option<Duration>,
    /// What was done, for an Event: (reason, message).
    pub event: Option<(&'static str, String)>,
}

/// Inputs of [`reconcile`].
pub struct Inputs<'a> {
    /// Client of the management cluster.
    pub client: &'a kube::Client,
    /// Where the CA and kubeconfig Secrets are read.
    pub secrets: &'a mk8s_runtime::secret_cache::SecretCache,
    /// Namespace.
    pub namespace: &'a str,
    /// Cluster name.
    pub cluster: &'a str,
    /// The Cluster: its uid tells a CA left by a deleted Cluster of the same name.
    pub owner: &'a Cluster,
    /// Control plane name and uid (owner reference).
    pub mcp: (&'a str, &'a str),
    /// Endpoint.
    pub host: &'a str,
    /// Endpoint port.
    pub port: i32,
    /// Client certificate validity.
    pub validity: Duration,
}

fn owner(mcp: (&str, &str)) -> OwnerReference {
    OwnerReference {
        api_version: format!("{}/v1beta1", names::GROUP),
        kind: names::KIND.into(),
        name: mcp.0.into(),
        uid: mcp.1.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn new_secret(i: &Inputs<'_>, value: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(consts::kubeconfig_secret(i.cluster)),
            namespace: Some(i.namespace.into()),
            labels: Some([(LABEL_CLUSTER_NAME.to_string(), i.cluster.to_string())].into()),
            owner_references: Some(vec![owner(i.mcp)]),
            ..Default::default()
        },
        type_: Some(SECRET_TYPE_CLUSTER.into()),
        data: Some(
            [(
                consts::KEY_KUBECONFIG.to_string(),
                ByteString(value.as_bytes().to_vec()),
            )]
            .into(),
        ),
        ..Default::default()
    }
}

fn cond_true(reason: &str, msg: &str) -> Condition {
    Condition::true_(CERTIFICATES_AVAILABLE, reason, msg)
}

fn cond_false(reason: &str, msg: impl Into<String>) -> Condition {
    Condition::false_(CERTIFICATES_AVAILABLE, reason, msg)
}

/// Creates, renews or adopts the kubeconfig Secret.
pub async fn reconcile(i: &Inputs<'_>) -> Result<Outcome> {
    let secrets: Api<Secret> = Api::namespaced(i.client.clone(), i.namespace);
    let name = consts::kubeconfig_secret(i.cluster);
    let server = server_url(i.host, i.port);
    let now = SystemTime::now();
    let ca_name = consts::ca_secret(i.cluster);
    let ca = match i.secrets.get(i.namespace, &ca_name).await? {
        None => Err(cond_false(
            "WaitingForClusterCA",
            format!(
                "waiting for Secret {ca_name} (the bootstrap provider creates it with the first control plane machine's configuration)"
            ),
        )),
        Some(s) => match i
            .owner
            .stale_owner_in(s.metadata.owner_references.as_deref().unwrap_or_default())
        {
            // A leftover of a deleted Cluster of this name (the bootstrap provider waits for
            // it too, then creates this cluster's CA): a kubeconfig signed by it would be
            // replaced as soon as the new CA appears, and the workload cluster never trusts it.
            Some(uid) => Err(cond_false(
                WAITING_FOR_STALE_CA,
                format!(
                    "Secret {ca_name} belongs to a deleted Cluster {} (uid {uid}); waiting for the garbage collector to remove it and for this cluster's CA",
                    i.cluster
                ),
            )),
            None => match read_ca(&s) {
                Ok(ca) => expired(&ca, &ca_name, now).map_or(Ok(ca), Err),
                Err(e) => Err(cond_false("InvalidClusterCA", format!("Secret {ca_name}: {e}"))),
            },
        },
    };
    let existing = i.secrets.get(i.namespace, &name).await?;
    let ca_pem = ca.as_ref().ok().map(|c| c.cert_pem().to_string());
    let current_value = existing.as_deref().and_then(|s| secret_text(s, consts::KEY_KUBECONFIG));
    let own = ownership(existing.as_deref(), i.mcp.0, ca_pem.as_deref());
    let pp = PostParams {
        field_manager: Some(names::FIELD_MANAGER.into()),
        ..Default::default()
    };
    match own {
        Ownership::UserSupplied => Ok(Outcome {
            condition: match &ca {
                Ok(_) => cond_true(
                    "KubeconfigUserSupplied",
                    &format!("Secret {name} is user-supplied and left as is"),
                ),
                Err(c) => c.clone(),
            },
            kubeconfig: current_value,
            renew_in: None,
            event: None,
        }),
        Ownership::Absent => {
            let ca = match ca {
                Ok(ca) => ca,
                Err(c) => return Ok(waiting(c, None)),
            };
            let value = render(&ca, &server, now, i.validity)?;
            match secrets.create(&pp, &new_secret(i, &value)).await {
                Ok(created) => {
                    i.secrets.wrote(created, None, false);
                }
                // Someone created it meanwhile; look again on the next reconcile.
                Err(e) if is_already_exists(&e) => return Err(Error::Conflict(format!("Secret {name} appeared"))),
                Err(e) => return Err(e.into()),
            }
            Ok(Outcome {
                condition: cond_true("Available", ""),
                kubeconfig: Some(value),
                renew_in: Some(i.validity / 2),
                event: Some(("KubeconfigCreated", format!("created Secret {name} for {server}"))),
            })
        }
        Ownership::Canonical => {
            let ca = match ca {
                Ok(ca) => ca,
                Err(c) => return Ok(waiting(c, current_value)),
            };
            let value = render(&ca, &server, now, i.validity)?;
            let old = existing.as_ref().map(|s| &s.metadata);
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: old.and_then(|m| m.uid.clone()),
                    resource_version: old.and_then(|m| m.resource_version.clone()),
                }),
                ..Default::default()
            };
            secrets.delete(&name, &dp).await?;
            let created = secrets.create(&pp, &new_secret(i, &value)).await?;
            i.secrets
                .wrote(created, old.and_then(|m| m.resource_version.clone()), true);
            Ok(Outcome {
                condition: cond_true("Available", ""),
                kubeconfig: Some(value),
                renew_in: Some(i.validity / 2),
                event: Some((
                    "KubeconfigAdopted",
                    format!(
                        "replaced Canonical's Secret {name} with a short-lived, rotated one of type {SECRET_TYPE_CLUSTER}"
                    ),
                )),
            })
        }
        Ownership::Ours => {
            let ca = match ca {
                Ok(ca) => ca,
                Err(c) => return Ok(waiting(c, current_value)),
            };
            let fresh = current_value
                .as_deref()
                .map_or(Freshness::Stale("the Secret has no value".into()), |v| {
                    freshness(v, &server, &ca, now)
                });
            match fresh {
                Freshness::Current { renew_at } => Ok(Outcome {
                    condition: cond_true("Available", ""),
                    kubeconfig: current_value,
                    renew_in: Some(renew_at.duration_since(now).unwrap_or_default()),
                    event: None,
                }),
                Freshness::Stale(why) => {
                    let value = render(&ca, &server, now, i.validity)?;
                    let rv = existing.as_ref().and_then(|s| s.metadata.resource_version.clone());
                    let patch = serde_json::json!({
                        "metadata": {"resourceVersion": rv},
                        "data": {consts::KEY_KUBECONFIG: ByteString(value.as_bytes().to_vec())},
                    });
                    let patched = secrets
                        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                        .await?;
                    i.secrets.wrote(patched, rv, false);
                    Ok(Outcome {
                        condition: cond_true("Available", ""),
                        kubeconfig: Some(value),
                        renew_in: Some(i.validity / 2),
                        event: Some(("KubeconfigRotated", format!("renewed Secret {name}: {why}"))),
                    })
                }
            }
        }
    }
}

fn waiting(c: Condition, kubeconfig: Option<String>) -> Outcome {
    Outcome {
        condition: c,
        kubeconfig,
        renew_in: None,
        event: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (mk8s_pki::CaPem, Ca) {
        let pem = mk8s_pki::generate_ca("10.152.183.1", SystemTime::now()).unwrap();
        let ca = Ca::parse(&pem.cert_pem, &pem.key_pem).unwrap();
        (pem, ca)
    }

    fn secret(value: &str, labels: bool, owners: Vec<OwnerReference>) -> Secret {
        Secret {
            metadata: ObjectMeta {
                labels: labels.then(|| [(LABEL_CLUSTER_NAME.to_string(), "c".to_string())].into()),
                owner_references: Some(owners),
                ..Default::default()
            },
            data: Some([("value".to_string(), ByteString(value.as_bytes().to_vec()))].into()),
            ..Default::default()
        }
    }

    #[test]
    fn ownership_rule() {
        let (pem, ca) = ca();
        let now = SystemTime::now();
        let kc = render(&ca, "https://1.2.3.4:6443", now, Duration::from_secs(3600)).unwrap();
        let ours = secret(&kc, true, vec![owner(("cp", "uid"))]);
        assert_eq!(ownership(Some(&ours), "cp", Some(&pem.cert_pem)), Ownership::Ours);
        let canonical = secret(&kc, true, vec![]);
        assert_eq!(
            ownership(Some(&canonical), "cp", Some(&pem.cert_pem)),
            Ownership::Canonical
        );
        assert_eq!(
            ownership(Some(&canonical), "cp", None),
            Ownership::UserSupplied,
            "without the CA we cannot tell: leave it"
        );
        let unlabelled = secret(&kc, false, vec![]);
        assert_eq!(
            ownership(Some(&unlabelled), "cp", Some(&pem.cert_pem)),
            Ownership::UserSupplied
        );
        let (other, _) = self::ca();
        assert_eq!(
            ownership(Some(&canonical), "cp", Some(&other.cert_pem)),
            Ownership::UserSupplied,
            "signed by another CA"
        );
        let (c2, k2) = ca.sign_client("someone", &[], now, Duration::from_secs(60)).unwrap();
        let not_admin = secret(
            &mk8s_pki::kubeconfig("https://x:1", &pem.cert_pem, "someone", &c2, &k2),
            true,
            vec![],
        );
        assert_eq!(
            ownership(Some(&not_admin), "cp", Some(&pem.cert_pem)),
            Ownership::UserSupplied
        );
        let foreign_owner = OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "x".into(),
            uid: "u".into(),
            ..Default::default()
        };
        let owned_else = secret(&kc, true, vec![foreign_owner]);
        assert_eq!(
            ownership(Some(&owned_else), "cp", Some(&pem.cert_pem)),
            Ownership::UserSupplied
        );
        assert_eq!(ownership(None, "cp", None), Ownership::Absent);
    }

    #[test]
    fn freshness_and_rotation() {
        let (_, ca) = ca();
        let now = SystemTime::now();
        let year = Duration::from_secs(365 * 86400);
        let kc = render(&ca, "https://1.2.3.4:6443", now, year).unwrap();
        let Freshness::Current { renew_at } = freshness(&kc, "https://1.2.3.4:6443", &ca, now) else {
            panic!()
        };
        let half = renew_at.duration_since(now).unwrap();
        assert!(
            half > Duration::from_secs(180 * 86400) && half < Duration::from_secs(183 * 86400),
            "{half:?}"
        );
        assert!(matches!(
            freshness(&kc, "https://1.2.3.4:6443", &ca, now + Duration::from_secs(200 * 86400)),
            Freshness::Stale(_)
        ));
        assert!(matches!(
            freshness(&kc, "https://5.6.7.8:6443", &ca, now),
            Freshness::Stale(m) if m.contains("endpoint")
        ));
        let (_, other) = self::ca();
        assert!(matches!(
            freshness(&kc, "https://1.2.3.4:6443", &other, now),
            Freshness::Stale(m) if m.contains("CA")
        ));
        assert!(matches!(freshness("junk: [", "x", &ca, now), Freshness::Stale(_)));
        let info = cert_info(&kubeconfig_facts(&kc).unwrap().users[0].1).unwrap();
        assert_eq!(info.common_name, "admin");
        assert_eq!(info.organizations, ["admin", "system:masters"]);
    }

    /// A CA that expires `left` after now.
    fn ca_ending_in(left: Duration) -> Ca {
        let now = SystemTime::now();
        // generate_ca backdates by an hour; the CA lives CA_VALIDITY from the `now` it is given.
        let pem = mk8s_pki::generate_ca("10.152.183.1", now + left - mk8s_pki::CA_VALIDITY).unwrap();
        Ca::parse(&pem.cert_pem, &pem.key_pem).unwrap()
    }

    #[test]
    fn a_ca_near_its_end_does_not_make_renewals_loop() {
        let year = Duration::from_secs(365 * 86400);
        let server = "https://1.2.3.4:6443";
        let ca = ca_ending_in(Duration::from_secs(60));
        let now = SystemTime::now();
        let kc = render(&ca, server, now, year).unwrap();
        // The certificate ends with the CA: renewing could not extend it.
        assert_eq!(
            freshness(&kc, server, &ca, now),
            Freshness::Current {
                renew_at: ca.not_after()
            }
        );
        // Thirty days before its end: the certificate is capped at the CA's end, current.
        let ca = ca_ending_in(Duration::from_secs(30 * 86400));
        let kc = render(&ca, server, now, year).unwrap();
        assert!(
            matches!(freshness(&kc, server, &ca, now), Freshness::Current { renew_at } if renew_at == ca.not_after())
        );
        // A certificate made under a shorter validity than what is left is renewed at half life.
        let kc = render(&ca, server, now, Duration::from_secs(86400)).unwrap();
        assert!(matches!(
            freshness(&kc, server, &ca, now + Duration::from_secs(43_200)),
            Freshness::Stale(m) if m.contains("half")
        ));
    }

    #[test]
    fn an_expired_ca_signs_nothing_and_says_so() {
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        assert!(expired(&ca_ending_in(hour), "c-ca", now).is_none());
        let Some(c) = expired(&ca_ending_in(hour), "c-ca", now + 2 * hour) else {
            panic!("expired")
        };
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", CA_EXPIRED));
        assert!(
            c.message.contains("c-ca") && c.message.contains("expired at"),
            "{}",
            c.message
        );
    }

    #[test]
    fn reads_both_ca_layouts() {
        let (pem, _) = ca();
        let s = |a: &str, b: &str| Secret {
            data: Some(
                [
                    (a.to_string(), ByteString(pem.cert_pem.as_bytes().to_vec())),
                    (b.to_string(), ByteString(pem.key_pem.as_bytes().to_vec())),
                ]
                .into(),
            ),
            ..Default::default()
        };
        assert!(read_ca(&s("tls.crt", "tls.key")).is_ok());
        assert!(read_ca(&s("crt", "key")).is_ok());
        assert!(read_ca(&s("a", "b")).unwrap_err().contains("neither"));
        assert_eq!(server_url("fd00::1", 6443), "https://[fd00::1]:6443");
        assert_eq!(server_url("lb.example", 443), "https://lb.example:443");
    }
}
