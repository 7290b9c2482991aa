//! The heartbeat deadline machine, sans-IO in the style of quinn-proto: the driver feeds it
//! `now` and what arrived, asks `poll_timeout()` when to wake, and calls `handle_timeout(now)`.
//! Both ends run one: each sends `Ping` every interval and gives up on a peer it has heard
//! nothing from for the timeout. Every received frame counts as hearing from the peer, so a
//! large transfer, which arrives as many bounded frames, keeps the connection alive.

use std::time::{Duration, Instant};

/// How often to ping and when to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatConfig {
    pub interval: Duration,
    pub timeout: Duration,
}

impl HeartbeatConfig {
    pub const PING_INTERVAL: Duration = Duration::from_secs(10);
    pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT: HeartbeatConfig = HeartbeatConfig {
        interval: Self::PING_INTERVAL,
        timeout: Self::HEARTBEAT_TIMEOUT,
    };
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What the driver must do when a deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatEvent {
    /// Send `Ping(nonce)` on channel 0.
    SendPing(u64),
    /// Nothing heard for the whole timeout: the peer is gone; close with 4008.
    Expired,
}

#[derive(Debug, Clone)]
pub struct Heartbeat {
    config: HeartbeatConfig,
    last_heard: Instant,
    next_ping: Instant,
    outstanding: Option<(u64, Instant)>,
    next_nonce: u64,
    rtt: Option<Duration>,
}

impl Heartbeat {
    pub fn new(now: Instant, config: HeartbeatConfig) -> Self {
        Self {
            config,
            last_heard: now,
            next_ping: now + config.interval,
            outstanding: None,
            next_nonce: 1,
            rtt: None,
        }
    }

    pub fn config(&self) -> HeartbeatConfig {
        self.config
    }

    /// Adopts new timings (a client learns the server's from `Welcome`).
    pub fn reconfigure(&mut self, now: Instant, config: HeartbeatConfig) {
        self.config = config;
        self.next_ping = now + config.interval;
    }

    /// Anything arrived from the peer.
    pub fn on_traffic(&mut self, now: Instant) {
        self.last_heard = self.last_heard.max(now);
    }

    /// A `Pong` arrived; returns the round-trip time if it answers our latest ping.
    pub fn on_pong(&mut self, now: Instant, nonce: u64) -> Option<Duration> {
        self.on_traffic(now);
        match self.outstanding {
            Some((sent_nonce, sent_at)) if sent_nonce == nonce => {
                self.outstanding = None;
                let rtt = now.saturating_duration_since(sent_at);
                self.rtt = Some(rtt);
                Some(rtt)
            }
            _ => None,
        }
    }

    /// The latest measured round-trip time.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// When the driver must next call [`Heartbeat::handle_timeout`].
    pub fn poll_timeout(&self) -> Instant {
        self.next_ping.min(self.expiry())
    }

    fn expiry(&self) -> Instant {
        self.last_heard + self.config.timeout
    }

    /// Advances to `now`; returns what to do, if anything. Expiry wins over a due ping.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<HeartbeatEvent> {
        if now >= self.expiry() {
            return Some(HeartbeatEvent::Expired);
        }
        if now >= self.next_ping {
            let nonce = self.next_nonce;
            self.next_nonce += 1;
            self.outstanding = Some((nonce, now));
            self.next_ping = now + self.config.interval;
            return Some(HeartbeatEvent::SendPing(nonce));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: HeartbeatConfig = HeartbeatConfig {
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(30),
    };

    /// Steps simulated time from deadline to deadline, collecting events.
    fn run_until(hb: &mut Heartbeat, end: Instant) -> Vec<(Duration, HeartbeatEvent)> {
        let start = hb.last_heard;
        let mut events = Vec::new();
        loop {
            let at = hb.poll_timeout();
            if at > end {
                return events;
            }
            if let Some(event) = hb.handle_timeout(at) {
                events.push((at - start, event));
                if event == HeartbeatEvent::Expired {
                    return events;
                }
            }
        }
    }

    #[test]
    fn silent_peer_gets_pings_then_expires_at_the_timeout() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, CFG);
        let events = run_until(&mut hb, t0 + Duration::from_secs(100));
        let secs: Vec<_> = events.iter().map(|(d, e)| (d.as_secs(), *e)).collect();
        assert_eq!(
            secs,
            vec![
                (10, HeartbeatEvent::SendPing(1)),
                (20, HeartbeatEvent::SendPing(2)),
                (30, HeartbeatEvent::Expired)
            ]
        );
    }

    #[test]
    fn any_traffic_postpones_expiry() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, CFG);
        // A long transfer: a frame every 5 s for 5 minutes, no pongs at all.
        for step in 1..=60 {
            let now = t0 + Duration::from_secs(5 * step);
            while hb.poll_timeout() <= now {
                let at = hb.poll_timeout();
                assert_ne!(hb.handle_timeout(at), Some(HeartbeatEvent::Expired));
            }
            hb.on_traffic(now);
        }
    }

    #[test]
    fn pong_measures_rtt() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, CFG);
        let at = hb.poll_timeout();
        let Some(HeartbeatEvent::SendPing(nonce)) = hb.handle_timeout(at) else {
            panic!()
        };
        assert_eq!(hb.on_pong(at + Duration::from_millis(40), nonce + 1), None);
        assert_eq!(
            hb.on_pong(at + Duration::from_millis(42), nonce),
            Some(Duration::from_millis(42))
        );
        assert_eq!(hb.rtt(), Some(Duration::from_millis(42)));
    }
}
