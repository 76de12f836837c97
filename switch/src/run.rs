//! The run loop: poll every port in bursts, pinned to a core when configured, with adaptive
//! idle.
//!
//! While frames flow the loop only polls. After `spin_polls` empty rounds it starts yielding
//! the core; after `yield_polls` more it parks the thread for up to `park` (a port with
//! work pending that polling will not show, `Port::wants_poll`, keeps it from parking). A
//! port or a control thread that hands the switch work wakes it early with [`Waker::wake`],
//! which costs an `unpark` only when the loop is actually parked. On a small machine this is
//! what lets the switch share cores with the apps it serves.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::Thread;
use std::time::Duration;

use crate::forward::{Switch, SwitchError};

/// Adaptive idle settings.
#[derive(Debug, Clone, Copy)]
pub struct IdleConfig {
    /// Empty rounds spent busy-polling before yielding.
    pub spin_polls: u32,
    /// Further empty rounds spent yielding before parking.
    pub yield_polls: u32,
    /// Longest park; a [`Waker::wake`] ends it early.
    pub park: Duration,
    /// Rounds between calls of the housekeeping hook while busy (it also runs before every
    /// park).
    pub housekeeping_polls: u32,
}

impl Default for IdleConfig {
    fn default() -> Self {
        Self {
            spin_polls: 1024,
            yield_polls: 256,
            park: Duration::from_micros(500),
            housekeeping_polls: 4096,
        }
    }
}

/// Wakes a parked run loop.
#[derive(Debug, Default)]
pub struct Waker {
    thread: Mutex<Option<Thread>>,
    parked: AtomicBool,
}

impl Waker {
    /// Ends the switch's park, if it is parked.
    pub fn wake(&self) {
        if self.parked.load(Ordering::SeqCst)
            && let Ok(t) = self.thread.lock()
            && let Some(t) = t.as_ref()
        {
            t.unpark();
        }
    }

    /// Whether the run loop is parked right now.
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
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
    /// [`IdleConfig::housekeeping_polls`] busy rounds and before every park (where a server
    /// adds and removes ports). Pins the thread first when a core is configured.
    pub fn run_with(
        &mut self,
        stop: &AtomicBool,
        mut housekeeping: impl FnMut(&mut Switch),
    ) -> Result<(), SwitchError> {
        if let Some(core) = self.core {
            let id = core_affinity::get_core_ids()
                .and_then(|ids| ids.into_iter().find(|c| c.id == core))
                .ok_or(SwitchError::Pin(core))?;
            if !core_affinity::set_for_current(id) {
                return Err(SwitchError::Pin(core));
            }
        }
        if let Ok(mut t) = self.waker.thread.lock() {
            *t = Some(std::thread::current());
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
            } else if empty <= idle.spin_polls.saturating_add(idle.yield_polls)
                || self.any_wants_poll()
            {
                std::thread::yield_now();
            } else {
                housekeeping(self);
                self.waker.parked.store(true, Ordering::SeqCst);
                if !stop.load(Ordering::SeqCst) {
                    std::thread::park_timeout(idle.park);
                }
                self.waker.parked.store(false, Ordering::SeqCst);
            }
        }
        if let Ok(mut t) = self.waker.thread.lock() {
            *t = None;
        }
        Ok(())
    }
}
