//! Input checks: everything the node would otherwise trip over late (or that could change
//! the meaning of a file the scripts write) is rejected here with a message for the user.

use std::net::{IpAddr, Ipv6Addr};

use crate::error::RenderError;

/// Length MicroK8s requires of a join token.
pub const JOIN_TOKEN_LEN: usize = 32;

/// A host name or address of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    /// An IP address, without brackets.
    Ip(IpAddr),
    /// A DNS name.
    Dns(String),
}

impl Host {
    /// Parses an IP address (IPv6 optionally in brackets) or a DNS name.
    pub(crate) fn parse(text: &str) -> Option<Host> {
        let unbracketed = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<Ipv6Addr>().ok());
        if let Some(v6) = unbracketed {
            return Some(Host::Ip(IpAddr::V6(v6)));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(Host::Ip(ip));
        }
        is_dns_name(text).then(|| Host::Dns(text.to_string()))
    }

    /// `IP` or `DNS`: the kind of subject alternative name this host needs.
    pub(crate) fn san_kind(&self) -> &'static str {
        match self {
            Host::Ip(_) => "IP",
            Host::Dns(_) => "DNS",
        }
    }

    /// The host as written in a certificate (IPv6 without brackets).
    pub(crate) fn bare(&self) -> String {
        match self {
            Host::Ip(ip) => ip.to_string(),
            Host::Dns(name) => name.clone(),
        }
    }

    /// `host:port`, with IPv6 addresses in brackets.
    pub(crate) fn with_port(&self, port: u16) -> String {
        match self {
            Host::Ip(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
            Host::Ip(IpAddr::V4(v4)) => format!("{v4}:{port}"),
            Host::Dns(name) => format!("{name}:{port}"),
        }
    }
}

/// RFC 1123 host names, leniently: labels of letters, digits, `-` and `_` (seen in internal
/// names), 1 to 63 characters, at most 253 in all, an optional final dot.
fn is_dns_name(text: &str) -> bool {
    let name = text.strip_suffix('.').unwrap_or(text);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

pub(crate) fn endpoint(host: &str, port: u16) -> Result<Host, RenderError> {
    if host.is_empty() {
        return Err(RenderError::EmptyEndpointHost);
    }
    let parsed = Host::parse(host).ok_or_else(|| RenderError::InvalidEndpointHost { host: host.to_string() })?;
    if port == 0 {
        return Err(RenderError::InvalidEndpointPort);
    }
    Ok(parsed)
}

pub(crate) fn join_addresses(addresses: &[String]) -> Result<Vec<Host>, RenderError> {
    if addresses.is_empty() {
        return Err(RenderError::NoJoinAddress);
    }
    addresses
        .iter()
        .map(|a| Host::parse(a).ok_or_else(|| RenderError::InvalidJoinAddress { address: a.clone() }))
        .collect()
}

pub(crate) fn join_token(token: &str) -> Result<(), RenderError> {
    let len = token.chars().count();
    if len != JOIN_TOKEN_LEN {
        return Err(RenderError::JoinTokenLength { len });
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
    {
        return Err(RenderError::JoinTokenCharacters);
    }
    Ok(())
}

pub(crate) fn auth_token(token: &str) -> Result<(), RenderError> {
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RenderError::InvalidAuthToken);
    }
    Ok(())
}

/// A value that ends up on one line of a file (or as one argument): no line breaks or other
/// control characters.
pub(crate) fn single_line(field: impl FnOnce() -> String, value: &str) -> Result<(), RenderError> {
    if value.chars().any(char::is_control) {
        return Err(RenderError::field(
            field(),
            "must not contain line breaks or other control characters",
        ));
    }
    Ok(())
}

/// A single word: no whitespace or control characters.
pub(crate) fn word(field: impl FnOnce() -> String, value: &str) -> Result<(), RenderError> {
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RenderError::field(
            field(),
            "must not contain whitespace or control characters",
        ));
    }
    Ok(())
}

/// `host` or `host:port` of the snap store proxy (IPv6 with a port in brackets).
pub(crate) fn host_port(field: impl FnOnce() -> String, value: &str) -> Result<(), RenderError> {
    if Host::parse(value).is_some() {
        return Ok(());
    }
    let with_port = value.rsplit_once(':').is_some_and(|(host, port)| {
        port.parse::<u16>().is_ok_and(|p| p > 0)
            && (host.starts_with('[') || !host.contains(':'))
            && Host::parse(host).is_some()
    });
    if with_port {
        Ok(())
    } else {
        Err(RenderError::field(
            field(),
            "must be a host name or address, optionally with :port",
        ))
    }
}

/// `forever`, or a Go duration such as `720h` or `1h30m`.
pub(crate) fn refresh_hold(value: &str) -> bool {
    if value == "forever" {
        return true;
    }
    let mut rest = value;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        if let Some(after_dot) = rest.strip_prefix('.') {
            let fraction = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            if fraction == 0 {
                return false;
            }
            rest = &after_dot[fraction..];
        }
        let unit = ["ns", "us", "ms", "s", "m", "h"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

/// Octal file permissions as the CRD allows them (`^(0o|0)?[0-7]{3,4}$`): `0644`, `644`,
/// `1777`, and cloud-init's own `0o644`.
pub(crate) fn permissions(value: &str) -> bool {
    let digits = value
        .strip_prefix("0o")
        .or_else(|| value.strip_prefix('0'))
        .unwrap_or(value);
    (3..=4).contains(&digits.len()) && digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            Host::parse("10.0.0.1").map(|h| h.with_port(1)),
            Some("10.0.0.1:1".into())
        );
        assert_eq!(
            Host::parse("fd00::1").map(|h| h.with_port(2)),
            Some("[fd00::1]:2".into())
        );
        assert_eq!(Host::parse("[fd00::1]").map(|h| h.bare()), Some("fd00::1".into()));
        assert_eq!(Host::parse("k8s.example.com").map(|h| h.san_kind()), Some("DNS"));
        assert_eq!(Host::parse("fd00::1").map(|h| h.san_kind()), Some("IP"));
        for bad in ["", "a b", "a/b", "-a.com", "a..b", "a'b", "[10.0.0.1]", "x\ny", "ü.com"] {
            assert_eq!(Host::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tokens() {
        assert!(join_token(&"a".repeat(32)).is_ok());
        assert_eq!(join_token("abc"), Err(RenderError::JoinTokenLength { len: 3 }));
        assert_eq!(join_token(&"é".repeat(32)), Err(RenderError::JoinTokenCharacters));
        assert_eq!(
            join_token(&format!("{}/", "a".repeat(31))),
            Err(RenderError::JoinTokenCharacters)
        );
        assert!(auth_token("abc+/=").is_ok());
        assert!(auth_token("").is_err());
        assert!(auth_token("a b").is_err());
    }

    #[test]
    fn holds() {
        for ok in ["forever", "720h", "1h30m", "1.5h", "10s", "100ms"] {
            assert!(refresh_hold(ok), "{ok}");
        }
        for bad in ["", "h", "10", "1.h", "10d", "forever!", "-1h", " 1h"] {
            assert!(!refresh_hold(bad), "{bad}");
        }
    }

    #[test]
    fn file_permissions() {
        for ok in ["0644", "644", "0755", "1777", "0600", "00644", "0o644", "0o1777"] {
            assert!(permissions(ok), "{ok}");
        }
        for bad in ["", "64", "0800", "rw", "0o", "0o64", "0o800", "o644", "12345", "+644"] {
            assert!(!permissions(bad), "{bad}");
        }
    }

    #[test]
    fn snapstore_domains() {
        let f = || "f".to_string();
        for ok in [
            "snapstore.example.com",
            "snapstore:8080",
            "10.0.0.1:80",
            "fd00::1",
            "[fd00::1]:443",
        ] {
            assert!(host_port(f, ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "http://x", "x:0", "x:port", "x/y"] {
            assert!(host_port(f, bad).is_err(), "{bad}");
        }
    }
}
