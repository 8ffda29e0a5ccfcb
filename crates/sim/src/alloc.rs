//! Loopback addresses for cluster endpoints and machines: `127.<b>.<c>.<d>`, never
//! `127.0.0.x`. Allocation starts at a random place and probes that nobody (another
//! simulator on the same host) listens on the ports the simulator will bind there.

use std::collections::HashSet;
use std::hash::{BuildHasher as _, Hasher as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};

/// Hands out loopback addresses.
#[derive(Debug)]
pub struct Allocator {
    lo: u8,
    hi: u8,
    next: u32,
    used: HashSet<Ipv4Addr>,
    probe_ports: Vec<u16>,
}

impl Allocator {
    /// Addresses `127.<lo..=hi>.x.y` (x, y in 1..=254); `probe_ports` must be free on an
    /// address before it is handed out.
    pub fn new(lo: u8, hi: u8, probe_ports: Vec<u16>) -> Allocator {
        let lo = lo.max(1);
        let hi = hi.max(lo);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let span = Self::span(lo, hi);
        Allocator {
            lo,
            hi,
            next: (h.finish() % u64::from(span)) as u32,
            used: HashSet::new(),
            probe_ports,
        }
    }

    fn span(lo: u8, hi: u8) -> u32 {
        (u32::from(hi) - u32::from(lo) + 1) * 254 * 254
    }

    fn nth(&self, n: u32) -> Ipv4Addr {
        let b = self.lo as u32 + n / (254 * 254);
        let c = (n / 254) % 254 + 1;
        let d = n % 254 + 1;
        Ipv4Addr::new(127, b as u8, c as u8, d as u8)
    }

    fn free_on_host(&self, ip: Ipv4Addr) -> bool {
        self.probe_ports
            .iter()
            .all(|p| TcpListener::bind(SocketAddrV4::new(ip, *p)).is_ok())
    }

    /// A new address, or `None` when the range is exhausted.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let span = Self::span(self.lo, self.hi);
        for _ in 0..span.min(100_000) {
            let ip = self.nth(self.next % span);
            self.next = (self.next + 1) % span;
            if !self.used.contains(&ip) && self.free_on_host(ip) {
                self.used.insert(ip);
                return Some(ip);
            }
        }
        None
    }

    /// Marks `ip` used (an address recorded in an object's status or spec). False if it is
    /// already taken.
    pub fn claim(&mut self, ip: Ipv4Addr) -> bool {
        self.used.insert(ip)
    }

    /// Returns `ip` to the pool (reused only after the whole range came round).
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip);
    }

    /// Whether `ip` is in the range this allocator serves.
    pub fn in_range(&self, ip: Ipv4Addr) -> bool {
        let o = ip.octets();
        o[0] == 127 && (self.lo..=self.hi).contains(&o[1]) && o[2] != 0 && o[3] != 0 && o[2] != 255 && o[3] != 255
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn allocates_distinct_loopback_addresses() {
        let mut a = Allocator::new(100, 100, vec![]);
        let x = a.allocate().unwrap();
        let y = a.allocate().unwrap();
        assert_ne!(x, y);
        assert!(a.in_range(x) && a.in_range(y));
        assert!(!a.claim(x));
        a.release(x);
        assert!(a.claim(x));
        assert!(!a.in_range(Ipv4Addr::new(127, 0, 0, 1)));
    }
}
