//! Scenario `takeover` (`make takeover`, after the synthetic e2e test): the drop-in promise
//! against Canonical's **running** managers. On a fresh plane with their CRDs (v1beta1
//! contract only), their managers provision a 3 + 2 cluster on the simulator; then the
//! README's cut-over — their managers stopped (their Deployments deleted), the
//! cluster-admin bindings their out-of-cluster run had removed (ours run with
//! `config/rbac/` only), our CRDs installed and their contract label dropped, our managers
//! started — and the checks of `mk8s_e2e::takeover`: no new Machines, no regenerated
//! bootstrap data, the cluster Secrets untouched, one init, the Cluster `Available`
//! throughout, a compliant kubeconfig; then a scale-up to 5 + 3 and a rolling upgrade to
//! v1.34 by ours. A failed check panics (the run's logs are kept).

use std::time::{Duration, Instant};

use mk8s_e2e::ManagerKind;
use mk8s_e2e::cluster::{self, Expect, Shape};
use mk8s_e2e::takeover::{self, AvailabilityWatch};
use serde_json::{Value, json};

use crate::available::objects_for;
use crate::env::{BenchEnv, EnvOptions, SimOptions};
use crate::theirs::{Provider, Theirs};

const NAME: &str = "tk";
const CONVERGE: Duration = Duration::from_secs(600);

fn sim(env: &BenchEnv) -> &mk8s_sim::SimHandle {
    env.sim.as_ref().expect("simulator")
}

/// Runs the takeover from `theirs`; its figures.
pub async fn run(theirs: &Theirs) -> Value {
    let kinds = [ManagerKind::Bootstrap, ManagerKind::ControlPlane];
    let provider = Provider::Theirs(theirs.clone());
    let mut env = BenchEnv::start(&EnvOptions {
        name: "takeover".into(),
        audit: false,
        capi: true,
        capi_args: vec![],
        sim: Some(SimOptions {
            light: false,
            boot_delay: Duration::ZERO,
            install_delay: Duration::ZERO,
            concurrency: 16,
        }),
        provider: provider.clone(),
        managers: kinds.to_vec(),
        manager_args: vec![],
    })
    .await;
    // Kept if a check fails (the panic skips the removal).
    eprintln!("bench: takeover: logs in {}", env.dir.display());
    let client = env.client.clone();
    let ns = env.plane().namespace("takeover").await.expect("namespace");
    let expect = Expect {
        control_planes: 3,
        workers: 2,
    };

    // Theirs provision the cluster.
    let t = Instant::now();
    cluster::apply(&client, &ns, &objects_for(&Shape::new(NAME, 3, 2), &provider)).await;
    cluster::wait_converged_on(sim(&env), &client, &ns, NAME, expect, CONVERGE).await;
    let provisioned = t.elapsed();
    eprintln!(
        "bench: takeover: {} provisioned 3 + 2 in {provisioned:.1?}",
        theirs.version
    );

    // Cut-over.
    env.stop_managers();
    for kind in kinds {
        crate::theirs::revoke_admin(&client, kind.service_account()).await;
    }
    let available = AvailabilityWatch::start(client.clone(), &ns, NAME);
    let before = takeover::snapshot(sim(&env), &client, &ns, NAME).await;
    let t = Instant::now();
    takeover::install_our_crds(env.plane(), &client).await;
    env.start_managers(&Provider::Ours, &kinds, &[]).await;
    takeover::wait_taken_over(&client, &ns, NAME, CONVERGE).await;
    let taken_over = t.elapsed();
    cluster::wait_converged_on(sim(&env), &client, &ns, NAME, expect, CONVERGE).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = takeover::snapshot(sim(&env), &client, &ns, NAME).await;
    let flaps = available.stop();
    assert!(
        flaps.is_empty(),
        "the Cluster stays Available throughout the cut-over: {flaps:?}"
    );
    takeover::assert_unchanged(&before, &after);
    takeover::check_kubeconfig(&client, &ns, NAME, 5).await;
    eprintln!("bench: takeover: ours took over in {taken_over:.1?}, nothing replaced or regenerated");

    let then = takeover::scale_up_and_upgrade(sim(&env), &client, &ns, NAME, CONVERGE).await;
    eprintln!(
        "bench: takeover: then ours scaled up to 5 + 3 in {:.1?} and upgraded to v1.34 in {:.1?}",
        then.scale_up, then.upgrade
    );
    env.stop().await;
    json!({
        "ran": true,
        "theirs": theirs.version,
        "shape": "3 CP + 2 workers",
        "provisioned_by_theirs_s": provisioned.as_secs_f64(),
        "taken_over_s": taken_over.as_secs_f64(),
        "available_throughout": true,
        "unchanged": {
            "machines": before.machines.len(),
            "bootstrap_data_secrets": before.data_secrets.len(),
            "cluster_secrets": before.cluster_secrets.len(),
            "inits": after.inits,
        },
        "kubeconfig_compliant": true,
        "scale_up_to_5cp_3w_s": then.scale_up.as_secs_f64(),
        "rolling_upgrade_to_v1_34_s": then.upgrade.as_secs_f64(),
    })
}

/// The table's lines for a takeover result.
pub fn report(r: &Value) -> String {
    if r["ran"] != true {
        return format!(
            "\nTakeover from Canonical's running managers: not run — {}.\n",
            r["why"]
                .as_str()
                .unwrap_or("no result")
                .replace('\n', " ")
                .trim_end_matches('.')
        );
    }
    format!(
        "\nTakeover from {}, {}: provisioned by theirs in {:.1} s; ours took over in {:.1} s — \
         no new Machines ({}), no regenerated bootstrap data ({} Secrets), cluster Secrets untouched \
         ({}), {} init, Available throughout, kubeconfig compliant; then scale-up to 5 CP + 3 workers \
         in {:.1} s and a rolling upgrade to v1.34 in {:.1} s.\n",
        r["theirs"].as_str().unwrap_or_default(),
        r["shape"].as_str().unwrap_or_default(),
        r["provisioned_by_theirs_s"].as_f64().unwrap_or(0.0),
        r["taken_over_s"].as_f64().unwrap_or(0.0),
        r["unchanged"]["machines"],
        r["unchanged"]["bootstrap_data_secrets"],
        r["unchanged"]["cluster_secrets"],
        r["unchanged"]["inits"],
        r["scale_up_to_5cp_3w_s"].as_f64().unwrap_or(0.0),
        r["rolling_upgrade_to_v1_34_s"].as_f64().unwrap_or(0.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_takeover_that_could_not_run_says_why() {
        let r = json!({"ran": false, "why": "hack/build-canonical.sh failed: go get …\n403 Forbidden."});
        assert_eq!(
            report(&r),
            "\nTakeover from Canonical's running managers: not run — hack/build-canonical.sh failed: go get … 403 Forbidden.\n"
        );
    }

    #[test]
    fn a_takeover_result_reads_as_a_sentence() {
        let r = json!({"ran": true, "theirs": "v0.6.11", "shape": "3 CP + 2 workers",
            "provisioned_by_theirs_s": 40.04, "taken_over_s": 3.24,
            "unchanged": {"machines": 5, "bootstrap_data_secrets": 5, "cluster_secrets": 3, "inits": 1},
            "scale_up_to_5cp_3w_s": 30.0, "rolling_upgrade_to_v1_34_s": 90.54});
        let s = report(&r);
        assert!(
            s.contains("Takeover from v0.6.11, 3 CP + 2 workers: provisioned by theirs in 40.0 s"),
            "{s}"
        );
        assert!(s.contains("ours took over in 3.2 s"), "{s}");
        assert!(
            s.contains("no new Machines (5), no regenerated bootstrap data (5 Secrets)"),
            "{s}"
        );
        assert!(s.contains("1 init"), "{s}");
        assert!(s.contains("rolling upgrade to v1.34 in 90.5 s"), "{s}");
    }
}
