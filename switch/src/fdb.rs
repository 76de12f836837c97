//! The forwarding database: which port a unicast MAC was last seen on.
//!
//! Open addressing with linear probing over a power-of-two table of 8-byte entries (eight
//! per cache line), filled to at most half, so a probe usually touches one line. An entry
//! is the MAC in its top 48 bits and the port in its low 16. Only unicast MACs are stored,
//! so bit 16, where the MAC's I/G bit lands, is free: it is the entry's *recent* bit (below).
//! An empty slot is all ones (a MAC with every bit but I/G set, marked recent, on port
//! `0xffff`: never stored, as an entry on port `0xffff` is never marked recent). When each
//! station was last seen is kept in a parallel array of ticks, one per slot.
//!
//! The table is bounded: once it holds `max_entries` stations, new ones are not learned
//! (their frames are flooded, as unknown unicast is) and the refusal is counted. So is each
//! port ([`Fdb::set_port_limit`]): a port that has that many stations learned learns no new
//! one, so that one port cannot fill the table for every other; the refusals are counted per
//! port ([`Fdb::not_learned`]).
//!
//! **Pinned entries.** An app's port has one MAC, admitted by the server; the switch pins it
//! to the port ([`Fdb::pin`]) and never learns from the app's frames. A pinned entry is
//! always marked recent, never ages, and learning from another port cannot move it (the
//! attempt is counted, `FdbStats::pinned`); it goes when its port does
//! ([`Fdb::flush_port`]). It is marked by its tick: [`PINNED`], a value learning never
//! records (a sighting at that tick is recorded one tick earlier), so the burst pass, which
//! never reads ticks, is unchanged, and every path that reads a tick reads the mark with it.
//! Pinned entries count neither against `max_entries` nor against their port's limit.
//!
//! Learning
//! writes a slot only when the station moved or its recorded tick is more than 1/64 of the
//! aging time old, so a busy station's entry is rewritten about 64 times per aging period,
//! not on every frame; an entry therefore lasts from `age - age/64` to `age` ticks after its
//! station was last seen. Entries age lazily: a lookup treats an entry older than the aging
//! time as absent, and a bounded sweep (a few slots per call) deletes aged entries with
//! backward-shift deletion, which keeps probe chains short without tombstones.
//!
//! Keys are hashed with a multiplicative hash keyed by a per-table seed, so a sender cannot
//! pick MACs that collide in every switch; the multiplier is 2^64/φ (Fibonacci hashing), which
//! spreads MACs numbered in their last bytes evenly instead of into probe clusters.
//!
//! **Recent entries.** The table keeps a *window* of time, at most 1/8 of the refresh interval
//! (`age / 64`) long, and marks an entry recent only when its recorded tick is certain to be
//! within the refresh interval of any time in the window: a recent entry's station is
//! known-fresh (learning it again writes nothing) and alive, so the burst pass answers it
//! from the entry alone, without reading its tick. When the time leaves the window a new one
//! starts, and one pass over the ticks (every slot, once per window) marks the entries that
//! qualify for it; an entry that does not is marked again when learning next records it.
//! The mark changes no answer: lookups and learning outside the burst pass read the ticks.
//!
//! The burst call ([`Fdb::learn_and_look_up`]) answers frames in a pass that writes nothing:
//! each source is checked (recent on this port: one compare, the port being part of the
//! entry) and each destination answered (recent: the port is the entry's low bits), both
//! from their home slots, with one branch per frame for everything that could go
//! otherwise; no frame's work depends on another's, so the loads of a burst overlap, and
//! the loop calls nothing, so its state stays in registers. Any other frame (a source that
//! needs a write — new, moved, due a refresh, not known recent — or is not in its home
//! slot, a destination not answered from its home slot, a group address) leaves the pass,
//! is learned as [`Fdb::learn`] does and looked up as [`Fdb::lookup`] does, and the pass
//! resumes after it; the answers are those of learning and looking up frame by frame.

/// A MAC address as the low 48 bits of a `u64`, first byte on the wire in the lowest byte:
/// the I/G (multicast) bit is bit 0. Everything here that takes a key reads only its low 48
/// bits, so the 8 bytes of a frame header starting at a MAC are that MAC's key as they are.
pub type MacKey = u64;

/// Mask of the 48 bits of a [`MacKey`].
pub const MAC_MASK: u64 = (1 << 48) - 1;
/// What [`Fdb::learn_and_look_up`] reports for a destination it does not know (or a group
/// address): not a port number.
pub const UNKNOWN: u16 = u16::MAX;
/// What [`Fdb::learn_and_look_up`] reports for a frame whose source is a group address (no
/// station sends from one: the frame is to be dropped). Ports at or above this number are
/// not ports for the burst calls.
pub const GROUP_SOURCE: u16 = u16::MAX - 3;
/// The tick of a pinned entry (learning records no sighting at this tick).
pub const PINNED: u32 = u32::MAX;

/// An entry's recent bit (where the MAC's I/G bit lands, 0 in every stored MAC).
const RECENT: u64 = 1 << 16;
/// An empty slot.
const EMPTY: u64 = u64::MAX;

/// The tick learning records for a sighting at `now`: `now`, except that [`PINNED`] is
/// recorded one tick earlier (the entry then lasts a tick less).
#[inline(always)]
fn stamp(now: u32) -> u32 {
    if now == PINNED { now - 1 } else { now }
}

/// The MAC part of an entry for unicast `mac`: the MAC in the top 48 bits (whatever `mac`
/// holds above its 48 bits falls off), the recent bit and port 0.
#[inline(always)]
fn mac_bits(mac: MacKey) -> u64 {
    mac << 16
}

/// The MAC part of entry `e`.
#[inline(always)]
fn entry_mac(e: u64) -> u64 {
    e & !(RECENT | 0xffff)
}

/// The top `64 - shift` bits of `key ^ seed` times 2^64 / φ (Fibonacci hashing: keys in
/// arithmetic progression, such as MACs numbered in their last bytes, spread evenly; the
/// per-table seed moves where each key lands).
#[inline(always)]
fn hash(key: u64, seed: u64, shift: u32) -> usize {
    ((key ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> shift) as usize
}

/// The multiplier of [`hash`] times 2^16.
const FIB_16: u64 = 0x9e37_79b9_7f4a_7c15u64 << 16;

/// [`hash`] of `mac_bits(key)` for a seed whose low 16 bits are clear, with `seed >> 16`
/// as `seed16`: `((key << 16) ^ seed) * φ` is `(key ^ seed16) * (φ << 16)`, whose top bits
/// ignore whatever `key` holds above its 48 bits, so the key needs no shift or mask first.
#[inline(always)]
fn key_home(key: MacKey, seed16: u64, shift: u32) -> usize {
    ((key ^ seed16).wrapping_mul(FIB_16) >> shift) as usize
}

/// The key of `mac`.
#[inline]
pub fn mac_key(mac: &[u8; 6]) -> MacKey {
    let mut b = [0u8; 8];
    b[..6].copy_from_slice(mac);
    u64::from_le_bytes(b)
}

/// The MAC of `key`.
#[inline]
pub fn key_mac(key: MacKey) -> [u8; 6] {
    let b = key.to_le_bytes();
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

/// Whether `key` is a group (multicast or broadcast) address.
#[inline]
pub fn is_group(key: MacKey) -> bool {
    key & 1 != 0
}

/// Counters of the FDB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FdbStats {
    /// Stations learned (new entries).
    pub learned: u64,
    /// Stations that moved to another port.
    pub moves: u64,
    /// Stations not learned because the table was full.
    pub full: u64,
    /// Entries deleted by aging.
    pub aged: u64,
    /// Group source addresses refused for learning.
    pub bad_source: u64,
    /// New stations not learned because their port had its most stations learned.
    pub port_full: u64,
    /// Sightings of a pinned MAC on another port than its own (not learned).
    pub pinned: u64,
}

/// What [`Fdb::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// The entry was up to date (same port, tick within 1/64 of the aging time): nothing
    /// written.
    Fresh,
    /// The entry's tick was refreshed (it was more than 1/64 of the aging time old).
    Refreshed,
    /// A new station.
    New,
    /// The station moved from this port.
    Moved(u16),
    /// The table is full; not learned.
    Full,
    /// A group address cannot be a source; not learned.
    BadSource,
    /// The port has its most stations learned already; not learned.
    PortFull,
    /// The MAC is pinned to another port; not learned.
    Pinned,
}

/// Why [`Fdb::pin`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    /// A group or zero MAC cannot be a station's.
    #[error("a group or zero MAC cannot be pinned")]
    NotUnicast,
    /// The MAC is pinned to another port already.
    #[error("the MAC is pinned to port {0} already")]
    Taken(u16),
    /// A station of that MAC was learned on another port ([`Fdb::claim`]).
    #[error("a station on port {0} holds the MAC")]
    Held(u16),
    /// The table has no room left even for pinned entries.
    #[error("the forwarding table has no room for another pinned MAC")]
    Full,
}

/// The forwarding database. See the module docs.
pub struct Fdb {
    /// Per slot: the MAC in the top 48 bits, the recent bit, the port in the low 16;
    /// [`EMPTY`] when empty.
    slots: Box<[u64]>,
    /// Per slot: the tick its station was last recorded at (meaningless when empty).
    ticks: Box<[u32]>,
    mask: usize,
    shift: u32,
    seed: u64,
    len: usize,
    max: usize,
    age: u32,
    /// Ticks a recorded sighting may lag before learning rewrites it (`age / 64`).
    refresh: u32,
    /// The window's first tick: a recent entry's tick lies in
    /// `window + window_len - refresh ..= window_last`.
    window: u32,
    /// The latest tick an entry was marked recent at (the window holds no earlier time).
    window_last: u32,
    /// The window's length in ticks (`refresh / 8`).
    window_len: u32,
    sweep_at: usize,
    /// Bumped by every write to the table, so that a caller can tell an answer it kept
    /// still holds.
    generation: u64,
    stats: FdbStats,
    /// Pinned entries in the table.
    pinned: usize,
    /// Most stations learned per port (`usize::MAX`: no limit but the table's).
    port_limit: usize,
    /// Per port: learned (not pinned) entries in the table; grown on demand.
    on_port: Vec<u32>,
    /// Per port: new stations not learned because of the port's limit; grown on demand.
    refused_on: Vec<u64>,
}

impl Fdb {
    /// A table holding at most `max_entries` stations (at least 1), forgetting a station
    /// `age` ticks after it was last seen.
    pub fn new(max_entries: usize, age: u32) -> Self {
        let seed = {
            // Per-table seed from the address of a stack value and the time: not secret, only
            // different between switches and runs.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            let local = 0u8;
            t ^ (&local as *const u8 as u64).rotate_left(32)
        };
        Self::with_seed(max_entries, age, seed)
    }

    /// [`Fdb::new`] with the hash seed given, for the fuzz harnesses (`fuzzing` feature):
    /// a run that found a fault repeats it exactly.
    #[cfg(feature = "fuzzing")]
    #[doc(hidden)]
    pub fn with_fixed_seed(max_entries: usize, age: u32, seed: u64) -> Self {
        Self::with_seed(max_entries, age, seed)
    }

    fn with_seed(max_entries: usize, age: u32, seed: u64) -> Self {
        let max = max_entries.clamp(1, 1 << 26);
        let cap = (max * 2).next_power_of_two().max(16);
        // The low 16 bits stay clear, so that the seeded key of a MAC is the seeded MAC
        // shifted (see `key_home`).
        let seed = seed & !0xffff;
        let refresh = age >> 6;
        Self {
            slots: vec![EMPTY; cap].into_boxed_slice(),
            ticks: vec![0; cap].into_boxed_slice(),
            mask: cap - 1,
            shift: 64 - cap.trailing_zeros(),
            seed,
            len: 0,
            max,
            age,
            refresh,
            window: 0,
            window_last: 0,
            window_len: refresh >> 3,
            sweep_at: 0,
            generation: 0,
            stats: FdbStats::default(),
            pinned: 0,
            port_limit: usize::MAX,
            on_port: Vec::new(),
            refused_on: Vec::new(),
        }
    }

    /// Limits every port to `most` learned stations (at least 1; pinned entries do not
    /// count). A port over a new, lower limit keeps its stations until they age.
    pub fn set_port_limit(&mut self, most: usize) {
        self.port_limit = most.max(1);
    }

    /// The most stations one port may have learned.
    pub fn port_limit(&self) -> usize {
        self.port_limit
    }

    /// Stations learned on `port` (pinned entries not counted; aged ones until swept).
    pub fn learned_on(&self, port: u16) -> usize {
        self.on_port.get(port as usize).copied().unwrap_or(0) as usize
    }

    /// New stations seen on `port` but not learned because of its limit, so far.
    pub fn not_learned(&self, port: u16) -> u64 {
        self.refused_on.get(port as usize).copied().unwrap_or(0)
    }

    /// Pins unicast `mac` to `port`: the entry never ages, is always answered from the
    /// burst pass, and learning cannot move it; [`Fdb::flush_port`] removes it. A station of
    /// that MAC learned on some port is taken over. Refused for a MAC pinned elsewhere, or
    /// when the table (which holds `max_entries` learned stations, filled to at most half)
    /// is three-quarters full.
    pub fn pin(&mut self, mac: MacKey, port: u16) -> Result<(), PinError> {
        let mac = mac & MAC_MASK;
        if is_group(mac) || mac == 0 || port >= GROUP_SOURCE {
            return Err(PinError::NotUnicast);
        }
        let bits = mac_bits(mac);
        let i = self.find(bits);
        let e = self.slots[i];
        if e == EMPTY {
            if self.len + 1 > self.slots.len() / 4 * 3 {
                return Err(PinError::Full);
            }
            self.len += 1;
        } else if self.ticks[i] == PINNED {
            if e as u16 != port {
                return Err(PinError::Taken(e as u16));
            }
            return Ok(());
        } else {
            self.count_off(e as u16);
        }
        self.slots[i] = bits | RECENT | port as u64;
        self.ticks[i] = PINNED;
        self.pinned += 1;
        self.generation += 1;
        Ok(())
    }

    /// [`Fdb::pin`] for a MAC the port chose itself, not one the operator gave it: refused
    /// ([`PinError::Held`]) while a station of that MAC learned on another port is in the
    /// table, so that no port takes over a station on the wire by claiming its address.
    pub fn claim(&mut self, mac: MacKey, port: u16) -> Result<(), PinError> {
        let m = mac & MAC_MASK;
        if !is_group(m) && m != 0 {
            let i = self.find(mac_bits(m));
            let e = self.slots[i];
            if e != EMPTY && self.ticks[i] != PINNED && e as u16 != port {
                return Err(PinError::Held(e as u16));
            }
        }
        self.pin(mac, port)
    }

    /// Whether `mac` is pinned, and to which port.
    pub fn pinned_to(&self, mac: MacKey) -> Option<u16> {
        let i = self.find(mac_bits(mac & MAC_MASK));
        (self.slots[i] != EMPTY && self.ticks[i] == PINNED).then_some(self.slots[i] as u16)
    }

    /// Counts a learned entry on `port` gone.
    #[inline]
    fn count_off(&mut self, port: u16) {
        if let Some(c) = self.on_port.get_mut(port as usize) {
            *c = c.saturating_sub(1);
        }
    }

    /// Counts a learned entry on `port` added.
    #[inline]
    fn count_on(&mut self, port: u16) {
        let p = port as usize;
        if p >= self.on_port.len() {
            self.on_port.resize(p + 1, 0);
        }
        self.on_port[p] += 1;
    }

    /// Whether `port` may learn another station (and counts the refusal when not).
    #[inline]
    fn port_has_room(&mut self, port: u16) -> bool {
        if self.learned_on(port) < self.port_limit {
            return true;
        }
        let p = port as usize;
        if p >= self.refused_on.len() {
            self.refused_on.resize(p + 1, 0);
        }
        self.refused_on[p] += 1;
        self.stats.port_full += 1;
        false
    }

    /// Stations in the table (aged ones included until swept).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most stations the table holds.
    pub fn max_entries(&self) -> usize {
        self.max
    }

    /// A number that changes whenever an entry is written, added or deleted: an answer of
    /// [`Fdb::learn_and_look_up_one`] that wrote nothing stays the answer for the same
    /// frame, tick and generation.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Slots in the table (a sweep of this many visits every entry).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The aging time in ticks.
    pub fn age(&self) -> u32 {
        self.age
    }

    /// Counters so far.
    pub fn stats(&self) -> FdbStats {
        self.stats
    }

    #[inline]
    fn home(&self, bits: u64) -> usize {
        hash(bits, self.seed, self.shift)
    }

    #[inline]
    fn alive(&self, i: usize, now: u32) -> bool {
        let t = self.ticks[i];
        now.wrapping_sub(t) <= self.age || t == PINNED
    }

    /// The slot holding the unicast MAC whose entry bits are `bits`, or the empty slot
    /// ending its probe chain.
    #[inline]
    fn find(&self, bits: u64) -> usize {
        let mut i = self.home(bits);
        loop {
            let j = i & self.mask;
            let e = self.slots[j];
            if e == EMPTY || entry_mac(e) == bits {
                return j;
            }
            i += 1;
        }
    }

    /// Whether `now` lies in the window, so that recent entries may be taken as fresh.
    #[inline(always)]
    fn in_window(&self, now: u32) -> bool {
        let d = now.wrapping_sub(self.window);
        d <= self.window_len && d >= self.window_last.wrapping_sub(self.window)
    }

    /// Starts a window at `now`: marks recent exactly the entries whose tick is within
    /// `refresh - window_len` before `now` (one pass over the table).
    #[cold]
    #[inline(never)]
    fn new_window(&mut self, now: u32) {
        self.window = now;
        self.window_last = now;
        let keep = self.refresh - self.window_len;
        for (e, &t) in self.slots.iter_mut().zip(self.ticks.iter()) {
            if *e != EMPTY {
                let recent = (now.wrapping_sub(t) <= keep || t == PINNED) && *e as u16 != UNKNOWN;
                *e = (*e & !RECENT) | if recent { RECENT } else { 0 };
            }
        }
    }

    /// The recent bit for an entry on `port` recorded at `tick`, learned at `now`: set when
    /// `now` is in the window and `tick` no earlier than the window allows.
    #[inline]
    fn recent_bit(&mut self, port: u16, tick: u32, now: u32) -> u64 {
        let lo = self
            .window
            .wrapping_add(self.window_len)
            .wrapping_sub(self.refresh);
        if port == UNKNOWN || !self.in_window(now) || now.wrapping_sub(tick) > now.wrapping_sub(lo)
        {
            return 0;
        }
        self.window_last = now;
        RECENT
    }

    /// The port `mac` was last seen on, unless unknown or aged out.
    #[inline]
    pub fn lookup(&self, mac: MacKey, now: u32) -> Option<u16> {
        if is_group(mac) {
            return None;
        }
        let i = self.find(mac_bits(mac));
        let e = self.slots[i];
        (e != EMPTY && self.alive(i, now)).then_some(e as u16)
    }

    /// The per-frame work of a switch for a whole burst received on `port`: for each
    /// `(destination, source)` pair in `frames`, learns the source (when `learn`; as
    /// [`Fdb::learn`]) and writes to `out` the port the destination was last seen on, or
    /// [`UNKNOWN`] (as [`Fdb::lookup`]; group destinations are [`UNKNOWN`]). The answers are
    /// those of learning and looking up frame by frame, except that a frame whose source is
    /// a group address is answered [`GROUP_SOURCE`] (learning or not).
    ///
    /// A pass that writes nothing checks each frame's source (recent on `port`) and answers
    /// its destination, both from their home slots; it has no dependency from one frame to
    /// the next, so the loads of successive frames overlap. Any other frame (a source that
    /// needs a write or is not in its home slot, a destination not answered from its home
    /// slot) stops the pass: that frame is learned through [`Fdb::learn`] and looked up,
    /// and the pass resumes after it.
    #[inline(never)]
    pub fn learn_and_look_up(
        &mut self,
        port: u16,
        now: u32,
        learn: bool,
        frames: &[(MacKey, MacKey)],
        out: &mut [u16],
    ) {
        let n = frames.len().min(out.len());
        let out = &mut out[..n];
        self.learn_and_look_up_keys(port, now, learn, |i| frames[i], out);
    }

    /// [`Fdb::learn_and_look_up`] for frames whose `(destination, source)` pairs `keys`
    /// gives by index, one frame per entry of `out`, so that a caller need not gather the
    /// pairs first: a switch reads them straight out of the frames' headers. `keys(i)` is
    /// called for `i` below `out.len()` only, once each (twice for a frame that needs
    /// learning).
    #[inline]
    pub fn learn_and_look_up_keys<F: Fn(usize) -> (MacKey, MacKey)>(
        &mut self,
        port: u16,
        now: u32,
        learn: bool,
        keys: F,
        out: &mut [u16],
    ) {
        if !self.in_window(now) {
            self.new_window(now);
        }
        let mut i = 0;
        while i < out.len() {
            i = if learn {
                self.look_up_fresh::<true, F>(port, &keys, i, out)
            } else {
                self.look_up_fresh::<false, F>(port, &keys, i, out)
            };
            if i < out.len() {
                let (dst, src) = keys(i);
                out[i] = self.learn_then_look_up(port, now, learn, src, dst);
                i += 1;
            }
        }
    }

    /// The pass of [`Fdb::learn_and_look_up_keys`]: answers frames from the `from`th on,
    /// writing nothing, up to the first it cannot answer from home slots and recent
    /// entries alone, and returns that frame's index (`out.len()` when it answered every
    /// frame). `now` lies in the window. Nothing in the loop calls out, so its state stays
    /// in registers.
    ///
    /// The source is known-fresh on `port` when its home slot holds exactly its MAC, the
    /// recent mark and `port` (one compare, the port being part of the entry; on port
    /// [`UNKNOWN`] never: no entry there is recent, and the empty slot's MAC is a group
    /// address). The destination's home slot XOR its MAC bits and the recent mark is its
    /// port when the slot holds its recent entry, and has bits above the low 16 otherwise.
    /// Group addresses (bit 0 of a key) always stop the pass.
    #[inline(always)]
    #[expect(
        clippy::needless_range_loop,
        reason = "one index for `keys` and `out` keeps the loop's state in registers; \
                  an iterator over `out` beside it costs 6 instructions a frame more"
    )]
    fn look_up_fresh<const LEARN: bool, F: Fn(usize) -> (MacKey, MacKey)>(
        &self,
        port: u16,
        keys: &F,
        from: usize,
        out: &mut [u16],
    ) -> usize {
        let mask = self.mask;
        // `mask + 1` long, so that an index `& mask` needs no bounds check.
        let slots = &self.slots[..=mask];
        let (seed16, shift) = (self.seed >> 16, self.shift);
        let home = move |key: MacKey| key_home(key, seed16, shift) & mask;
        let want = RECENT | port as u64;
        for k in from..out.len() {
            let (dst, src) = keys(k);
            let mut miss = (dst | src) & 1;
            if LEARN {
                miss |= slots[home(src)] ^ (mac_bits(src) | want);
            }
            let x = slots[home(dst)] ^ (mac_bits(dst) | RECENT);
            miss |= x >> 16;
            if miss != 0 {
                return k;
            }
            out[k] = x as u16;
        }
        out.len()
    }

    /// One frame the pass could not answer: learns its source (when `learn`), then
    /// answers its destination, exactly as frame-by-frame learning and lookup do; a group
    /// source is answered [`GROUP_SOURCE`].
    #[cold]
    #[inline(never)]
    fn learn_then_look_up(
        &mut self,
        port: u16,
        now: u32,
        learn: bool,
        src: MacKey,
        dst: MacKey,
    ) -> u16 {
        if learn {
            self.learn(src, port, now);
        }
        if is_group(src) {
            return GROUP_SOURCE;
        }
        self.lookup(dst, now).unwrap_or(UNKNOWN)
    }

    /// [`Fdb::learn_and_look_up`] for one frame, inline: the common case (source recent
    /// on `port`, destination recent, both in their home slots) costs two hashes and two
    /// compares; anything else takes the burst call. Also returns whether the call took
    /// the common case, which writes nothing and counts nothing.
    #[inline]
    pub fn learn_and_look_up_one(
        &mut self,
        port: u16,
        now: u32,
        learn: bool,
        dst: MacKey,
        src: MacKey,
    ) -> (u16, bool) {
        let (sb, db) = (mac_bits(src), mac_bits(dst));
        let s = self.slots[self.home(sb) & self.mask];
        let x = self.slots[self.home(db) & self.mask] ^ (db | RECENT);
        let fresh = !is_group(src) && (!learn || s == sb | RECENT | port as u64);
        if fresh && x <= 0xffff && !is_group(dst) && port != UNKNOWN && self.in_window(now) {
            return (x as u16, true);
        }
        let mut out = [UNKNOWN];
        self.learn_and_look_up(port, now, learn, &[(dst, src)], &mut out);
        (out[0], false)
    }

    /// Records that `mac` was seen on `port` at `now`.
    #[inline]
    pub fn learn(&mut self, mac: MacKey, port: u16, now: u32) -> Learned {
        if is_group(mac) {
            self.stats.bad_source += 1;
            return Learned::BadSource;
        }
        let bits = mac_bits(mac);
        let i = self.find(bits);
        let e = self.slots[i];
        let learned = if e == EMPTY {
            if self.len - self.pinned >= self.max {
                self.stats.full += 1;
                return Learned::Full;
            }
            if !self.port_has_room(port) {
                return Learned::PortFull;
            }
            self.count_on(port);
            self.ticks[i] = stamp(now);
            self.len += 1;
            self.stats.learned += 1;
            self.generation += 1;
            Learned::New
        } else if self.ticks[i] == PINNED {
            if e as u16 != port {
                self.stats.pinned += 1;
                return Learned::Pinned;
            }
            return Learned::Fresh;
        } else if e as u16 != port {
            if !self.port_has_room(port) {
                return Learned::PortFull;
            }
            self.count_off(e as u16);
            self.count_on(port);
            self.ticks[i] = stamp(now);
            self.stats.moves += 1;
            self.generation += 1;
            Learned::Moved(e as u16)
        } else if now.wrapping_sub(self.ticks[i]) > self.refresh {
            self.ticks[i] = stamp(now);
            self.generation += 1;
            Learned::Refreshed
        } else {
            Learned::Fresh
        };
        let entry = bits | self.recent_bit(port, self.ticks[i], now) | port as u64;
        if entry != e {
            self.slots[i] = entry;
        }
        learned
    }

    /// Empties slot `i` and shifts the rest of its probe chain back (no tombstones).
    fn remove_at(&mut self, i: usize) {
        let mask = self.mask;
        let mut hole = i & mask;
        if self.ticks[hole] == PINNED {
            self.pinned -= 1;
        } else {
            self.count_off(self.slots[hole] as u16);
        }
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let e = self.slots[j];
            if e == EMPTY {
                break;
            }
            let home = self.home(entry_mac(e)) & mask;
            // The entry at j may fill the hole when the hole lies on its probe path, i.e.
            // between its home and j (cyclically).
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.slots[hole] = e;
                self.ticks[hole] = self.ticks[j];
                hole = j;
            }
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        self.generation += 1;
    }

    /// Deletes aged entries among the next `budget` slots; returns how many it deleted.
    pub fn sweep(&mut self, now: u32, budget: usize) -> usize {
        let mut deleted = 0;
        for _ in 0..budget.min(2 * self.slots.len()) {
            let i = self.sweep_at;
            if self.slots[i] != EMPTY && !self.alive(i, now) {
                // The slot may now hold a shifted entry: look at it again next time.
                self.remove_at(i);
                deleted += 1;
            } else {
                self.sweep_at = (i + 1) & self.mask;
            }
        }
        self.stats.aged += deleted as u64;
        deleted
    }

    /// Forgets every station on `port` (the port went away).
    pub fn flush_port(&mut self, port: u16) {
        let mut i = 0;
        while i < self.slots.len() {
            let e = self.slots[i];
            if e != EMPTY && e as u16 == port {
                self.remove_at(i);
            } else {
                i += 1;
            }
        }
    }

    /// Every live entry as `(mac, port, age in ticks)`, for the control plane.
    pub fn entries(&self, now: u32) -> Vec<([u8; 6], u16, u32)> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i] != EMPTY && self.alive(i, now))
            .map(|i| {
                let e = self.slots[i];
                let t = self.ticks[i];
                let age = if t == PINNED { 0 } else { now.wrapping_sub(t) };
                (key_mac(entry_mac(e) >> 16), e as u16, age)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u32) -> MacKey {
        mac_key(&[2, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8, 0x10])
    }

    #[test]
    fn learns_moves_and_ages() {
        let mut f = Fdb::new(64, 100);
        assert_eq!(f.lookup(mac(1), 0), None);
        assert_eq!(f.learn(mac(1), 3, 0), Learned::New);
        assert_eq!(f.learn(mac(1), 3, 0), Learned::Fresh);
        assert_eq!(f.lookup(mac(1), 50), Some(3));
        assert_eq!(f.learn(mac(1), 5, 60), Learned::Moved(3));
        assert_eq!(f.lookup(mac(1), 160), Some(5));
        assert_eq!(f.lookup(mac(1), 161), None, "aged out lazily");
        assert_eq!(f.len(), 1);
        assert_eq!(f.sweep(161, 1 << 20), 1);
        assert_eq!(f.len(), 0);
        assert_eq!(f.stats().moves, 1);
    }

    #[test]
    fn refresh_writes_only_when_the_tick_lags_by_a_64th_of_the_aging_time() {
        let mut f = Fdb::new(64, 6400);
        assert_eq!(f.learn(mac(1), 3, 0), Learned::New);
        assert_eq!(f.learn(mac(1), 3, 100), Learned::Fresh);
        assert_eq!(f.learn(mac(1), 3, 101), Learned::Refreshed);
        // Last seen at 150 (recorded 101): alive to 6501 at least, gone after 6501.
        assert_eq!(f.learn(mac(1), 3, 150), Learned::Fresh);
        assert_eq!(f.lookup(mac(1), 6501), Some(3));
        assert_eq!(f.lookup(mac(1), 6502), None);
        // A move is written at once, whatever the tick.
        assert_eq!(f.learn(mac(1), 4, 6400), Learned::Moved(3));
        assert_eq!(f.lookup(mac(1), 12800), Some(4));
    }

    #[test]
    fn refuses_group_sources() {
        let mut f = Fdb::new(4, 10);
        assert_eq!(f.learn(mac_key(&[0xff; 6]), 1, 0), Learned::BadSource);
        assert_eq!(
            f.learn(mac_key(&[1, 0, 0x5e, 0, 0, 1]), 1, 0),
            Learned::BadSource
        );
        assert!(f.is_empty());
    }

    #[test]
    fn bounded_and_recovers_after_aging() {
        let mut f = Fdb::new(100, 10);
        for i in 0..100 {
            assert_eq!(f.learn(mac(i), 1, 0), Learned::New);
        }
        assert_eq!(f.learn(mac(100), 1, 0), Learned::Full);
        assert_eq!(f.lookup(mac(100), 0), None);
        assert_eq!(f.lookup(mac(99), 0), Some(1), "old entries stay");
        // Keep half alive, let the rest age, sweep.
        for i in 0..50 {
            f.learn(mac(i), 2, 8);
        }
        f.sweep(15, 1 << 20);
        assert_eq!(f.len(), 50);
        for i in 0..50 {
            assert_eq!(f.lookup(mac(i), 15), Some(2), "entry {i} lost by deletion");
        }
        assert_eq!(f.learn(mac(100), 1, 15), Learned::New);
    }

    #[test]
    fn flush_port_keeps_other_ports() {
        let mut f = Fdb::new(1000, 10);
        for i in 0..1000 {
            f.learn(mac(i), (i % 3) as u16, 0);
        }
        f.flush_port(1);
        for i in 0..1000 {
            let want = if i % 3 == 1 {
                None
            } else {
                Some((i % 3) as u16)
            };
            assert_eq!(f.lookup(mac(i), 0), want);
        }
    }

    #[test]
    fn burst_learning_and_lookup_match_frame_by_frame() {
        // The same frames through the burst call and through learn + lookup one by one.
        let mut a = Fdb::new(8, 10);
        let mut b = Fdb::new(8, 10);
        let bc = mac_key(&[0xff; 6]);
        let frames: Vec<(MacKey, MacKey)> = vec![
            (mac(2), mac(1)),
            (mac(2), mac(1)),
            (mac(1), mac(2)),
            (bc, mac(3)),
            (mac(3), bc),
            (mac(3), mac(4)),
            (mac(9), mac(5)),
        ];
        let mut out = vec![0u16; frames.len()];
        for (tick, port) in [(0, 1u16), (0, 2), (5, 2), (20, 3)] {
            a.learn_and_look_up(port, tick, true, &frames, &mut out);
            let mut want = Vec::new();
            for &(dst, src) in &frames {
                b.learn(src, port, tick);
                want.push(if is_group(src) {
                    GROUP_SOURCE
                } else if is_group(dst) {
                    UNKNOWN
                } else {
                    b.lookup(dst, tick).unwrap_or(UNKNOWN)
                });
            }
            assert_eq!(out, want, "tick {tick} port {port}");
            assert_eq!(a.len(), b.len());
            assert_eq!(a.stats().moves, b.stats().moves);
            assert_eq!(a.stats().full, b.stats().full);
        }
        // Sources were refreshed at tick 20 on port 3: alive until 30, then aged.
        assert_eq!(a.lookup(mac(1), 30), Some(3));
        assert_eq!(a.lookup(mac(1), 31), None);
        // One frame at a time, through the inline path, gives the same answers.
        let mut one = Fdb::new(8, 10);
        for &(dst, src) in &frames {
            let generation = one.generation();
            let (got, pure) = one.learn_and_look_up_one(7, 0, true, dst, src);
            if pure {
                assert_eq!(
                    one.generation(),
                    generation,
                    "the common case writes nothing"
                );
                assert_ne!(got, UNKNOWN);
                assert_eq!(one.learn_and_look_up_one(7, 0, true, dst, src), (got, true));
            }
            b.learn(src, 7, 40);
            let want = if is_group(src) {
                GROUP_SOURCE
            } else if is_group(dst) {
                UNKNOWN
            } else {
                b.lookup(dst, 40).unwrap_or(UNKNOWN)
            };
            assert_eq!(got, want);
        }
        assert_eq!(one.len(), 5, "every unicast source learned");
        // Learning off: nothing learned, lookups still answered.
        let mut c = Fdb::new(8, 10);
        c.learn(mac(2), 4, 0);
        c.learn_and_look_up(1, 0, false, &frames[..1], &mut out[..1]);
        assert_eq!(out[0], 4);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn long_bursts_with_moves_match_frame_by_frame() {
        // Bursts longer than a chunk of any kind, whose sources are learned, moved and
        // refreshed part way through, and whose later frames look up those sources.
        let mut a = Fdb::new(64, 640);
        let mut b = Fdb::new(64, 640);
        let mut rnd = crate::test_util::rng();
        let bc = mac_key(&[0xff; 6]);
        for round in 0..200u32 {
            let len = 1 + rnd(100) as usize;
            let frames: Vec<(MacKey, MacKey)> = (0..len)
                .map(|_| {
                    let dst = if rnd(10) == 0 {
                        bc
                    } else {
                        mac(rnd(80) as u32)
                    };
                    (dst, mac(rnd(80) as u32))
                })
                .collect();
            let (port, tick) = (rnd(4) as u16, round * 7);
            let mut out = vec![0u16; len];
            a.learn_and_look_up(port, tick, true, &frames, &mut out);
            let want: Vec<u16> = frames
                .iter()
                .map(|&(dst, src)| {
                    b.learn(src, port, tick);
                    if is_group(dst) {
                        UNKNOWN
                    } else {
                        b.lookup(dst, tick).unwrap_or(UNKNOWN)
                    }
                })
                .collect();
            assert_eq!(out, want, "round {round}");
            assert_eq!(a.stats(), b.stats(), "round {round}");
            assert_eq!(a.len(), b.len());
            if round % 50 == 49 {
                a.sweep(tick, 1 << 20);
                b.sweep(tick, 1 << 20);
            }
        }
        assert!(a.stats().moves > 0 && a.stats().full > 0);
    }

    #[test]
    fn a_group_address_is_never_its_unicast_twin() {
        // A stored unicast MAC and the group address differing from it only in the I/G
        // bit: the group address is neither found as a destination nor learned as a
        // source, on any path.
        let mut f = Fdb::new(64, 6400);
        assert_eq!(f.learn(mac(5), 2, 0), Learned::New);
        let twin = mac(5) | 1;
        assert_eq!(f.lookup(twin, 0), None);
        let mut out = [0u16; 2];
        f.learn_and_look_up(2, 0, true, &[(twin, mac(5)), (mac(5), twin)], &mut out);
        assert_eq!(out, [UNKNOWN, GROUP_SOURCE], "a group source is refused");
        assert_eq!(f.stats().bad_source, 1);
        assert_eq!(
            f.learn_and_look_up_one(2, 0, true, twin, mac(5)),
            (UNKNOWN, false)
        );
        assert_eq!(
            f.learn_and_look_up_one(3, 0, true, mac(5), twin).0,
            GROUP_SOURCE
        );
        assert_eq!(f.stats().bad_source, 2);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn bursts_across_windows_match_frame_by_frame() {
        // Many windows: the clock moves in small and large steps (and now and then back),
        // stations are learned, refreshed, moved, aged and swept, group twins of known
        // stations and port UNKNOWN turn up, keys carry other bytes above their 48 bits;
        // the burst call, the one-frame call and frame-by-frame learning agree throughout.
        for age in [0u32, 10, 640, 6400, 100_000] {
            let mut a = Fdb::new(48, age);
            let mut b = Fdb::new(48, age);
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ age as u64;
            let mut rnd = move |n: u64| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % n
            };
            let mut tick = 0u32;
            for round in 0..3000u32 {
                tick = match rnd(20) {
                    0 => tick.wrapping_sub(rnd(5) as u32),
                    1 => tick.wrapping_add(rnd(2 * age as u64 + 2) as u32),
                    2..=4 => tick.wrapping_add(rnd(age as u64 / 32 + 2) as u32),
                    _ => tick.wrapping_add(rnd(age as u64 / 1024 + 2) as u32),
                };
                let key = |rnd: &mut dyn FnMut(u64) -> u64| {
                    let k = mac(rnd(64) as u32) | (rnd(4) << 48);
                    if rnd(16) == 0 { k | 1 } else { k }
                };
                let len = 1 + rnd(40) as usize;
                let frames: Vec<(MacKey, MacKey)> =
                    (0..len).map(|_| (key(&mut rnd), key(&mut rnd))).collect();
                let port = if rnd(50) == 0 { UNKNOWN } else { rnd(4) as u16 };
                let learn = rnd(10) != 0;
                let mut out = vec![0u16; len];
                if len == 1 {
                    out[0] = a
                        .learn_and_look_up_one(port, tick, learn, frames[0].0, frames[0].1)
                        .0;
                } else {
                    a.learn_and_look_up(port, tick, learn, &frames, &mut out);
                }
                let want: Vec<u16> = frames
                    .iter()
                    .map(|&(dst, src)| {
                        if learn {
                            b.learn(src, port, tick);
                        }
                        if is_group(src) {
                            return GROUP_SOURCE;
                        }
                        b.lookup(dst, tick).unwrap_or(UNKNOWN)
                    })
                    .collect();
                assert_eq!(out, want, "age {age} round {round}");
                assert_eq!(a.stats(), b.stats(), "age {age} round {round}");
                assert_eq!(a.len(), b.len());
                if round % 20 == 19 {
                    assert_eq!(a.sweep(tick, 1 << 20), b.sweep(tick, 1 << 20));
                    let mut ea = a.entries(tick);
                    let mut eb = b.entries(tick);
                    ea.sort();
                    eb.sort();
                    assert_eq!(ea, eb, "age {age} round {round}");
                }
            }
        }
    }

    #[test]
    fn numbered_macs_sit_in_their_home_slots() {
        // 16 x 256 MACs numbered in their last bytes, as a lab or a generator assigns them:
        // every one lands in its own home slot, whatever the table's seed.
        for _ in 0..20 {
            let mut f = Fdb::new(8192, 1000);
            for p in 0..16u8 {
                for k in 0..256u32 {
                    let m = mac_key(&[2, 0x42, 0, p, (k >> 8) as u8, k as u8]);
                    assert_eq!(f.learn(m, p as u16, 0), Learned::New);
                }
            }
            let displaced = f
                .slots
                .iter()
                .enumerate()
                .filter(|&(i, &e)| e != EMPTY && f.home(entry_mac(e)) & f.mask != i)
                .count();
            assert_eq!(displaced, 0, "seed {:x}", f.seed);
        }
    }

    #[test]
    fn the_burst_pass_hashes_keys_as_the_table_does() {
        // The pass hashes a key as it comes (other bytes above its 48 bits included); the
        // rest of the table hashes the entry's MAC bits: the same home either way.
        let f = Fdb::new(8192, 1000);
        let mut rnd = crate::test_util::rng();
        for _ in 0..10_000 {
            let x = rnd(u64::MAX);
            assert_eq!(
                key_home(x, f.seed >> 16, f.shift),
                f.home(mac_bits(x & MAC_MASK)),
                "{x:x}"
            );
        }
    }

    #[test]
    fn a_pinned_mac_never_moves_never_ages_and_goes_with_its_port() {
        let mut f = Fdb::new(64, 100);
        // Learned from a wire port first; then the app holding it attaches.
        assert_eq!(f.learn(mac(1), 3, 0), Learned::New);
        f.pin(mac(1), 7).expect("pinned");
        assert_eq!(f.lookup(mac(1), 0), Some(7));
        assert_eq!(f.learned_on(3), 0, "the learned entry was taken over");
        assert_eq!(f.pinned_to(mac(1)), Some(7));
        // Wire frames claiming the MAC move it on no path.
        assert_eq!(f.learn(mac(1), 3, 10), Learned::Pinned);
        let mut out = [0u16; 2];
        f.learn_and_look_up(3, 20, true, &[(mac(2), mac(1)), (mac(1), mac(2))], &mut out);
        assert_eq!(out, [UNKNOWN, 7]);
        assert_eq!(f.learn_and_look_up_one(4, 20, true, mac(2), mac(1)).0, 3);
        assert_eq!(f.stats().pinned, 3);
        assert_eq!(f.stats().moves, 0);
        assert_eq!(f.lookup(mac(1), 20), Some(7));
        // It never ages, and the burst pass answers it in any window without a write.
        for now in [1_000u32, 1_000_000, u32::MAX - 5, 3] {
            f.sweep(now, 1 << 20);
            assert_eq!(f.lookup(mac(1), now), Some(7), "at {now}");
            let generation = f.generation();
            f.learn_and_look_up_one(5, now, false, mac(1), mac(9));
            assert_eq!(
                f.learn_and_look_up_one(5, now, false, mac(1), mac(9)),
                (7, true),
                "at {now}"
            );
            let mut out = [0u16; 1];
            f.learn_and_look_up(5, now, false, &[(mac(1), mac(9))], &mut out);
            assert_eq!(out, [7]);
            assert!(f.generation() - generation <= 1, "only a new window writes");
        }
        // It cannot be pinned or claimed elsewhere; nor can a group address be pinned.
        assert_eq!(f.pin(mac(1), 8), Err(PinError::Taken(7)));
        assert_eq!(f.claim(mac(1), 8), Err(PinError::Taken(7)));
        assert_eq!(f.pin(mac(1), 7), Ok(()));
        assert_eq!(f.pin(mac(2) | 1, 8), Err(PinError::NotUnicast));
        // It leaves with its port; then it is learned as any station.
        f.flush_port(7);
        assert_eq!(f.lookup(mac(1), 3), None);
        assert!(f.is_empty());
        assert_eq!(f.learn(mac(1), 3, 3), Learned::New);
    }

    #[test]
    fn a_claimed_mac_never_takes_a_station_learned_elsewhere() {
        let mut f = Fdb::new(64, 100);
        assert_eq!(f.learn(mac(1), 3, 0), Learned::New);
        assert_eq!(f.claim(mac(1), 7), Err(PinError::Held(3)));
        assert_eq!(f.lookup(mac(1), 0), Some(3), "the station keeps its port");
        assert_eq!(f.pinned_to(mac(1)), None);
        // A free MAC is claimed as it is pinned; claiming it again on its port is a no-op.
        assert_eq!(f.claim(mac(2), 7), Ok(()));
        assert_eq!(f.claim(mac(2), 7), Ok(()));
        assert_eq!(f.pinned_to(mac(2)), Some(7));
        assert_eq!(f.claim(mac(3) | 1, 7), Err(PinError::NotUnicast));
        // Once the station is gone from the table, the MAC is free to claim.
        f.sweep(1_000, usize::MAX);
        assert_eq!(f.claim(mac(1), 7), Ok(()));
        assert_eq!(f.lookup(mac(1), 1_000), Some(7));
    }

    #[test]
    fn pinned_entries_need_no_room_among_learned_ones_and_a_sighting_at_the_pin_tick_ages() {
        let mut f = Fdb::new(4, 100);
        for i in 0..4 {
            assert_eq!(f.learn(mac(i), 1, 0), Learned::New);
        }
        assert_eq!(f.learn(mac(4), 1, 0), Learned::Full);
        for p in 0..4 {
            f.pin(mac(100 + p), 10 + p as u16).expect("room for pins");
        }
        assert_eq!(f.len(), 8);
        // A sighting at the tick that marks pins is recorded a tick earlier: it ages.
        let mut g = Fdb::new(4, 100);
        assert_eq!(g.learn(mac(1), 1, PINNED), Learned::New);
        assert_eq!(g.lookup(mac(1), PINNED), Some(1));
        assert_eq!(g.lookup(mac(1), 99), None, "aged: it was no pin");
    }

    #[test]
    fn a_port_learns_at_most_its_limit_and_counts_the_rest() {
        let mut f = Fdb::new(1000, 100);
        f.set_port_limit(10);
        for i in 0..15 {
            f.learn(mac(i), 1, 0);
        }
        assert_eq!(f.learned_on(1), 10);
        assert_eq!(f.not_learned(1), 5);
        assert_eq!(f.stats().port_full, 5);
        assert_eq!(f.lookup(mac(12), 0), None, "flooded, not learned");
        // Other ports are not limited by port 1's stations.
        assert_eq!(f.learn(mac(100), 2, 0), Learned::New);
        // A station moving onto a port at its limit stays where it was.
        assert_eq!(f.learn(mac(100), 1, 1), Learned::PortFull);
        assert_eq!(f.lookup(mac(100), 1), Some(2));
        // The burst call counts the same way.
        let frames: Vec<(MacKey, MacKey)> = (20..30).map(|i| (mac(100), mac(i))).collect();
        let mut out = vec![0u16; frames.len()];
        f.learn_and_look_up(1, 2, true, &frames, &mut out);
        assert!(out.iter().all(|&d| d == 2));
        assert_eq!(f.not_learned(1), 16);
        assert_eq!(f.learned_on(1), 10);
        // Aging frees the port's room.
        f.sweep(200, 1 << 20);
        assert_eq!(f.learned_on(1), 0);
        assert_eq!(f.learn(mac(12), 1, 200), Learned::New);
        // Moves off a port free its room too.
        assert_eq!(f.learn(mac(12), 3, 201), Learned::Moved(1));
        assert_eq!(f.learned_on(1), 0);
        assert_eq!(f.learned_on(3), 1);
    }

    #[test]
    fn mac_keys_round_trip() {
        let m = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        assert_eq!(key_mac(mac_key(&m)), m);
        assert!(!is_group(mac_key(&m)));
        assert!(is_group(mac_key(&[0x33, 0x33, 0, 0, 0, 1])));
    }
}
