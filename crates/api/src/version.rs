//! Kubernetes versions as CAPI writes them (`v1.33.4`, `1.33.4`, `v1.34.0-rc.1+build`).
//!
//! MicroK8s installs the newest patch of a `<major>.<minor>` snap track, so most decisions
//! use only the [`Track`].

use std::fmt;

/// A parsed semantic version.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KubeVersion {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
    /// Pre-release identifiers (after `-`), empty if none.
    pub pre: String,
    /// Build metadata (after `+`), empty if none.
    pub build: String,
}

/// `<major>.<minor>`: a MicroK8s snap track.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Track {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
}

impl fmt::Display for Track {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Why a version string is not a semantic version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kubernetes version {input:?} is not a semantic version (MAJOR.MINOR.PATCH, optional leading v): {reason}")]
pub struct VersionError {
    /// The rejected input.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn numeric(part: &str) -> Option<u64> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) || (part.len() > 1 && part.starts_with('0')) {
        return None;
    }
    part.parse().ok()
}

fn valid_identifiers(s: &str) -> bool {
    s.split('.')
        .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

impl KubeVersion {
    /// Parses `[v]MAJOR.MINOR.PATCH[-pre][+build]`.
    pub fn parse(input: &str) -> Result<KubeVersion, VersionError> {
        let err = |reason| VersionError {
            input: input.to_string(),
            reason,
        };
        let s = input.strip_prefix('v').unwrap_or(input);
        let (s, build) = match s.split_once('+') {
            Some((a, b)) => (a, b),
            None => (s, ""),
        };
        let (core, pre) = match s.split_once('-') {
            Some((a, b)) => (a, b),
            None => (s, ""),
        };
        let mut parts = core.split('.');
        let (Some(ma), Some(mi), Some(pa), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(err("expected three dot-separated numbers"));
        };
        let (Some(major), Some(minor), Some(patch)) = (numeric(ma), numeric(mi), numeric(pa)) else {
            return Err(err("major, minor and patch must be numbers without leading zeros"));
        };
        if (!pre.is_empty() || s.ends_with('-')) && !valid_identifiers(pre) {
            return Err(err("invalid pre-release"));
        }
        if (!build.is_empty() || input.ends_with('+')) && !valid_identifiers(build) {
            return Err(err("invalid build metadata"));
        }
        Ok(KubeVersion {
            major,
            minor,
            patch,
            pre: pre.to_string(),
            build: build.to_string(),
        })
    }

    /// The snap track.
    pub fn track(&self) -> Track {
        Track {
            major: self.major,
            minor: self.minor,
        }
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre)?;
        }
        if !self.build.is_empty() {
            write!(f, "+{}", self.build)?;
        }
        Ok(())
    }
}

/// Compares two versions by precedence (build metadata ignored; a pre-release sorts before
/// its release).
pub fn compare(a: &KubeVersion, b: &KubeVersion) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let core = (a.major, a.minor, a.patch).cmp(&(b.major, b.minor, b.patch));
    if core != Ordering::Equal {
        return core;
    }
    match (a.pre.is_empty(), b.pre.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => {
            let mut ai = a.pre.split('.');
            let mut bi = b.pre.split('.');
            loop {
                match (ai.next(), bi.next()) {
                    (None, None) => return Ordering::Equal,
                    (None, Some(_)) => return Ordering::Less,
                    (Some(_), None) => return Ordering::Greater,
                    (Some(x), Some(y)) => {
                        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
                            (Ok(x), Ok(y)) => x.cmp(&y),
                            (Ok(_), Err(_)) => Ordering::Less,
                            (Err(_), Ok(_)) => Ordering::Greater,
                            (Err(_), Err(_)) => x.cmp(y),
                        };
                        if o != Ordering::Equal {
                            return o;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_capi_writes() {
        for (input, track) in [
            ("v1.33.4", (1, 33)),
            ("1.27.0", (1, 27)),
            ("v1.34.0-rc.1", (1, 34)),
            ("v1.24.17+build.5", (1, 24)),
            ("v2.0.0", (2, 0)),
        ] {
            let v = KubeVersion::parse(input).unwrap();
            assert_eq!((v.major, v.minor), track, "{input}");
        }
    }

    #[test]
    fn rejects_what_is_not_semver() {
        for input in [
            "",
            "v1.28",
            "1",
            "v1.28.x",
            "v01.2.3",
            "1.2.3.4",
            "v1.2.3-",
            "v1.2.3+",
            "v1.2.3-a..b",
            " 1.2.3",
            "latest",
        ] {
            assert!(KubeVersion::parse(input).is_err(), "{input:?} should be rejected");
        }
    }

    #[test]
    fn error_message_names_the_input() {
        let e = KubeVersion::parse("v1.28").unwrap_err();
        assert!(e.to_string().contains("\"v1.28\""), "{e}");
    }

    #[test]
    fn displays_round_trip() {
        for input in ["v1.33.4", "v1.34.0-rc.1", "v1.24.17+build.5"] {
            assert_eq!(KubeVersion::parse(input).unwrap().to_string(), input);
        }
        assert_eq!(KubeVersion::parse("1.2.3").unwrap().track().to_string(), "1.2");
    }

    /// Property: on any input the parser returns without panicking, and whatever it accepts
    /// displays back to a string it accepts again with the same value.
    #[test]
    fn parser_never_panics_and_round_trips() {
        const ALPHABET: &[u8] = b"v0123456789.-+aZ_ \n";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 16) as usize;
            let input: String = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize] as char)
                .collect();
            if let Ok(v) = KubeVersion::parse(&input) {
                let again = KubeVersion::parse(&v.to_string()).expect("display is parseable");
                assert_eq!(again, v, "{input:?}");
            }
        }
    }

    #[test]
    fn orders_by_precedence() {
        use std::cmp::Ordering::*;
        let p = |s| KubeVersion::parse(s).unwrap();
        assert_eq!(compare(&p("v1.33.0"), &p("v1.34.0")), Less);
        assert_eq!(compare(&p("v1.34.0-rc.1"), &p("v1.34.0")), Less);
        assert_eq!(compare(&p("v1.34.0-rc.2"), &p("v1.34.0-rc.10")), Less);
        assert_eq!(compare(&p("v1.34.0+a"), &p("v1.34.0+b")), Equal);
        assert_eq!(compare(&p("v1.34.1"), &p("v1.34.0")), Greater);
    }
}
