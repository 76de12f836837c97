//! [`LogLimit`]: at most a few log lines of one kind per time window; the rest are counted
//! and summed up in one line, so that a peer sending garbage cannot flood the log.

use std::time::{Duration, Instant};

/// Lets `burst` lines through per `window`, holds back the rest and counts them.
#[derive(Debug)]
pub struct LogLimit {
    window: Duration,
    burst: u32,
    start: Instant,
    sent: u32,
    held: u64,
}

impl LogLimit {
    /// A limit of `burst` lines per `window`, starting at `now`.
    pub fn new(window: Duration, burst: u32, now: Instant) -> Self {
        Self {
            window,
            burst,
            start: now,
            sent: 0,
            held: 0,
        }
    }

    /// Whether one more line may be logged at `now` (else it is counted as held back).
    pub fn allow(&mut self, now: Instant) -> bool {
        if now.duration_since(self.start) >= self.window {
            self.start = now;
            self.sent = 0;
        }
        if self.sent < self.burst {
            self.sent += 1;
            true
        } else {
            self.held += 1;
            false
        }
    }

    /// Lines held back so far whose window has closed by `now` (then forgotten): the count
    /// to log in one summary line, or 0.
    pub fn take_held(&mut self, now: Instant) -> u64 {
        if self.held > 0 && now.duration_since(self.start) >= self.window {
            std::mem::take(&mut self.held)
        } else {
            0
        }
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_window_then_a_count() {
        let t0 = Instant::now();
        let mut l = LogLimit::new(Duration::from_secs(10), 3, t0);
        let allowed = (0..100).filter(|_| l.allow(t0)).count();
        assert_eq!(allowed, 3);
        assert_eq!(
            l.take_held(t0 + Duration::from_secs(5)),
            0,
            "window still open"
        );
        let later = t0 + Duration::from_secs(10);
        assert_eq!(l.take_held(later), 97);
        assert_eq!(l.take_held(later), 0, "counted once");
        assert!(l.allow(later), "a new window lets lines through again");
    }
}
