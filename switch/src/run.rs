//! The run loop: poll every port in bursts, pinned to a core when configured, with adaptive
//! idle.
//!
//! While frames flow the loop only polls. After `spin_polls` empty rounds it sleeps in
//! `poll(2)` on every port's readiness descriptor ([`pmd::Port::wait_fd`]: an AF_XDP or
//! AF_PACKET socket, an app port's doorbell with need-wakeup armed by
//! [`pmd::Port::prepare_wait`]) and on the [`Waker`]'s eventfd, so a frame from any side, or
//! a control thread with work for the switch, wakes it within a scheduler wakeup. The sleep
//! lasts up to `sleep`, and ends by the time the housekeeping hook names, if it names one
//! (a watchdog it feeds, [`Switch::run_paced`]). While some port cannot be waited on (the in-memory and Intel ports
//! are pure pollers) the loop first yields the core for `yield_polls` rounds and then sleeps
//! for at most `park`; a port with work pending that polling will not show
//! ([`pmd::Port::wants_poll`]) keeps the loop yielding instead of sleeping.
//!
//! A loop that can be woken does not yield: on a core shared with other busy tasks,
//! `sched_yield` hands the core to one of them, and a thread that is runnable rather than
//! asleep is not woken by its next frame: it waits for the scheduler to come back to it,
//! up to a timer tick (milliseconds). Asleep, the next frame wakes it at once, and a task
//! that slept is the one the scheduler runs first. On a small machine this is what lets the
//! switch share cores with the apps it serves and with anything else.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, PollFd, PollFlags};

use crate::forward::{Switch, SwitchError};

/// Adaptive idle settings.
#[derive(Debug, Clone, Copy)]
pub struct IdleConfig {
    /// Empty rounds spent busy-polling before yielding.
    pub spin_polls: u32,
    /// Further empty rounds spent yielding before sleeping, while some port cannot be
    /// waited on (a loop that every port can wake sleeps right after spinning).
    pub yield_polls: u32,
    /// Longest sleep while some port cannot be waited on (it is polled again after this).
    pub park: Duration,
    /// Longest sleep while every port can be waited on; a ready port or a [`Waker::wake`]
    /// ends it early.
    pub sleep: Duration,
    /// Rounds between calls of the housekeeping hook while busy (it also runs before every
    /// sleep).
    pub housekeeping_polls: u32,
}

impl Default for IdleConfig {
    fn default() -> Self {
        Self {
            spin_polls: 1024,
            yield_polls: 256,
            park: Duration::from_micros(500),
            sleep: Duration::from_millis(50),
            housekeeping_polls: 4096,
        }
    }
}

/// Wakes a sleeping run loop: an eventfd the loop sleeps on, written only while it sleeps.
#[derive(Debug)]
pub struct Waker {
    fd: Option<OwnedFd>,
    parked: AtomicBool,
}

impl Default for Waker {
    fn default() -> Self {
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK);
        if let Err(e) = &fd {
            tracing::warn!("no eventfd for the switch's waker ({e}): it sleeps in short steps");
        }
        Self {
            fd: fd.ok(),
            parked: AtomicBool::new(false),
        }
    }
}

impl Waker {
    /// Ends the switch's sleep, if it is asleep (or about to be).
    pub fn wake(&self) {
        if self.parked.load(Ordering::SeqCst)
            && let Some(fd) = &self.fd
        {
            let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
        }
    }

    /// Whether the run loop is asleep (or about to be) right now.
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }

    /// Consumes pending wakes.
    fn drain(&self) {
        if let Some(fd) = &self.fd {
            let mut b = [0u8; 8];
            let _ = rustix::io::read(fd, &mut b);
        }
    }
}

impl Switch {
    /// The waker of this switch's run loop, for ports and control threads.
    pub fn waker(&self) -> std::sync::Arc<Waker> {
        self.waker.clone()
    }

    /// Polls until `stop` is set. See [`Switch::run_with`].
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), SwitchError> {
        self.run_with(stop, |_| {})
    }

    /// Polls until `stop` is set, calling `housekeeping` every
    /// [`IdleConfig::housekeeping_polls`] busy rounds and before every sleep (where a server
    /// adds and removes ports). Pins the thread first when a core is configured.
    pub fn run_with(
        &mut self,
        stop: &AtomicBool,
        mut housekeeping: impl FnMut(&mut Switch),
    ) -> Result<(), SwitchError> {
        self.run_paced(stop, |s| {
            housekeeping(s);
            None
        })
    }

    /// [`Switch::run_with`] with a hook that also says by when it must run again (a
    /// watchdog it feeds): the sleep that follows it ends by then.
    pub fn run_paced(
        &mut self,
        stop: &AtomicBool,
        mut housekeeping: impl FnMut(&mut Switch) -> Option<Instant>,
    ) -> Result<(), SwitchError> {
        if let Some(core) = self.core {
            let id = core_affinity::get_core_ids()
                .and_then(|ids| ids.into_iter().find(|c| c.id == core))
                .ok_or(SwitchError::Pin(core))?;
            if !core_affinity::set_for_current(id) {
                return Err(SwitchError::Pin(core));
            }
        }
        let idle = self.idle;
        let mut empty: u32 = 0;
        let mut rounds: u32 = 0;
        while !stop.load(Ordering::Relaxed) {
            let n = self.poll();
            rounds = rounds.wrapping_add(1);
            if idle.housekeeping_polls > 0 && rounds.is_multiple_of(idle.housekeeping_polls) {
                housekeeping(self);
            }
            if n > 0 {
                empty = 0;
                continue;
            }
            empty = empty.saturating_add(1);
            if empty <= idle.spin_polls {
                std::hint::spin_loop();
            } else if self.any_wants_poll()
                || (empty <= idle.spin_polls.saturating_add(idle.yield_polls)
                    && !self.all_waitable())
            {
                std::thread::yield_now();
            } else {
                // Marked asleep first, so that work handed over from here on rings the
                // waker rather than waiting for the sleep to time out.
                self.waker.parked.store(true, Ordering::SeqCst);
                let due = housekeeping(self);
                if !stop.load(Ordering::SeqCst) {
                    self.sleep(&idle, due);
                }
                self.waker.parked.store(false, Ordering::SeqCst);
                self.waker.drain();
            }
        }
        Ok(())
    }

    /// Whether every port, and the waker, can end a sleep (so that the loop need not
    /// yield before sleeping).
    fn all_waitable(&self) -> bool {
        self.waker.fd.is_some()
            && self
                .ports
                .iter()
                .flatten()
                .all(|s| s.port.wait_fd().is_some())
    }

    /// Sleeps until a port has input, the waker rings, the timeout passes or `due` comes.
    /// Not on the burst path (it allocates its poll set).
    fn sleep(&mut self, idle: &IdleConfig, due: Option<Instant>) {
        let mut ready = false;
        for slot in self.ports.iter_mut().flatten() {
            ready |= slot.port.prepare_wait();
        }
        if ready {
            return;
        }
        let waker = self.waker.clone();
        let mut every = waker.fd.is_some();
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(1 + self.ports.len());
        if let Some(fd) = &waker.fd {
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        for slot in self.ports.iter().flatten() {
            match slot.port.wait_fd() {
                Some(fd) => fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN)),
                None => every = false,
            }
        }
        let mut t = if every { idle.sleep } else { idle.park };
        if let Some(due) = due {
            t = t.min(due.saturating_duration_since(Instant::now()));
        }
        let ts = rustix::time::Timespec {
            tv_sec: t.as_secs() as i64,
            tv_nsec: t.subsec_nanos() as i64,
        };
        let _ = rustix::event::poll(&mut fds, Some(&ts));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    use super::*;
    use crate::forward::SwitchConfig;

    #[test]
    fn a_sleeping_loop_comes_back_by_the_time_its_hook_names() {
        // Sleeps of an hour and no port: only the hook's deadline ends a sleep.
        let mut sw = Switch::new(SwitchConfig {
            idle: IdleConfig {
                spin_polls: 0,
                yield_polls: 0,
                park: Duration::from_secs(3600),
                sleep: Duration::from_secs(3600),
                housekeeping_polls: 0,
            },
            ..SwitchConfig::default()
        })
        .expect("switch");
        let waker = sw.waker();
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU32::new(0));
        let (s, c) = (stop.clone(), calls.clone());
        let t = std::thread::spawn(move || {
            sw.run_paced(&s, |_| {
                if c.fetch_add(1, Ordering::SeqCst) + 1 >= 5 {
                    s.store(true, Ordering::SeqCst);
                }
                Some(Instant::now() + Duration::from_millis(1))
            })
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Release a loop stuck in its hour-long sleep, so that the test fails rather than hangs.
        stop.store(true, Ordering::SeqCst);
        waker.wake();
        t.join().expect("joined").expect("ran");
        assert!(
            calls.load(Ordering::SeqCst) >= 5,
            "the hook ran {} times: the sleep outlasted its deadline",
            calls.load(Ordering::SeqCst)
        );
    }
}
