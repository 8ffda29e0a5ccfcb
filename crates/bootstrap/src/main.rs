//! `mk8s-bootstrap`: the MicroK8s bootstrap provider's manager, and its offline `render`
//! command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mk8s_bootstrap::render::{self, RenderArgs};
use mk8s_runtime::ManagerFlags;

#[derive(Parser, Debug)]
#[command(name = "mk8s-bootstrap", version, about = "MicroK8s Cluster API bootstrap provider")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    flags: ManagerFlags,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print, offline, the cloud-config a node would get (see `render --help`).
    Render(RenderArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Render(args)) = &cli.command {
        return match render::run(args) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("render: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(mk8s_runtime::run(cli.flags, mk8s_bootstrap::DEFAULTS, |rt| {
        mk8s_bootstrap::controller::run(rt)
    }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "manager stopped");
            eprintln!("mk8s-bootstrap: {e}");
            ExitCode::FAILURE
        }
    }
}
