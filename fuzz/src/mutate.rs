//! A small seeded mutator for the CI run: bit flips, byte sets, interesting values, byte
//! inserts and deletes, block duplication and splices of two corpus entries. The same seed
//! gives the same inputs on every run, so a failure in CI repeats locally.

/// A xorshift64* generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Values that often sit on a boundary.
const INTERESTING: [u32; 12] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x8000_0000,
];

/// Makes inputs from a corpus.
#[derive(Debug, Clone)]
pub struct Mutator {
    rng: Rng,
    /// Longest input made.
    pub max_len: usize,
}

impl Mutator {
    /// A mutator from `seed`, making inputs of at most `max_len` bytes.
    pub fn new(seed: u64, max_len: usize) -> Self {
        Self {
            rng: Rng::new(seed),
            max_len,
        }
    }

    /// A new input: a corpus entry (or random bytes when the corpus is empty) with one to
    /// eight mutations applied.
    pub fn next(&mut self, corpus: &[Vec<u8>]) -> Vec<u8> {
        let mut v = if corpus.is_empty() {
            let n = self.rng.below(64);
            (0..n).map(|_| self.rng.next_u64() as u8).collect()
        } else {
            corpus[self.rng.below(corpus.len())].clone()
        };
        let rounds = 1 + self.rng.below(8);
        for _ in 0..rounds {
            self.mutate(&mut v, corpus);
        }
        v.truncate(self.max_len);
        v
    }

    fn mutate(&mut self, v: &mut Vec<u8>, corpus: &[Vec<u8>]) {
        let r = &mut self.rng;
        match r.below(8) {
            0 if !v.is_empty() => {
                let i = r.below(v.len());
                v[i] ^= 1 << r.below(8);
            }
            1 if !v.is_empty() => {
                let i = r.below(v.len());
                v[i] = r.next_u64() as u8;
            }
            2 if !v.is_empty() => {
                // An interesting value, 1, 2 or 4 bytes wide, either byte order.
                let x = INTERESTING[r.below(INTERESTING.len())];
                let w = [1, 2, 4][r.below(3)];
                let b = if r.below(2) == 0 {
                    x.to_le_bytes()
                } else {
                    x.to_be_bytes()
                };
                let i = r.below(v.len());
                for (k, byte) in b[..w].iter().enumerate() {
                    if let Some(d) = v.get_mut(i + k) {
                        *d = *byte;
                    }
                }
            }
            3 => {
                let i = r.below(v.len() + 1);
                let n = 1 + r.below(4);
                for _ in 0..n {
                    v.insert(i, r.next_u64() as u8);
                }
            }
            4 if !v.is_empty() => {
                let i = r.below(v.len());
                let n = (1 + r.below(8)).min(v.len() - i);
                v.drain(i..i + n);
            }
            5 if !v.is_empty() => {
                // Duplicate a block somewhere else.
                let i = r.below(v.len());
                let n = (1 + r.below(16)).min(v.len() - i);
                let block = v[i..i + n].to_vec();
                let at = r.below(v.len() + 1);
                v.splice(at..at, block);
            }
            6 if !corpus.is_empty() => {
                // Splice: our head, another entry's tail.
                let o = &corpus[r.below(corpus.len())];
                let cut = r.below(v.len() + 1);
                let from = r.below(o.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(&o[from..]);
            }
            _ => {
                // Small arithmetic on one byte.
                if !v.is_empty() {
                    let i = r.below(v.len());
                    let d = 1 + r.below(16) as u8;
                    v[i] = if r.below(2) == 0 {
                        v[i].wrapping_add(d)
                    } else {
                        v[i].wrapping_sub(d)
                    };
                }
            }
        }
    }
}
