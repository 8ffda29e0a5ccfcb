//! `mk8s-controlplane`: the MicroK8s CAPI control plane manager.

use std::process::ExitCode;

use clap::Parser;
use mk8s_controlplane::config::{ControlPlaneFlags, ControllerConfig};
use mk8s_runtime::ManagerFlags;

/// The MicroK8s Cluster API control plane provider (MicroK8sControlPlane controller).
#[derive(Parser)]
#[command(name = "mk8s-controlplane", version, about)]
struct Cli {
    #[command(flatten)]
    manager: ManagerFlags,
    #[command(flatten)]
    control_plane: ControlPlaneFlags,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = ControllerConfig::from(&cli.control_plane);
    match mk8s_runtime::run(cli.manager, mk8s_controlplane::DEFAULTS, |rt| {
        mk8s_controlplane::run_controller(rt, cfg)
    })
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mk8s-controlplane: {e}");
            ExitCode::FAILURE
        }
    }
}
