//! Child processes: one long-lived spawner thread, pid files, the session directory and the
//! janitor that cleans up after the test process.
//!
//! * **Spawner thread.** `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
//!   not when the process does. `#[tokio::test]` runs each test on its own thread (and a
//!   runtime's worker threads come and go), so every child is forked from one dedicated
//!   thread that never exits: the children get `SIGKILL` exactly when the test process dies.
//! * **Session directory** `$TESTENV_RUN_DIR/s-<pid>-<starttime>` (default run dir
//!   `/tmp/mk8s-testenv`): one per test process, holding the planes' certificates, logs and
//!   kubeconfigs, and `pids/*.pid` (`pid=`, `start=` (field 22 of `/proc/<pid>/stat`), `exe=`,
//!   `name=`) for every child. etcd data goes to `/dev/shm/mk8s-testenv/s-<pid>-<starttime>`
//!   when `/dev/shm` exists (recorded in `shm-dir`).
//! * **Janitor.** A `bash` running `hack/sweep-testenv.sh --janitor <session>` (embedded at
//!   build time) with its stdin on a pipe this process holds open. When the test process exits,
//!   however it exits, the pipe closes; the janitor then kills what the pid files list (after
//!   checking pid and start time) and removes the session and tmpfs directories.
//!   `TESTENV_KEEP=1` keeps the directories (for debugging; `hack/sweep-testenv.sh` removes
//!   them later).

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use crate::{Error, Result};

/// `hack/sweep-testenv.sh`, run in `--janitor` mode for each session.
const SWEEP_SCRIPT: &str = include_str!("../../../hack/sweep-testenv.sh");

type Job = Box<dyn FnOnce() + Send>;

fn spawner() -> &'static mpsc::Sender<Job> {
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("mk8s-testenv-spawner".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
                // The sender lives in a static and is never dropped, so this is unreachable;
                // if it ever happens, the thread must still not exit (its exit would kill the
                // children through PR_SET_PDEATHSIG).
                loop {
                    std::thread::park();
                }
            })
            .expect("cannot start the mk8s-testenv spawner thread");
        tx
    })
}

/// Spawns `cmd` on the spawner thread with `PR_SET_PDEATHSIG = SIGKILL`.
fn spawn_child(mut cmd: Command) -> io::Result<Child> {
    let (tx, rx) = mpsc::channel();
    let job: Job = Box::new(move || {
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and only calls the
        // async-signal-safe `prctl` and `getppid`; it allocates nothing on the success path.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl.
                if libc::getppid() as u32 != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let _ = tx.send(cmd.spawn());
    });
    spawner()
        .send(job)
        .map_err(|_| io::Error::other("the mk8s-testenv spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("the mk8s-testenv spawner thread did not answer"))?
}

/// Spawns `cmd` from the harness' long-lived spawner thread with
/// `PR_SET_PDEATHSIG = SIGKILL`, so the child dies when this process dies (whichever thread
/// asked for it). The caller keeps full control of the command (environment, working
/// directory, process group, stdio) and owns the returned [`Child`]: nothing else tracks it.
pub fn spawn_with_pdeathsig(cmd: Command) -> io::Result<Child> {
    spawn_child(cmd)
}

/// Field 22 (`starttime`, clock ticks after boot) of `/proc/<pid>/stat`.
pub(crate) fn proc_start_time(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ...`: comm may contain spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19).map(str::to_string)
}

/// The per-test-process session (see the module docs).
pub(crate) struct Session {
    /// `$TESTENV_RUN_DIR/s-<pid>-<start>`.
    pub(crate) dir: PathBuf,
    /// tmpfs directory for etcd data (or `<dir>/data`).
    pub(crate) shm_dir: PathBuf,
    /// Whether to keep directories (`TESTENV_KEEP=1`).
    pub(crate) keep: bool,
    counter: AtomicU64,
    /// Write end of the janitor's stdin; closing it (at process exit) starts the cleanup.
    _janitor_stdin: Mutex<Option<ChildStdin>>,
}

impl Session {
    /// A number unique within this test process (for directory names, etcd prefixes).
    pub(crate) fn next_id(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// Creates `<session>/<name>` (fresh).
    pub(crate) fn new_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.dir.join(name);
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        Ok(dir)
    }

    /// Creates `<shm>/<name>` (fresh).
    pub(crate) fn new_shm_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.shm_dir.join(name);
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        Ok(dir)
    }
}

pub(crate) fn io_err(context: String) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io { context, source }
}

/// The session of this test process, created (with its janitor) on first use.
pub(crate) fn session() -> Result<&'static Session> {
    static SESSION: OnceLock<std::result::Result<Session, String>> = OnceLock::new();
    SESSION
        .get_or_init(|| create_session().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::Other(format!("cannot create the mk8s-testenv session: {e}")))
}

#[cfg(test)]
/// Process state letter (field 3 of `/proc/<pid>/stat`), e.g. `R`, `S`, `Z`.
pub(crate) fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

#[cfg(test)]
/// Whether `pid` is a live (non-zombie) process that started at `start`.
pub(crate) fn alive(pid: u32, start: &str) -> bool {
    proc_start_time(pid).as_deref() == Some(start) && proc_state(pid) != Some('Z')
}

/// `$TESTENV_RUN_DIR`, default `/tmp/mk8s-testenv`.
pub fn run_dir() -> PathBuf {
    std::env::var_os("TESTENV_RUN_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/tmp/mk8s-testenv"), PathBuf::from)
}

fn create_session() -> Result<Session> {
    let pid = std::process::id();
    let start = proc_start_time(pid).unwrap_or_else(|| "0".into());
    let name = format!("s-{pid}-{start}");
    let dir = run_dir().join(&name);
    fs::create_dir_all(dir.join("pids")).map_err(io_err(format!("creating {}", dir.display())))?;
    fs::write(dir.join("owner"), format!("pid={pid}\nstart={start}\n"))
        .map_err(io_err(format!("writing {}/owner", dir.display())))?;
    let shm_root = Path::new("/dev/shm");
    let shm_dir = if shm_root.is_dir() && fs::create_dir_all(shm_root.join("mk8s-testenv")).is_ok() {
        shm_root.join("mk8s-testenv").join(&name)
    } else {
        dir.join("data")
    };
    fs::create_dir_all(&shm_dir).map_err(io_err(format!("creating {}", shm_dir.display())))?;
    fs::write(dir.join("shm-dir"), format!("{}\n", shm_dir.display()))
        .map_err(io_err(format!("writing {}/shm-dir", dir.display())))?;
    let keep = std::env::var("TESTENV_KEEP").is_ok_and(|v| v == "1" || v == "true");

    // The janitor: not a child of the spawner thread (it must outlive us), in its own process
    // group (a terminal's Ctrl-C must not kill it before it cleans up).
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(SWEEP_SCRIPT)
        .arg("sweep-testenv")
        .arg("--janitor")
        .arg(&dir);
    if keep {
        cmd.arg("--keep");
    }
    cmd.env("TESTENV_RUN_DIR", run_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut janitor = cmd.spawn().map_err(io_err("starting the janitor (bash)".into()))?;
    let stdin = janitor.stdin.take();
    // The janitor is never waited for: it outlives this process by design.
    drop(janitor);

    Ok(Session {
        dir,
        shm_dir,
        keep,
        counter: AtomicU64::new(0),
        _janitor_stdin: Mutex::new(stdin),
    })
}

/// A child process killed (SIGKILL) and reaped on drop, with a pid file in the session.
pub(crate) struct ManagedProcess {
    pub(crate) name: String,
    child: Child,
    pid_file: PathBuf,
    pub(crate) log: PathBuf,
}

impl ManagedProcess {
    /// Starts `bin args...` with stdout and stderr to `log`, from the spawner thread.
    pub(crate) fn spawn(name: &str, bin: &Path, args: &[String], log: &Path) -> Result<Self> {
        let session = session()?;
        let out = fs::File::create(log).map_err(io_err(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err(format!("duplicating {}", log.display())))?;
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = spawn_child(cmd).map_err(io_err(format!("starting {}", bin.display())))?;
        let pid = child.id();
        let pid_file = session.dir.join("pids").join(format!("{name}-{pid}.pid"));
        let start = proc_start_time(pid).unwrap_or_default();
        let write = fs::File::create(&pid_file)
            .and_then(|mut f| writeln!(f, "pid={pid}\nstart={start}\nexe={}\nname={name}", bin.display()));
        let mut p = ManagedProcess {
            name: name.to_string(),
            child,
            pid_file,
            log: log.to_path_buf(),
        };
        if let Err(e) = write {
            p.stop();
            return Err(Error::Io {
                context: format!("writing {}", p.pid_file.display()),
                source: e,
            });
        }
        Ok(p)
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` if the process has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills (SIGKILL), reaps and removes the pid file. Idempotent.
    pub(crate) fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = fs::remove_file(&self.pid_file);
    }

    /// The last `lines` lines of the log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of a file (lossy UTF-8, at most 64 KiB read).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(bytes) = fs::read(path) else {
        return format!("<cannot read {}>", path.display());
    };
    let start = bytes.len().saturating_sub(64 * 1024);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A free TCP port on `addr` (bound, then released; the caller binds it soon after).
pub(crate) fn free_port(addr: std::net::IpAddr) -> Result<u16> {
    let l = std::net::TcpListener::bind((addr, 0)).map_err(io_err(format!("finding a free port on {addr}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(io_err("reading a bound address".into()))
}

/// Whether the log of a process that died says its port was taken (worth a retry).
pub(crate) fn died_of_port_clash(log: &Path) -> bool {
    let tail = log_tail(log, 50);
    tail.contains("address already in use") || tail.contains("bind: address")
}

/// Removes a directory tree unless the session keeps directories.
pub(crate) fn remove_dir(dir: &Path) {
    if let Ok(s) = session()
        && s.keep
    {
        return;
    }
    let _ = fs::remove_dir_all(dir);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn start_time_of_self_is_known() {
        let t = proc_start_time(std::process::id()).unwrap();
        assert!(t.parse::<u64>().is_ok(), "{t}");
        assert!(proc_start_time(u32::MAX).is_none());
    }

    #[test]
    fn children_get_a_pid_file_and_are_stopped() {
        let s = session().unwrap();
        let log = s.dir.join("sleep-test.log");
        let mut p = ManagedProcess::spawn("sleep-test", Path::new("/bin/sleep"), &["30".to_string()], &log).unwrap();
        let pid = p.pid();
        let pid_file = s.dir.join("pids").join(format!("sleep-test-{pid}.pid"));
        let text = fs::read_to_string(&pid_file).unwrap();
        assert!(text.contains(&format!("pid={pid}\n")), "{text}");
        assert!(
            text.contains(&format!("start={}\n", proc_start_time(pid).unwrap())),
            "{text}"
        );
        assert!(p.exited().is_none());
        p.stop();
        assert!(!pid_file.exists());
        assert!(p.exited().is_some() || proc_start_time(pid).is_none());
    }

    const HELPER_ENV: &str = "MK8S_TESTENV_PDEATHSIG_HELPER";

    /// Run in a child test process by `children_die_with_the_process_not_the_thread`.
    #[test]
    fn pdeathsig_helper() {
        let Some(out) = std::env::var_os(HELPER_ENV) else {
            return;
        };
        let s = session().unwrap();
        let log = s.dir.join("helper-sleep.log");
        // Spawn from a short-lived thread, which then exits.
        let pid = std::thread::spawn(move || {
            let p = ManagedProcess::spawn("helper-sleep", Path::new("/bin/sleep"), &["60".into()], &log).unwrap();
            let pid = p.pid();
            std::mem::forget(p); // no kill on drop: only the death signal may end it
            pid
        })
        .join()
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let start = proc_start_time(pid).unwrap();
        let alive_after_thread_exit = alive(pid, &start);
        fs::write(
            &out,
            format!(
                "pid={pid}\nstart={start}\nalive={alive_after_thread_exit}\nsession={}\n",
                s.dir.display()
            ),
        )
        .unwrap();
    }

    #[test]
    fn children_die_with_the_process_not_the_thread() {
        let out = std::env::temp_dir().join(format!("mk8s-testenv-helper-{}", std::process::id()));
        let status = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "process::tests::pdeathsig_helper", "--nocapture", "-q"])
            .env(HELPER_ENV, &out)
            .env_remove("TESTENV_KEEP")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let text = fs::read_to_string(&out).unwrap();
        let _ = fs::remove_file(&out);
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap()
                .to_string()
        };
        let pid: u32 = field("pid").parse().unwrap();
        let start = field("start");
        assert_eq!(field("alive"), "true", "the child died with its spawning thread");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while alive(pid, &start) {
            assert!(
                std::time::Instant::now() < deadline,
                "child {pid} survived its test process"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // The janitor removes the helper's session directory.
        let session = PathBuf::from(field("session"));
        while session.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the janitor did not remove {}",
                session.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
