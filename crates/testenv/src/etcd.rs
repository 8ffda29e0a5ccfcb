//! A standalone etcd (outside a [`crate::Plane`]), e.g. for the machine simulator's workload
//! apiservers.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use crate::Result;
use crate::plane::{WaitError, etcd_healthy, run_isolated, start_error, start_timeout, wait_ready};
use crate::process::{self, ManagedProcess, io_err, session};

/// A running etcd on loopback, data on tmpfs when `/dev/shm` exists. Dropping it kills the
/// process (SIGKILL, then waits) and removes its directories.
pub struct EtcdServer {
    url: String,
    dir: PathBuf,
    data_dir: PathBuf,
    process: ManagedProcess,
}

impl std::fmt::Debug for EtcdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdServer")
            .field("url", &self.url)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl EtcdServer {
    /// Starts the etcd binary at `bin` on free loopback ports and waits until it is healthy.
    /// The work runs on its own thread and runtime (like [`crate::Plane`]'s).
    pub async fn start(bin: &Path) -> Result<EtcdServer> {
        let bin = bin.to_path_buf();
        run_isolated("mk8s-testenv-etcd", move || start_etcd(bin)).await
    }

    /// `http://127.0.0.1:<port>`, for `--etcd-servers`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Its directory (log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.process.stop();
        process::remove_dir(&self.dir);
        process::remove_dir(&self.data_dir);
    }
}

async fn start_etcd(bin: PathBuf) -> Result<EtcdServer> {
    let session = session()?;
    let id = session.next_id();
    let dir = session.new_dir(&format!("etcd-{id}"))?;
    let data_dir = session.new_shm_dir(&format!("etcd-{id}-data"))?;
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut last = None;
    for _ in 0..3 {
        let client_port = process::free_port(lo)?;
        let peer_port = process::free_port(lo)?;
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir).map_err(io_err(format!("creating {}", data_dir.display())))?;
        let c = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let args = vec![
            "--name=default".to_string(),
            format!("--data-dir={}", data_dir.display()),
            format!("--listen-client-urls={c}"),
            format!("--advertise-client-urls={c}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=default={peer}"),
            "--initial-cluster-state=new".into(),
            "--unsafe-no-fsync=true".into(),
            "--quota-backend-bytes=4294967296".into(),
            "--log-level=warn".into(),
        ];
        let log = dir.join("etcd.log");
        let mut p = ManagedProcess::spawn("etcd", &bin, &args, &log)?;
        match wait_ready(&mut p, start_timeout(), || etcd_healthy(client_port)).await {
            Ok(()) => {
                return Ok(EtcdServer {
                    url: c,
                    dir,
                    data_dir,
                    process: p,
                });
            }
            Err(WaitError::Died(status)) => {
                let err = start_error(&p, &dir, format!("exited with {status}"));
                if !process::died_of_port_clash(&log) {
                    return Err(err);
                }
                last = Some(err);
            }
            Err(WaitError::Timeout) => {
                return Err(start_error(
                    &p,
                    &dir,
                    format!("/health not true after {:?}", start_timeout()),
                ));
            }
        }
    }
    Err(last.unwrap_or_else(|| crate::Error::Other("etcd: no attempt made".into())))
}
