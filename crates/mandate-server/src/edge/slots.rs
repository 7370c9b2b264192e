//! Connection caps: per client IP address and in total.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How often, at most, refused connections are counted in the log.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The open connections, by client address.
#[derive(Debug)]
pub(super) struct Slots {
    max_total: usize,
    max_per_ip: usize,
    state: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    refused: Refused,
}

/// Refusals since the last log line.
#[derive(Debug, Default)]
struct Refused {
    per_ip: u64,
    total: u64,
    last_logged: Option<Instant>,
}

/// Which cap a connection ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cap {
    PerIp,
    Total,
}

impl Slots {
    pub(super) fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            state: Mutex::new(Open::default()),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Open) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A slot for a connection from `ip`, or the cap it would exceed (the
    /// refusal is counted, and logged at most every [`LOG_EVERY`]).
    pub(super) fn take(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Cap> {
        // An IPv4 client on a dual-stack socket is the same client.
        let ip = ip.to_canonical();
        let refused = self.with(|open| {
            let mine = open.per_ip.get(&ip).copied().unwrap_or(0);
            let cap = if open.total >= self.max_total {
                Cap::Total
            } else if mine >= self.max_per_ip {
                Cap::PerIp
            } else {
                open.total += 1;
                open.per_ip.insert(ip, mine + 1);
                return None;
            };
            let r = &mut open.refused;
            match cap {
                Cap::PerIp => r.per_ip += 1,
                Cap::Total => r.total += 1,
            }
            let now = Instant::now();
            let due = r
                .last_logged
                .is_none_or(|t| now.duration_since(t) >= LOG_EVERY);
            let counts = due.then(|| {
                r.last_logged = Some(now);
                (std::mem::take(&mut r.per_ip), std::mem::take(&mut r.total))
            });
            Some((cap, counts, open.total))
        });
        match refused {
            None => Ok(Slot {
                slots: Arc::clone(self),
                ip,
            }),
            Some((cap, counts, open)) => {
                if let Some((per_ip, total)) = counts {
                    tracing::warn!(
                        over_per_ip_cap = per_ip,
                        over_total_cap = total,
                        open,
                        max_connections = self.max_total,
                        max_connections_per_ip = self.max_per_ip,
                        last_from = %ip,
                        "connections refused at the connection caps (counted since the last such line)"
                    );
                }
                Err(cap)
            }
        }
    }

    /// Open connections now.
    pub(super) fn open(&self) -> usize {
        self.with(|open| open.total)
    }
}

/// One open connection's place; given back on drop.
#[derive(Debug)]
pub(super) struct Slot {
    slots: Arc<Slots>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.with(|open| {
            open.total = open.total.saturating_sub(1);
            if let Some(n) = open.per_ip.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.per_ip.remove(&self.ip);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{Cap, Slots};
    use std::net::IpAddr;

    #[tokio::test]
    async fn caps_hold_and_slots_come_back() {
        let slots = Slots::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = slots.take(a).unwrap();
        let _a2 = slots.take(a).unwrap();
        assert_eq!(slots.take(a).unwrap_err(), Cap::PerIp);
        // The same client over IPv6 (IPv4-mapped) is the same client.
        assert_eq!(
            slots.take("::ffff:192.0.2.1".parse().unwrap()).unwrap_err(),
            Cap::PerIp
        );
        let _b1 = slots.take(b).unwrap();
        assert_eq!(slots.take(b).unwrap_err(), Cap::Total);
        drop(a1);
        assert_eq!(slots.open(), 2);
        let _b2 = slots.take(b).unwrap();
        assert_eq!(slots.open(), 3);
    }
}
