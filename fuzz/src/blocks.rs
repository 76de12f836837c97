//! `grant_pool::Blocks::frames`, the whole-burst branch-free check, against a check of each
//! frame on its own.

use grant_pool::{BLOCK_HEAD, Memory, PoolId};

use crate::Input;

/// Builds a view of `count` blocks of `1 << shift` bytes and a burst of words from `data`;
/// `frames` accepts the burst exactly when every frame names the pool and a block of the
/// view and has a length within the range, and an accepted burst reads each block's head.
pub fn frames(data: &[u8]) {
    let mut inp = Input::new(data);
    let shift = 4 + inp.below(9) as u32; // 16 B .. 4 KiB blocks
    let count = 1 + inp.below(64) as u32;
    let mem = Memory::local((count as usize) << shift);
    let blocks = mem.blocks(shift, count).expect("blocks fit");
    for i in 0..count {
        let mut head = [0u8; BLOCK_HEAD];
        head[..4].copy_from_slice(&i.to_le_bytes());
        head[4] = 0xb1;
        blocks.write_head(i, &head).expect("writable");
    }
    let pool = PoolId(inp.u8());
    let (a, b) = (inp.u16(), inp.u16());
    let lens = if inp.u8() & 1 == 0 {
        a..=b
    } else {
        a.min(b)..=a.max(b)
    };
    let n = inp.below(40);
    let words: Vec<[u32; 2]> = (0..n)
        .map(|_| {
            // Mostly near the bounds: the pool's own id, indices about the last block,
            // lengths about the range's ends; any word sometimes.
            let k = inp.u8();
            let handle = match k % 4 {
                0 => inp.u32(),
                _ => {
                    let p = if k & 0x10 != 0 { inp.u8() } else { pool.0 };
                    (p as u32) << 24 | (inp.u8() as u32 % (count + 3))
                }
            };
            let len = match (k >> 2) % 4 {
                0 => inp.u32(),
                1 => u32::from(*lens.start())
                    .wrapping_add(inp.u8() as u32)
                    .wrapping_sub(2),
                2 => u32::from(*lens.end())
                    .wrapping_add(inp.u8() as u32 % 4)
                    .wrapping_sub(2),
                _ => (inp.u32() & 0xffff_0000) | u32::from(*lens.start()),
            };
            [handle, len]
        })
        .collect();
    let each = words.iter().all(|w| {
        let len = (w[1] & 0xffff) as u16;
        w[0] >> 24 == pool.0 as u32 && (w[0] & 0x00ff_ffff) < count && lens.contains(&len)
    });
    let burst = blocks.frames(&words, pool, lens.clone());
    assert_eq!(
        burst.is_some(),
        each,
        "burst check disagrees with the per-frame check: {count} blocks, pool {}, lens {lens:?}, words {words:x?}",
        pool.0
    );
    if let Some(b) = burst {
        assert_eq!(b.len(), words.len());
        for (h, w) in b.heads().zip(&words) {
            let idx = w[0] & 0x00ff_ffff;
            assert_eq!(h[..4], idx.to_le_bytes(), "head of block {idx}");
            assert_eq!(h[4], 0xb1);
        }
        for (i, w) in words.iter().enumerate() {
            let (lo, _) = b.words_of::<0, 8>(i);
            assert_eq!(lo as u32, w[0] & 0x00ff_ffff);
        }
    }
}
