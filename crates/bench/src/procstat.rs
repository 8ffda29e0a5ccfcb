//! Memory and CPU of processes, from `/proc`: RSS samples over time, the kernel's RSS high
//! water mark, and CPU seconds (user + system).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `VmRSS` in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    status_kib(pid, "VmRSS:").map(|k| k as f64 / 1024.0)
}

/// `VmHWM` (peak RSS) in MiB.
pub fn hwm_mib(pid: u32) -> Option<f64> {
    status_kib(pid, "VmHWM:").map(|k| k as f64 / 1024.0)
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// User + system CPU seconds of a process (its own threads).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the state (field 3), utime is field 14 and stime field 15 (1-based in proc(5)).
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// Total CPU seconds of the machine (all cores, busy time) from `/proc/stat`.
pub fn machine_busy_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<f64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7).unwrap_or(&0.0);
    Some(busy / clock_ticks())
}

/// `MemAvailable` of the machine in MiB.
pub fn mem_available_mib() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|k| k / 1024.0)
}

fn clock_ticks() -> f64 {
    #[allow(unsafe_code)]
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// One sample.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Seconds since the sampler started.
    pub t: f64,
    /// RSS in MiB.
    pub rss: f64,
    /// CPU seconds so far.
    pub cpu: f64,
}

/// Samples named processes every `period` on a thread of its own.
pub struct Sampler {
    samples: Arc<Mutex<BTreeMap<String, Vec<Sample>>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    started: Instant,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling `procs` (name, pid).
    pub fn start(procs: Vec<(String, u32)>, period: Duration) -> Sampler {
        let samples: Arc<Mutex<BTreeMap<String, Vec<Sample>>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let started = Instant::now();
        let handle = {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = started.elapsed().as_secs_f64();
                    if let Ok(mut s) = samples.lock() {
                        for (name, pid) in &procs {
                            if let (Some(rss), Some(cpu)) = (rss_mib(*pid), cpu_seconds(*pid)) {
                                s.entry(name.clone()).or_default().push(Sample { t, rss, cpu });
                            }
                        }
                    }
                    std::thread::sleep(period);
                }
            })
        };
        Sampler {
            samples,
            stop,
            started,
            handle: Some(handle),
        }
    }

    /// Seconds since the start (the time base of the samples).
    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Stops sampling and returns the samples by process name.
    pub fn finish(mut self) -> BTreeMap<String, Vec<Sample>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Mean RSS of the samples in `[from, to]`.
pub fn mean_rss(samples: &[Sample], from: f64, to: f64) -> Option<f64> {
    let v: Vec<f64> = samples
        .iter()
        .filter(|s| s.t >= from && s.t <= to)
        .map(|s| s.rss)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Largest RSS sample in `[from, to]`.
pub fn max_rss(samples: &[Sample], from: f64, to: f64) -> Option<f64> {
    samples
        .iter()
        .filter(|s| s.t >= from && s.t <= to)
        .map(|s| s.rss)
        .fold(None, |m, x| Some(m.map_or(x, |m: f64| m.max(x))))
}

/// CPU seconds used between `from` and `to` (nearest samples).
pub fn cpu_between(samples: &[Sample], from: f64, to: f64) -> Option<f64> {
    let at = |t: f64| {
        samples
            .iter()
            .min_by(|a, b| (a.t - t).abs().total_cmp(&(b.t - t).abs()))
            .map(|s| s.cpu)
    };
    Some(at(to)? - at(from)?)
}
