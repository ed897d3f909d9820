//! Memory planning: every buffer (activation, temporary) gets an offset in one arena so that buffers
//! alive at the same step never overlap. Greedy by size, largest first, each at the lowest offset that
//! fits between the live buffers already placed (the classic offset-assignment heuristic).

/// A buffer to place: its size and the first and last step (inclusive) during which it is alive.
#[derive(Clone, Copy, Debug)]
pub struct Interval {
    pub bytes: usize,
    pub first: usize,
    pub last: usize,
}

/// Bytes after every buffer: GEMM microkernels read up to 3 bytes past a row of K bytes.
pub const SLACK: usize = 64;
pub const ALIGN: usize = 64;

/// Offsets for each interval and the arena size.
pub fn assign(bufs: &[Interval]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..bufs.len()).collect();
    order.sort_by(|&a, &b| bufs[b].bytes.cmp(&bufs[a].bytes).then(a.cmp(&b)));
    let mut offsets = vec![0usize; bufs.len()];
    let mut placed: Vec<usize> = Vec::new();
    let mut total = 0;
    for i in order {
        let b = bufs[i];
        let size = (b.bytes + SLACK).div_ceil(ALIGN) * ALIGN;
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| bufs[j].first <= b.last && b.first <= bufs[j].last)
            .map(|&j| (offsets[j], offsets[j] + (bufs[j].bytes + SLACK).div_ceil(ALIGN) * ALIGN))
            .collect();
        busy.sort();
        let mut at = 0;
        for (s, e) in busy {
            if at + size <= s {
                break;
            }
            at = at.max(e);
        }
        offsets[i] = at;
        total = total.max(at + size);
        placed.push(i);
    }
    (offsets, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_buffers_never_overlap_and_dead_ones_are_reused() {
        let bufs = [
            Interval { bytes: 1000, first: 0, last: 1 },
            Interval { bytes: 1000, first: 1, last: 2 },
            Interval { bytes: 1000, first: 2, last: 3 },
            Interval { bytes: 10, first: 0, last: 3 },
        ];
        let (off, total) = assign(&bufs);
        for i in 0..bufs.len() {
            for j in 0..i {
                let live = bufs[i].first <= bufs[j].last && bufs[j].first <= bufs[i].last;
                let (a, b) = (off[i]..off[i] + bufs[i].bytes, off[j]..off[j] + bufs[j].bytes);
                if live {
                    assert!(a.end <= b.start || b.end <= a.start, "{i} and {j} overlap");
                }
            }
            assert_eq!(off[i] % ALIGN, 0);
        }
        // Buffers 0 and 2 are never alive together: they share memory.
        assert_eq!(off[0], off[2]);
        assert!(total < 3 * 1088 + 128, "{total}");
    }
}
