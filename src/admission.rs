//! Who may connect: `--max-clients` and `--max-per-ip`. Pure bookkeeping,
//! shared by both engines so they refuse the same connections.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::protocol;

/// Counts connections, overall and per remote address.
#[derive(Debug)]
pub struct Admission {
    /// Clients currently admitted.
    total: usize,
    /// Admitted clients per non-loopback address (entries removed at zero,
    /// so the map only holds addresses that are connected now).
    per_ip: HashMap<IpAddr, u32>,
    max_clients: usize,
    /// 0 disables the per-address limit.
    max_per_ip: u32,
    /// Don't count loopback addresses against `max_per_ip`.
    exempt_loopback: bool,
}

/// Why a connection was refused; `line()` is what the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ServerFull,
    TooManyFromAddress,
}

impl Refusal {
    pub fn line(self) -> &'static str {
        match self {
            Refusal::ServerFull => protocol::SERVER_FULL,
            Refusal::TooManyFromAddress => protocol::TOO_MANY_FROM_ADDRESS,
        }
    }
}

impl Admission {
    pub fn new(max_clients: usize, max_per_ip: u32, exempt_loopback: bool) -> Self {
        Self {
            total: 0,
            per_ip: HashMap::new(),
            max_clients,
            max_per_ip,
            exempt_loopback,
        }
    }

    /// Admit a connection from `ip`, or say why not. On `Ok` the caller must
    /// later call [`Admission::release`] with the same address.
    pub fn admit(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        if self.total >= self.max_clients {
            return Err(Refusal::ServerFull);
        }
        if self.max_per_ip > 0 && !(self.exempt_loopback && ip.is_loopback()) {
            let n = self.per_ip.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                return Err(Refusal::TooManyFromAddress);
            }
            *n += 1;
        }
        self.total += 1;
        Ok(())
    }

    pub fn release(&mut self, ip: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_clients_refuses_then_admits_after_release() {
        let mut a = Admission::new(2, 0, true);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(a.admit(ip).is_ok());
        assert!(a.admit(ip).is_ok());
        assert_eq!(a.admit(ip), Err(Refusal::ServerFull));
        a.release(ip);
        assert!(a.admit(ip).is_ok());
    }

    #[test]
    fn per_ip_limit_exempts_loopback() {
        let mut a = Admission::new(100, 1, true);
        let remote: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(a.admit(remote).is_ok());
        assert_eq!(a.admit(remote), Err(Refusal::TooManyFromAddress));
        assert!(a.admit(other).is_ok());
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(a.admit(lo).is_ok());
        assert!(a.admit(lo).is_ok());
        a.release(remote);
        assert!(a.admit(remote).is_ok());
    }

    #[test]
    fn loopback_counts_when_not_exempt() {
        let mut a = Admission::new(100, 1, false);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(a.admit(lo).is_ok());
        assert_eq!(a.admit(lo), Err(Refusal::TooManyFromAddress));
    }
}
