//! Runs a rendered document the way cloud-init would, against stub tools: Jinja rendering
//! and YAML parsing by cloud-init itself (when installed), `write_files` under a scratch
//! root, `runcmd` assembled like cloud-init's `shellify` and run by `/bin/sh` with
//! `CAPI_ROOT` pointing at the scratch root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use super::*;

pub const STUBS: &[&str] = &["snap", "microk8s", "systemctl", "iptables", "curl", "hostname", "sleep"];

/// A scratch machine.
pub struct Machine {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub log: PathBuf,
    stubs: PathBuf,
}

/// What running runcmd did.
pub struct Run {
    pub status: i32,
    pub output: String,
    pub calls: Vec<Vec<String>>,
}

impl Run {
    /// Calls of `tool` whose arguments start with `prefix`.
    pub fn calls_of(&self, tool: &str, prefix: &[&str]) -> Vec<&Vec<String>> {
        self.calls
            .iter()
            .filter(|c| {
                c[0] == tool && c.len() > prefix.len() && c[1..=prefix.len()].iter().zip(prefix).all(|(a, b)| a == b)
            })
            .collect()
    }

    /// Index of the first call equal to `call` (tool and all arguments).
    pub fn position(&self, call: &[&str]) -> Option<usize> {
        self.calls
            .iter()
            .position(|c| c.iter().map(String::as_str).eq(call.iter().copied()))
    }

    /// Asserts the call was made.
    pub fn assert_called(&self, call: &[&str]) -> usize {
        self.position(call)
            .unwrap_or_else(|| panic!("no call {call:?} in:\n{}\n--- output:\n{}", self.dump(), self.output))
    }

    pub fn dump(&self) -> String {
        self.calls
            .iter()
            .map(|c| format!("{c:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Machine {
    pub fn new(test: &str) -> Machine {
        let dir = std::env::temp_dir().join(format!(
            "mk8s-cloudinit-{test}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        let log = dir.join("log");
        let stubs = dir.join("stubs");
        for d in [&root, &log, &stubs] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let stub = include_str!("stub.sh");
        for name in STUBS {
            let path = stubs.join(name);
            std::fs::write(&path, stub).expect("stub");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        Machine { dir, root, log, stubs }
    }

    /// Where the stubs keep what they record.
    pub fn log_dir(&self) -> &Path {
        &self.log
    }

    /// Path of a node path in the scratch root.
    pub fn path(&self, node_path: &str) -> PathBuf {
        self.root.join(node_path.trim_start_matches('/'))
    }

    pub fn read(&self, node_path: &str) -> String {
        std::fs::read_to_string(self.path(node_path)).unwrap_or_else(|e| panic!("{node_path}: {e}"))
    }

    pub fn exists(&self, node_path: &str) -> bool {
        self.path(node_path).exists()
    }

    /// As if the image had MicroK8s preinstalled.
    pub fn preinstall(&self) {
        let log = self.dir.join("preinstall-log");
        std::fs::create_dir_all(&log).expect("mkdir");
        let status = Command::new(self.stubs.join("snap"))
            .arg("install")
            .env("CAPI_ROOT", &self.root)
            .env("STUB_LOG", &log)
            .status()
            .expect("stub");
        assert!(status.success(), "preinstall failed");
    }

    /// Boots the machine with `document`: renders it like cloud-init, writes the files and
    /// runs runcmd. `fail`: make every stub call containing this text fail.
    pub fn boot(&self, document: &str, fail: Option<&str>) -> Run {
        let config = cloud_init_view(document);
        self.write_files(&config);
        let script = self.shellify(&config);
        let script_path = self.dir.join("runcmd");
        std::fs::write(&script_path, &script).expect("runcmd");
        let out = Command::new("/bin/sh")
            .arg(&script_path)
            .env_clear()
            .env(
                "PATH",
                format!("{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", self.stubs.display()),
            )
            .env("CAPI_ROOT", &self.root)
            .env("STUB_LOG", &self.log)
            .env("STUB_FAIL", fail.unwrap_or(""))
            .env("LANG", "C.UTF-8")
            .output()
            .expect("/bin/sh");
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Run {
            status: out.status.code().unwrap_or(-1),
            output,
            calls: self.calls(),
        }
    }

    fn write_files(&self, config: &Value) {
        for f in config["write_files"].as_array().expect("write_files") {
            let path = self.path(f["path"].as_str().expect("path"));
            write(&path, f["content"].as_str().expect("content"));
            let mode = u32::from_str_radix(f["permissions"].as_str().expect("permissions"), 8).expect("octal");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
    }

    /// cloud-init's `util.shellify`: list entries become single-quoted words, strings are
    /// copied as they are. Paths of our scripts are moved under the scratch root.
    fn shellify(&self, config: &Value) -> String {
        let mut script = String::from("#!/bin/sh\n");
        let scripts_dir = format!("{}/", mk8s_cloudinit::paths::SCRIPTS_DIR);
        for entry in config["runcmd"].as_array().expect("runcmd") {
            match entry {
                Value::String(s) => script.push_str(s),
                Value::Array(args) => {
                    let words: Vec<String> = args
                        .iter()
                        .map(|a| {
                            let a = a.as_str().expect("string");
                            let a = match a.strip_prefix(&scripts_dir) {
                                Some(rest) => format!("{}{scripts_dir}{rest}", self.root.display()),
                                None => a.to_string(),
                            };
                            format!("'{}'", a.replace('\'', "'\\''"))
                        })
                        .collect();
                    script.push_str(&words.join(" "));
                }
                other => panic!("bad runcmd entry {other}"),
            }
            script.push('\n');
        }
        script
    }

    fn calls(&self) -> Vec<Vec<String>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.log)
            .expect("log")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            })
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| {
                let raw = std::fs::read(p).expect("call");
                let mut fields: Vec<String> = raw
                    .split(|b| *b == 0)
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect();
                fields.pop(); // after the last NUL
                fields
            })
            .collect()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_MACHINES").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The document as cloud-init sees it after Jinja rendering: through cloud-init itself when
/// installed, else through this crate's model of it ([`mk8s_cloudinit::jinja::unescape`]).
pub fn cloud_init_view(document: &str) -> Value {
    if has_cloud_init_python() {
        let mut out = cloud_init_render(&[document.to_string()]);
        out.pop().expect("one document").1
    } else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "!!!!!!!! cloud-init is not installed: Jinja is modelled, not run !!!!!!!!"
        );
        parse(&mk8s_cloudinit::jinja::unescape(document))
    }
}

/// Whether the shells the node uses exist.
pub fn have_shells() -> bool {
    require("/bin/sh", &["-c", "true"]) && require("bash", &["-c", "true"])
}

pub fn node_path_under(root: &Path, node_path: &str) -> PathBuf {
    root.join(node_path.trim_start_matches('/'))
}
