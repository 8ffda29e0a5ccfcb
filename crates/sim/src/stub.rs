//! The stub commands a simulated node runs instead of the real ones: the `mk8s-sim` binary
//! under another name (symlinks in the simulator's stub directory, first in runcmd's
//! `PATH`). They run inside the node's namespaces and talk to the simulator through the
//! node's sockets:
//!
//! * `snap` is a client of the node's stub snapd (`/run/snapd.socket`), like the real
//!   `snap` CLI: `install`, `refresh` (`--hold[=D]`, `--unhold`, `--channel`), `list`,
//!   `info`, `set`, `get`, `restart`/`start`/`stop`, `ack`, `remove`, `version`, `changes`.
//!   Asynchronous changes are polled until done, as `snap` does.
//! * `microk8s`, `iptables`, `systemctl`, `curl` and `sleep` ask the simulator
//!   (`/run/mk8s-sim/sim.sock`, see `control`).

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use crate::control::{ExecRequest, ExecResponse};
use crate::httpx::{Response, unix_request};

/// Names the binary answers to as a stub.
pub const STUBS: [&str; 6] = ["snap", "microk8s", "systemctl", "iptables", "curl", "sleep"];

const CONTROL: &str = "/run/mk8s-sim/sim.sock";
const SNAPD: &str = "/run/snapd.socket";

fn socket(env: &str, default: &str) -> String {
    std::env::var(env)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// Runs stub `tool` with `args`.
pub fn run(tool: &str, args: &[String]) -> ExitCode {
    let code = match tool {
        "snap" => snap(args),
        _ => control(tool, args),
    };
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

fn eprint(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stderr().write_all(text.as_bytes());
}

fn print(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().write_all(text.as_bytes());
}

fn control(tool: &str, args: &[String]) -> i32 {
    let socket = socket("MK8S_SIM_CONTROL_SOCKET", CONTROL);
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/".into());
    let req = ExecRequest {
        tool: tool.to_string(),
        args: args.to_vec(),
        cwd,
    };
    let body = match serde_json::to_vec(&req) {
        Ok(b) => b,
        Err(e) => {
            eprint(&format!("mk8s-sim {tool}: {e}\n"));
            return 1;
        }
    };
    let resp = match unix_request(
        Path::new(&socket),
        "POST",
        "/v1/exec",
        Some(&body),
        &[("Content-Type", "application/json")],
    ) {
        Ok(r) => r,
        Err(e) => {
            eprint(&format!(
                "mk8s-sim {tool}: cannot reach the simulator at {socket} ({e}): not running on a simulated node?\n"
            ));
            return 1;
        }
    };
    let Ok(r) = serde_json::from_slice::<ExecResponse>(&resp.body) else {
        eprint(&format!(
            "mk8s-sim {tool}: bad answer from the simulator: {}\n",
            resp.text()
        ));
        return 1;
    };
    print(&r.stdout);
    eprint(&r.stderr);
    if let Some(secs) = r.sleep {
        if secs.is_finite() && secs > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(secs.min(1e7)));
        }
        return 0;
    }
    if let Some(argv) = r.exec
        && let Some((program, rest)) = argv.split_first()
    {
        let err = std::process::Command::new(program).args(rest).exec();
        eprint(&format!("mk8s-sim {tool}: cannot run {program}: {err}\n"));
        return 127;
    }
    r.code
}

fn snapd(method: &str, path: &str, body: Option<Value>) -> Result<(Response, Value), String> {
    let socket = socket("MK8S_SIM_SNAPD_SOCKET", SNAPD);
    let body = body.map(|b| b.to_string().into_bytes());
    let resp = unix_request(
        Path::new(&socket),
        method,
        path,
        body.as_deref(),
        &[("Content-Type", "application/json")],
    )
    .map_err(|e| format!("cannot communicate with server: {e}"))?;
    let value: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    Ok((resp, value))
}

fn message(v: &Value) -> String {
    v["result"]["message"].as_str().unwrap_or("unknown error").to_string()
}

/// Waits for an async change; `Ok` when done.
fn wait_change(v: &Value) -> Result<(), String> {
    let Some(id) = v["change"].as_str() else {
        return Ok(());
    };
    loop {
        let (_, c) = snapd("GET", &format!("/v2/changes/{id}"), None)?;
        match c["result"]["status"].as_str() {
            Some("Done") => return Ok(()),
            Some("Error") | Some("Undone") | Some("Hold") => {
                let err = c["result"]["err"].as_str().unwrap_or("the change failed").to_string();
                return Err(format!(
                    "cannot perform the following tasks:\n- {} ({err})",
                    c["result"]["summary"].as_str().unwrap_or("")
                ));
            }
            None => return Err(message(&c)),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Sends a request and waits for its change; prints snap-like errors.
fn snapd_do(method: &str, path: &str, body: Value) -> Result<Value, i32> {
    match snapd(method, path, Some(body)) {
        Err(e) => {
            eprint(&format!("error: {e}\n"));
            Err(1)
        }
        Ok((r, v)) if r.status >= 400 => {
            eprint(&format!("error: {}\n", message(&v)));
            Err(1)
        }
        Ok((_, v)) => match wait_change(&v) {
            Ok(()) => Ok(v),
            Err(e) => {
                eprint(&format!("error: {e}\n"));
                Err(1)
            }
        },
    }
}

struct Flags {
    channel: Option<String>,
    classic: bool,
    hold: Option<String>,
    unhold: bool,
    positional: Vec<String>,
}

fn parse_flags(args: &[String]) -> Result<Flags, String> {
    let mut f = Flags {
        channel: None,
        classic: false,
        hold: None,
        unhold: false,
        positional: vec![],
    };
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a.split_once('=') {
            Some(("--channel", v)) => f.channel = Some(v.to_string()),
            Some(("--hold", v)) => f.hold = Some(v.to_string()),
            Some((flag, _)) if flag.starts_with("--") => return Err(format!("unknown flag `{}'", &flag[2..])),
            _ => match a {
                "--channel" => {
                    i += 1;
                    f.channel = Some(args.get(i).cloned().ok_or("expected argument for flag `--channel'")?);
                }
                "--classic" => f.classic = true,
                "--hold" => f.hold = Some("forever".into()),
                "--unhold" => f.unhold = true,
                "--stable" | "--candidate" | "--beta" | "--edge" => f.channel = Some(a[2..].to_string()),
                "--no-wait" | "--devmode" | "--jailmode" | "--dangerous" | "--amend" => {}
                a if a.starts_with('-') => return Err(format!("unknown flag `{}'", a.trim_start_matches('-'))),
                a => f.positional.push(a.to_string()),
            },
        }
        i += 1;
    }
    Ok(f)
}

/// `snap refresh --hold=<D>`: `forever` or a duration such as `72h`, `30m` → RFC 3339.
fn hold_time(d: &str) -> Result<String, String> {
    if d == "forever" || d.is_empty() {
        return Ok("forever".into());
    }
    let (num, unit) = d.split_at(d.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(d.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration: {d}"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("invalid duration: {d}")),
    };
    let t = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(i64::try_from(secs).map_err(|_| "too long")?);
    Ok(t.to_string())
}

fn snap(args: &[String]) -> i32 {
    let Some((cmd, rest)) = args.split_first() else {
        print("The snap command lets you install, configure, refresh and remove snaps.\n");
        return 0;
    };
    let flags = match parse_flags(rest) {
        Ok(f) => f,
        Err(e) => {
            eprint(&format!("error: {e}\n"));
            return 1;
        }
    };
    let name = flags.positional.first().cloned().unwrap_or_default();
    match cmd.as_str() {
        "install" => {
            if name.is_empty() {
                eprint("error: the required argument `<snap> (at least 1 argument)` was not provided\n");
                return 1;
            }
            let mut body = json!({"action": "install", "classic": flags.classic});
            if let Some(c) = &flags.channel {
                body["channel"] = json!(c);
            }
            match snapd("POST", &format!("/v2/snaps/{name}"), Some(body)) {
                Err(e) => {
                    eprint(&format!("error: {e}\n"));
                    1
                }
                Ok((_, v)) if v["result"]["kind"] == "snap-already-installed" => {
                    print(&format!(
                        "snap \"{name}\" is already installed, see 'snap help refresh'\n"
                    ));
                    0
                }
                Ok((r, v)) if r.status >= 400 => {
                    eprint(&format!("error: {}\n", message(&v)));
                    1
                }
                Ok((_, v)) => match wait_change(&v) {
                    Ok(()) => {
                        let (_, info) = snapd("GET", &format!("/v2/snaps/{name}"), None).unwrap_or_default();
                        let r = &info["result"];
                        print(&format!(
                            "{name} ({}) {} from Canonical✓ installed\n",
                            r["channel"].as_str().unwrap_or(""),
                            r["version"].as_str().unwrap_or("")
                        ));
                        0
                    }
                    Err(e) => {
                        eprint(&format!("error: {e}\n"));
                        1
                    }
                },
            }
        }
        "refresh" => {
            if let Some(h) = &flags.hold {
                let time = match hold_time(h) {
                    Ok(t) => t,
                    Err(e) => {
                        eprint(&format!("error: {e}\n"));
                        return 1;
                    }
                };
                let names = if flags.positional.is_empty() {
                    vec!["microk8s".to_string()]
                } else {
                    flags.positional.clone()
                };
                for n in names {
                    if let Err(c) = snapd_do(
                        "POST",
                        &format!("/v2/snaps/{n}"),
                        json!({"action": "hold", "time": time, "hold-level": "general"}),
                    ) {
                        return c;
                    }
                    print(&format!(
                        "General refreshes of \"{n}\" held {}\n",
                        if time == "forever" {
                            "indefinitely".to_string()
                        } else {
                            format!("until {time}")
                        }
                    ));
                }
                return 0;
            }
            if flags.unhold {
                return match snapd_do("POST", &format!("/v2/snaps/{name}"), json!({"action": "unhold"})) {
                    Ok(_) => 0,
                    Err(c) => c,
                };
            }
            let mut body = json!({"action": "refresh", "classic": flags.classic});
            if let Some(c) = &flags.channel {
                body["channel"] = json!(c);
            }
            match snapd_do("POST", &format!("/v2/snaps/{name}"), body) {
                Ok(_) => {
                    print(&format!("{name} refreshed\n"));
                    0
                }
                Err(c) => c,
            }
        }
        "list" => match snapd("GET", "/v2/snaps", None) {
            Ok((_, v)) => {
                let snaps = v["result"].as_array().cloned().unwrap_or_default();
                let wanted: Vec<&Value> = snaps
                    .iter()
                    .filter(|s| flags.positional.is_empty() || flags.positional.iter().any(|p| s["name"] == *p))
                    .collect();
                if wanted.is_empty() {
                    eprint("error: no matching snaps installed\n");
                    return 1;
                }
                let mut text = String::from("Name      Version   Rev    Tracking       Publisher   Notes\n");
                for s in wanted {
                    text.push_str(&format!(
                        "{}  {}  {}  {}  canonical✓  {}\n",
                        s["name"].as_str().unwrap_or(""),
                        s["version"].as_str().unwrap_or(""),
                        s["revision"].as_str().unwrap_or(""),
                        s["tracking-channel"].as_str().unwrap_or(""),
                        s["confinement"].as_str().unwrap_or("")
                    ));
                }
                print(&text);
                0
            }
            Err(e) => {
                eprint(&format!("error: {e}\n"));
                1
            }
        },
        "info" => match snapd("GET", &format!("/v2/snaps/{name}"), None) {
            Ok((r, v)) if r.status < 400 => {
                let s = &v["result"];
                print(&format!(
                    "name:      {name}\ntracking:  {}\ninstalled: {} ({}) {}\n",
                    s["tracking-channel"].as_str().unwrap_or(""),
                    s["version"].as_str().unwrap_or(""),
                    s["revision"].as_str().unwrap_or(""),
                    s["confinement"].as_str().unwrap_or("")
                ));
                0
            }
            Ok((_, v)) => {
                eprint(&format!("error: {}\n", message(&v)));
                1
            }
            Err(e) => {
                eprint(&format!("error: {e}\n"));
                1
            }
        },
        "set" | "unset" => {
            let mut conf = serde_json::Map::new();
            for kv in flags.positional.iter().skip(1) {
                if cmd == "unset" {
                    conf.insert(kv.clone(), Value::Null);
                    continue;
                }
                let Some((k, v)) = kv.split_once('=') else {
                    eprint(&format!("error: invalid configuration: {kv:?} (want key=value)\n"));
                    return 1;
                };
                conf.insert(k.to_string(), json!(v));
            }
            match snapd_do("PUT", &format!("/v2/snaps/{name}/conf"), Value::Object(conf)) {
                Ok(_) => 0,
                Err(c) => c,
            }
        }
        "get" => match snapd("GET", &format!("/v2/snaps/{name}/conf"), None) {
            Ok((_, v)) => {
                let key = flags.positional.get(1);
                match key {
                    Some(k) => match v["result"][k].as_str() {
                        Some(val) => {
                            print(&format!("{val}\n"));
                            0
                        }
                        None => {
                            eprint(&format!("error: snap \"{name}\" has no \"{k}\" configuration option\n"));
                            1
                        }
                    },
                    None => {
                        print(&format!("{}\n", v["result"]));
                        0
                    }
                }
            }
            Err(e) => {
                eprint(&format!("error: {e}\n"));
                1
            }
        },
        "restart" | "start" | "stop" => {
            match snapd_do("POST", "/v2/apps", json!({"action": cmd, "names": flags.positional})) {
                Ok(_) => {
                    let verb = match cmd.as_str() {
                        "restart" => "Restarted",
                        "start" => "Started",
                        _ => "Stopped",
                    };
                    print(&format!("{verb}.\n"));
                    0
                }
                Err(c) => c,
            }
        }
        "ack" => {
            let mut data = Vec::new();
            let read = if name == "/dev/stdin" || name == "-" {
                std::io::stdin().read_to_end(&mut data).map(|_| ())
            } else {
                std::fs::read(&name).map(|d| data = d)
            };
            if let Err(e) = read {
                eprint(&format!("error: cannot read assertion input: {e}\n"));
                return 1;
            }
            let socket = socket("MK8S_SIM_SNAPD_SOCKET", SNAPD);
            match unix_request(Path::new(&socket), "POST", "/v2/assertions", Some(&data), &[]) {
                Ok(r) if r.status < 400 => 0,
                Ok(r) => {
                    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                    eprint(&format!("error: cannot assert: {}\n", message(&v)));
                    1
                }
                Err(e) => {
                    eprint(&format!("error: cannot communicate with server: {e}\n"));
                    1
                }
            }
        }
        "remove" => match snapd_do("POST", &format!("/v2/snaps/{name}"), json!({"action": "remove"})) {
            Ok(_) => {
                print(&format!("{name} removed\n"));
                0
            }
            Err(c) => c,
        },
        "version" => {
            print("snap    2.67.1+mk8s-sim\nsnapd   2.67.1+mk8s-sim\nseries  16\n");
            0
        }
        "changes" | "watch" | "wait" | "services" | "connections" | "connect" => 0,
        other => {
            eprint(&format!("error: unknown command \"{other}\", see 'snap help'.\n"));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_snap_flags() {
        let args: Vec<String> = ["microk8s", "--channel=1.33/stable", "--classic"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let f = parse_flags(&args).unwrap();
        assert_eq!(f.channel.as_deref(), Some("1.33/stable"));
        assert!(f.classic);
        assert_eq!(f.positional, ["microk8s"]);
        let f = parse_flags(&["--hold=720h".to_string(), "microk8s".to_string()]).unwrap();
        assert_eq!(f.hold.as_deref(), Some("720h"));
        assert!(parse_flags(&["--bogus".to_string()]).is_err());
        assert_eq!(hold_time("forever").unwrap(), "forever");
        assert!(hold_time("720h").unwrap().ends_with('Z'));
        assert!(hold_time("soon").is_err());
    }
}
