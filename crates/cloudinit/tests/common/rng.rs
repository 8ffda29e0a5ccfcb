//! A seeded generator of nasty inputs (no external crate: SplitMix64).

use mk8s_api::bootstrap::{CloudInitWriteFile, ClusterConfiguration, InitConfiguration, MicroK8sConfigSpec};
use mk8s_cloudinit::{CaFiles, Role};

pub struct Rng(u64);

/// Fragments that broke shell, YAML or Jinja quoting somewhere once.
pub const NASTY: &[&str] = &[
    "$HOME",
    "${HOME}",
    "$(touch \"$CAPI_ROOT/pwned\")",
    "`touch \"$CAPI_ROOT/pwned\"`",
    "'",
    "\"",
    "\\",
    "\\n",
    "\\\"",
    "'\\''",
    " ",
    "  ",
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    "{{ x }}",
    "{% raw %}",
    "{% endraw %}",
    "{%- endraw -%}",
    "{{ '{{' }}",
    "{# c #}",
    "{{{",
    "{",
    "}",
    "*",
    "?",
    "[a]",
    "{a: b}",
    ";",
    "&&",
    "||",
    "|",
    ">",
    "<",
    "#",
    " #c",
    ": ",
    ":",
    "- ",
    "---",
    "...",
    "yes",
    "no",
    "on",
    "0700",
    "0x1F",
    "1e3",
    "~",
    "null",
    "!tag",
    "&a",
    "*a",
    "%",
    "@",
    "`",
    ",",
    "=",
    "ü",
    "€",
    "😀",
    "\u{a0}",
    "-",
    "--x",
    "\t",
];

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// A string of nasty fragments and random characters; `newlines` allows line breaks
    /// and tabs.
    pub fn text(&mut self, newlines: bool) -> String {
        let mut s = String::new();
        for _ in 0..self.below(6) + 1 {
            match self.below(4) {
                0 | 1 => s.push_str(self.pick(NASTY)),
                2 => {
                    let c = char::from_u32(0x20 + self.below(0x5f) as u32).unwrap_or('x');
                    s.push(c);
                }
                _ => {
                    if newlines {
                        s.push_str(self.pick(&["\n", "\n\n", "\t", "\n  indented", "\r\n", " \n"]));
                    } else {
                        s.push_str(self.pick(&["a", "Z", "0", "-", "_", "/"]));
                    }
                }
            }
        }
        if !newlines {
            s.retain(|c| !c.is_control());
            if s.is_empty() {
                s.push('x');
            }
        }
        s
    }

    /// One word: no whitespace or control characters.
    pub fn word(&mut self) -> String {
        let mut w = self.text(false);
        w.retain(|c| !c.is_whitespace());
        if w.is_empty() {
            w.push('w');
        }
        w
    }

    /// Text without Jinja delimiters (for users' commands, which Jinja renders).
    pub fn jinja_free_text(&mut self, newlines: bool) -> String {
        let mut t = self.text(newlines);
        while mk8s_cloudinit::jinja::has_delimiter(&t) {
            t = t.replace("{{", "{ {").replace("{%", "{ %").replace("{#", "{ #");
        }
        t
    }

    fn list(&mut self, max: usize, mut item: impl FnMut(&mut Rng) -> String) -> Option<Vec<String>> {
        if self.chance(20) {
            return None;
        }
        Some((0..self.below(max + 1)).map(|_| item(self)).collect())
    }

    fn opt(&mut self, item: impl FnOnce(&mut Rng) -> String) -> Option<String> {
        match self.below(5) {
            0 => None,
            1 => Some(String::new()),
            _ => Some(item(self)),
        }
    }

    /// A spec that passes validation (nasty values only where the API allows them).
    pub fn valid_spec(&mut self) -> MicroK8sConfigSpec {
        MicroK8sConfigSpec {
            cluster_configuration: self.chance(70).then(|| ClusterConfiguration {
                port_compatibility_remap: self.chance(70).then(|| self.chance(50)),
                ..Default::default()
            }),
            init_configuration: self.chance(90).then(|| InitConfiguration {
                join_token_ttl_in_secs: self.chance(50).then(|| 1 + self.below(1_000_000_000) as i64),
                https_proxy: self.opt(|r| r.text(false)),
                http_proxy: self.opt(|r| r.text(false)),
                no_proxy: self.opt(|r| r.text(false)),
                addons: self.list(4, |r| r.text(false)),
                ip_in_ip: self.chance(50).then(|| self.chance(50)),
                confinement: self
                    .chance(60)
                    .then(|| self.pick(&["", "classic", "strict"]).to_string()),
                risk_level: self
                    .chance(60)
                    .then(|| self.pick(&["", "stable", "candidate", "beta", "edge"]).to_string()),
                disable_default_cni: self.chance(50).then(|| self.chance(50)),
                snapstore_proxy_scheme: self.chance(50).then(|| self.pick(&["", "http", "https"]).to_string()),
                snapstore_proxy_domain: self
                    .opt(|r| r.pick(&["store.example", "10.1.2.3:8080", "[fd00::5]:443"]).to_string()),
                snapstore_proxy_id: self.opt(|r| r.word()),
                snapstore_http_proxy: self.opt(|r| r.text(false)),
                snapstore_https_proxy: self.opt(|r| r.text(false)),
                extra_write_files: self.chance(70).then(|| {
                    (0..self.below(3))
                        .map(|_| CloudInitWriteFile {
                            content: self.text(true),
                            path: format!("/etc/{}.conf", self.text(false)),
                            permissions: self.pick(&["0644", "600", "0755", "1777", "0o640"]).to_string(),
                            owner: self.word(),
                        })
                        .collect()
                }),
                extra_kubelet_args: self.list(3, |r| r.jinja_free_text(false)),
                boot_commands: self.list(2, |r| r.jinja_free_text(true)),
                pre_run_commands: self.list(2, |r| r.jinja_free_text(true)),
                post_run_commands: self.list(2, |r| r.jinja_free_text(true)),
                snap_refresh_hold: self.opt(|r| r.pick(&["forever", "720h", "1h30m"]).to_string()),
                ..Default::default()
            }),
        }
    }

    pub fn valid_role(&mut self) -> Role {
        let addresses = |r: &mut Rng| {
            (0..r.below(3) + 1)
                .map(|_| {
                    r.pick(&["10.0.0.1", "fd00::1", "cp-0.example", "192.168.1.200", "[fd00::2]"])
                        .to_string()
                })
                .collect::<Vec<_>>()
        };
        match self.below(3) {
            0 => Role::Init {
                ca: CaFiles {
                    cert_pem: format!(
                        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                        self.text(true)
                    ),
                    key_pem: format!("x{}", self.text(true)),
                },
            },
            1 => Role::JoinControlPlane {
                join_addresses: addresses(self),
            },
            _ => Role::Worker {
                join_addresses: addresses(self),
            },
        }
    }
}
