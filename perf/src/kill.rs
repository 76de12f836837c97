//! What the kill benchmarks share: the server's answers on its control socket, a seeded
//! random source and quantiles.

use std::path::Path;
use std::time::{Duration, Instant};

use switch::ctl::transport::SeqPacket;
use switch::ctl::{Client, StatsRepr, Transport};

/// The server's stats answer and the instant it arrived, or `None` when nobody answers.
pub fn stats(socket: &Path) -> Option<(StatsRepr, Instant)> {
    let s = Client::connect(socket).and_then(|mut c| c.stats()).ok()?;
    Some((s, Instant::now()))
}

/// The pid of the process listening on the control socket (its `SO_PEERCRED`).
pub fn server_pid(socket: &Path) -> Option<i32> {
    SeqPacket::connect(socket).ok()?.peer().ok().map(|p| p.pid)
}

/// SIGKILLs the server listening on `socket`; returns the instant of the kill.
pub fn kill_server(socket: &Path) -> Result<Instant, String> {
    let pid = server_pid(socket).ok_or("no server on the control socket")?;
    let pid = rustix::process::Pid::from_raw(pid).ok_or("the server reports pid 0")?;
    let at = Instant::now();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL)
        .map_err(|e| format!("kill: {e}"))?;
    Ok(at)
}

/// A new server instance's first forwarded frame after `old` (the instance that was killed),
/// on the monotonic clock this process shares with the server: returns the instants of the
/// new server's start and of its first frame. Polls every 2 ms for up to `within`.
pub fn wait_first_frame(
    socket: &Path,
    old: u64,
    within: Duration,
) -> Result<(Instant, Instant), String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some((s, at)) = stats(socket)
            && s.instance != old
            && let Some(first) = s.first_frame_ns
        {
            // The answer left the server after `uptime`: its start is a little before
            // `at - uptime`, never after.
            let start = at - Duration::from_nanos(s.uptime_ns);
            return Ok((start, start + Duration::from_nanos(first)));
        }
        if Instant::now() >= deadline {
            return Err(format!("no new server forwarded a frame within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A xorshift64 generator: uniform integers below a bound.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded with `seed` (0 is replaced by 1).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// Seeded from the wall clock.
    pub fn from_clock() -> Self {
        let ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Self::new(ns)
    }

    /// The seed to give [`Rng::new`] to repeat this sequence from here.
    pub fn state(&self) -> u64 {
        self.0
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        let x = &mut self.0;
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x % n.max(1)
    }

    /// A duration in `0..=max`, in microseconds.
    pub fn up_to(&mut self, max: Duration) -> Duration {
        Duration::from_micros(self.below(max.as_micros() as u64 + 1))
    }
}

/// The `p`-quantile of `v` (nearest rank), `None` when `v` is empty.
pub fn quantile(v: &[f64], p: f64) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len().max(1)) - 1;
    s.get(i).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).rev().collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn the_generator_stays_below_its_bound_and_repeats_from_a_seed() {
        let mut a = Rng::new(7);
        let s: Vec<u64> = (0..1000).map(|_| a.below(10)).collect();
        assert!(s.iter().all(|&x| x < 10));
        assert!((0..10).all(|d| s.contains(&d)));
        let mut b = Rng::new(7);
        assert!(s.iter().all(|&x| x == b.below(10)));
    }
}
