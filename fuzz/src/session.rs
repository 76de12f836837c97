//! The control session (`switch::ctl::Session`) over sequences of messages, server actions
//! and the passing of time, against the handshake's rules.

use std::time::{Duration, Instant};

use switch::ctl::session::check_grant;
use switch::ctl::wire::{Direction, GrantRepr, Limits, Repr};
use switch::ctl::{AllowedApp, CtlError, ErrorCode, Name, PeerCred, Policy, Session, State, Step};

use crate::Input;

const PEER: PeerCred = PeerCred {
    pid: 4242,
    uid: 1000,
    gid: 1000,
};
const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const TIMEOUT_MS: u32 = 1000;

fn policy() -> Policy {
    Policy {
        allowed: vec![AllowedApp {
            uid: Some(PEER.uid),
            gid: None,
            name: "web".into(),
            mac: Some(MAC),
        }],
        limits: Limits {
            max_ring: 1024,
            min_buf_size: 2048,
            max_buf_size: 65536,
            max_bufs: 4096,
            max_mem: 1 << 24,
            timeout_ms: TIMEOUT_MS,
        },
        grant_fds: (2, 0),
    }
}

/// A grant with fields near the limits' edges, chosen by the input.
fn grant(inp: &mut Input<'_>) -> GrantRepr {
    let pick = |inp: &mut Input<'_>, v: &[u32]| v[inp.below(v.len())];
    let rings = [0, 1, 2, 3, 64, 1024, 1025, 2048];
    GrantRepr {
        rx_size: pick(inp, &rings),
        tx_size: pick(inp, &rings),
        fill_size: pick(inp, &rings),
        comp_size: pick(inp, &rings),
        buf_size: pick(inp, &[1024, 2048, 3000, 4096, 65536, 131072]),
        buf_count: pick(inp, &[0, 1, 64, 4096, 4097]),
        domid: inp.u16(),
        grant_fds: pick(inp, &[0, 2, 3]) as u8,
        notify_fds: pick(inp, &[0, 2]) as u8,
        notify_port: inp.u32(),
        refs: (0..pick(inp, &[0, 1, 64, 4096, 4097])).collect(),
    }
}

/// The bytes of one message: a well-formed one of any kind, chosen by the input, or bytes
/// taken from it as they are.
fn message(inp: &mut Input<'_>) -> Vec<u8> {
    let names = ["web", "Web", "other"];
    let macs = [MAC, [2, 0, 0, 0, 0, 2], [3, 0, 0, 0, 0, 1]];
    let repr = match inp.below(9) {
        0 | 1 => Repr::Hello {
            name: Name::new(names[inp.below(names.len())]).expect("name"),
            mac: macs[inp.below(macs.len())],
        },
        2 | 3 => Repr::Grant(grant(inp)),
        4 => Repr::StatsRequest,
        5 => Repr::Detach,
        6 => Repr::Closed,
        7 => Repr::CaptureRequest {
            port: inp.u16(),
            direction: [Direction::Rx, Direction::Tx, Direction::Both][inp.below(3)],
            snaplen: [1, 64, 65500][inp.below(3)],
            count: u64::from(inp.u16()),
        },
        _ => {
            let n = inp.below(64);
            return (0..n).map(|_| inp.u8()).collect();
        }
    };
    let mut b = repr.to_bytes();
    // Now and then one byte changed, anywhere.
    if inp.below(8) == 0 && !b.is_empty() {
        let i = inp.below(b.len());
        b[i] ^= inp.u8() | 1;
    }
    b
}

/// Feeds a session messages, server actions and time; checks after every event that the
/// session follows the handshake: states only move forward; a port is attached only after a
/// Hello the policy admits and a Grant within the limits carrying the descriptors it
/// declares; stats only before Hello or once connected; detach only once connected; once a
/// connection is closing, nothing but refusals; an expired handshake is refused.
pub fn handshake(data: &[u8]) {
    run(data);
}

/// [`handshake`], returning the states the session went through.
fn run(data: &[u8]) -> Vec<State> {
    let mut seen = vec![State::Initialising];
    let mut inp = Input::new(data);
    let policy = policy();
    let t0 = Instant::now();
    let mut now = t0;
    let mut s = Session::new(PEER, &policy, now);
    // What the server was asked to do and has not answered yet.
    let mut pending: Option<Step> = None;
    let mut admitted = false;
    let mut closed = false;
    let rank = |st: State| st as u8;
    let mut events = 0;
    while !inp.is_empty() && events < 64 {
        events += 1;
        let before = s.state();
        let was_closed = closed;
        match inp.below(4) {
            0 | 1 => {
                let bytes = message(&mut inp);
                let fds = inp.below(4);
                let (truncated, surplus) = (inp.below(16) == 0, inp.below(16) == 0);
                let parsed = Repr::from_bytes(&bytes).ok();
                let step = s.on_message(&bytes, fds, truncated, surplus, &policy, now);
                match &step {
                    Step::Reply(Repr::InitWait(l)) => {
                        assert_eq!(before, State::Initialising);
                        assert_eq!(*l, policy.limits);
                        let Some(Repr::Hello { name, mac }) = parsed else {
                            panic!("InitWait answered {parsed:?}");
                        };
                        assert!(name.as_str() == "web" && mac == MAC, "admitted {name:?}");
                        assert_eq!(fds, 0);
                        admitted = true;
                    }
                    Step::Reply(r) => panic!("unexpected reply {r:?}"),
                    Step::Attach { name, mac, grant } => {
                        assert_eq!(before, State::InitWait);
                        assert!(admitted && name.as_str() == "web" && *mac == MAC);
                        assert_eq!(parsed.as_ref(), Some(&Repr::Grant(grant.clone())));
                        assert!(check_grant(grant, &policy.limits).is_ok(), "{grant:?}");
                        // And by the limits as written, not only by the session's own check.
                        let l = &policy.limits;
                        let ring = |v: u32| v.is_power_of_two() && (2..=l.max_ring).contains(&v);
                        assert!(
                            [
                                grant.rx_size,
                                grant.tx_size,
                                grant.fill_size,
                                grant.comp_size
                            ]
                            .into_iter()
                            .all(ring)
                                && grant.buf_size.is_power_of_two()
                                && (l.min_buf_size..=l.max_buf_size).contains(&grant.buf_size)
                                && (1..=l.max_bufs).contains(&grant.buf_count)
                                && !grant.refs.is_empty()
                                && grant.mem_len() <= l.max_mem,
                            "a grant outside the limits was attached: {grant:?}"
                        );
                        assert_eq!((grant.grant_fds, grant.notify_fds), policy.grant_fds);
                        assert_eq!(fds, 2, "the descriptors the grant declares");
                        assert!(!truncated && !surplus);
                        assert_eq!(s.state(), State::Initialised);
                    }
                    Step::Stats => {
                        assert!(matches!(before, State::Initialising | State::Connected));
                        assert_eq!(parsed, Some(Repr::StatsRequest));
                    }
                    Step::Capture { .. } => {
                        assert_eq!(
                            before,
                            State::Initialising,
                            "a capture only on a fresh connection"
                        );
                        assert!(matches!(parsed, Some(Repr::CaptureRequest { .. })));
                    }
                    Step::Detach => {
                        assert_eq!(before, State::Connected);
                        assert_eq!(s.state(), State::Closing);
                    }
                    Step::Close(Repr::Closed) => {
                        assert!(matches!(before, State::Initialising | State::InitWait));
                        assert_eq!(parsed, Some(Repr::Detach));
                        closed = true;
                    }
                    Step::Close(Repr::Error { code, .. }) => {
                        assert_ne!(*code, ErrorCode::Internal, "a peer's message is never ours");
                        assert!(matches!(s.state(), State::Closing | State::Closed));
                        closed = true;
                    }
                    Step::Close(r) => panic!("closed with {r:?}"),
                }
                if was_closed {
                    assert!(matches!(step, Step::Close(_)), "after closing, {step:?}");
                }
                if matches!(step, Step::Attach { .. } | Step::Detach) {
                    pending = Some(step);
                }
            }
            2 => match pending.take() {
                Some(Step::Attach { .. }) if s.state() == State::Initialised => {
                    if inp.below(2) == 0 {
                        let port = inp.u16();
                        let r = s.attached(port, 1, 7);
                        assert!(matches!(r, Repr::Connected { .. }));
                        assert_eq!((s.state(), s.port()), (State::Connected, Some(port)));
                    } else {
                        let r = s.refuse(CtlError::refused(ErrorCode::BadMemory, "no"));
                        assert!(matches!(r, Repr::Error { .. }));
                        assert_eq!(s.state(), State::Closing);
                        closed = true;
                    }
                }
                Some(Step::Detach) => {
                    assert_eq!(s.detached(), Repr::Closed);
                    assert_eq!((s.state(), s.port()), (State::Closed, None));
                    closed = true;
                }
                _ => {}
            },
            _ => {
                now += Duration::from_millis(inp.below(800) as u64);
                let handshaking = matches!(
                    s.state(),
                    State::Initialising | State::InitWait | State::Initialised
                );
                let late = now - t0 > Duration::from_millis(TIMEOUT_MS as u64);
                if s.expired(now) {
                    assert!(handshaking, "expired in {:?}", s.state());
                    assert!(late, "expired before the timeout");
                    let r = s.timed_out();
                    assert!(matches!(
                        r,
                        Repr::Error {
                            code: ErrorCode::Timeout,
                            ..
                        }
                    ));
                    closed = true;
                    pending = None;
                }
            }
        }
        // States move forward only (a refusal closes from anywhere, which is forward too).
        let after = s.state();
        assert!(rank(after) >= rank(before), "{before:?} -> {after:?}");
        if closed {
            assert!(matches!(after, State::Closing | State::Closed), "{after:?}");
        }
        assert_eq!(
            s.app().is_some(),
            admitted,
            "app known after an admitted Hello"
        );
        if seen.last() != Some(&after) {
            seen.push(after);
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(name: &str) -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/session");
        std::fs::read(dir.join(name)).expect("seed")
    }

    #[test]
    fn the_seeds_walk_the_whole_handshake_and_its_timeout() {
        use State::*;
        assert_eq!(
            run(&seed("seed-life")),
            [
                Initialising,
                InitWait,
                Initialised,
                Connected,
                Closing,
                Closed
            ]
        );
        assert_eq!(
            run(&seed("seed-timeout")),
            [Initialising, InitWait, Closing]
        );
    }
}
