//! How a channels-last f32 convolution (fnhwc::FConvNhwc) is cut into tasks of micro-tiles, and the
//! run-time state its tasks share (`FConvRun`). Two loop nests walk the same tasks: `FConvRun::task` in
//! Rust, and the task function codegen generates from `FConvSchedule` (codegen/src/nest.rs), which
//! addresses the windows itself and calls `FConvRun::tile` per micro-tile (through `qcc_uk_fconv_nhwc`).
use super::dwconv::DwGeom;
use super::fnhwc::{inside, panel_width, FConvNhwc, Part, Prefetch, NB, PART_BYTES, R, SMALL_WEIGHTS};
use super::{pool, Isa};

thread_local! {
    /// The calling thread's padded channels-last copy of an NCHW input, kept between calls.
    static PADDED: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The static shape of a convolution's tasks: everything but the number of pixel chunks, which follows
/// the thread count at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FConvSchedule {
    /// The geometry of the product's channels-last input: for an NCHW input, its padded copy (no pads).
    pub g: DwGeom,
    /// Floats between the product's input pixels.
    pub ldx: usize,
    /// Whether each window is read as kh runs of kw·c floats (the padded copy, undilated columns) instead
    /// of one run of c floats per tap.
    pub rows: bool,
    /// Window runs (segments) per pixel and floats per run.
    pub segs: usize,
    pub seg: usize,
    pub pixels: usize,
    pub tiles: usize,
    pub panels: usize,
    /// Weights that stay in L2 are all read by every tile (`tile_major`: each tile's window rows stay in
    /// L1 over the panels, its output pixels are written whole); larger ones go panel by panel, a task
    /// taking one panel (band) over a chunk of pixels.
    pub tile_major: bool,
    pub bands: usize,
    /// Segments per K part: panel by panel, K is taken in parts of at most PART_BYTES of a panel's
    /// weights, so a part stays in L2 over the chunk's tiles; partial sums wait in the output (NHWC only).
    pub span: usize,
}

impl FConvSchedule {
    pub fn new(c: &FConvNhwc) -> FConvSchedule {
        FConvSchedule::of(c.isa, c.g, c.ldx, c.nchw, c.m, c.w.len(), c.cso)
    }

    /// The schedule of an FConvNhwc with these fields (w_len: its packed weights' floats).
    pub fn of(isa: Isa, g0: DwGeom, ldx: usize, nchw: bool, m: usize, w_len: usize, cso: usize) -> FConvSchedule {
        // An NCHW input is copied channels-last into its padded extent (zeros around it): every window
        // then lies inside, and with undilated columns each kernel row of a window is one contiguous run
        // of kw·c floats, so the product reads kh runs per pixel (the stem's 3 input channels would
        // otherwise make runs of 3).
        let (g, ldx, rows) = if nchw {
            let h2 = (g0.oh.max(1) - 1) * g0.stride[0] + (g0.kh - 1) * g0.dil[0] + 1;
            let w2 = (g0.ow.max(1) - 1) * g0.stride[1] + (g0.kw - 1) * g0.dil[1] + 1;
            (DwGeom { h: h2, w: w2, pad: [0, 0], ..g0 }, g0.c, g0.dil[1] == 1)
        } else {
            (g0, ldx, false)
        };
        let (segs, seg) = if rows { (g.kh, g.kw * g.c) } else { (g.kh * g.kw, g.c) };
        let pixels = g.oh * g.ow;
        let (tiles, panels) = (pixels.div_ceil(R), m.div_ceil(NB));
        let tile_major = w_len * 4 <= SMALL_WEIGHTS;
        let bands = if tile_major { 1 } else { panels };
        let span = if !tile_major && cso == 1 && isa == Isa::Avx512Vnni { (PART_BYTES / (4 * NB * seg)).max(1) } else { segs };
        FConvSchedule { g, ldx, rows, segs, seg, pixels, tiles, panels, tile_major, bands, span }
    }

    /// Chunks of tiles per band for `threads` threads: at least four tasks per thread, so they share the
    /// work.
    pub fn chunks(&self, threads: usize) -> usize {
        if self.tile_major {
            (4 * threads).min(self.tiles).max(1)
        } else {
            (4 * threads).div_ceil(self.panels).clamp(1, self.tiles.max(1))
        }
    }

    /// Task t of `chunks` chunks: its band (panel) and tiles t0..t1.
    pub fn task(&self, chunks: usize, t: usize) -> (usize, usize, usize) {
        let (chunk, band) = (t / self.bands, t % self.bands);
        (band, chunk * self.tiles / chunks, (chunk + 1) * self.tiles / chunks)
    }
}

/// A convolution ready to run: the product over its channels-last input (the padded copy of an NCHW
/// one), its schedule, and the zeros that taps outside the image read (every tap of a tile then has a
/// pointer per pixel and the inner loop has no edge cases).
pub struct FConvRun<'a> {
    pub conv: FConvNhwc<'a>,
    pub s: FConvSchedule,
    zeros: Vec<f32>,
}

// SAFETY: as FConvNhwc: tasks read x, w and res and write disjoint (pixel range, panel) blocks of out.
unsafe impl Sync for FConvRun<'_> {}

impl FConvNhwc<'_> {
    /// # Safety
    /// x must hold g.h·g.w pixels ldx floats apart (g.c read from each), out and res g.oh·g.ow pixels ldo
    /// apart (m channels cso apart written or read), w pack_conv_weights' layout for these shapes.
    pub unsafe fn run(&self) {
        // SAFETY: run()'s contract.
        unsafe {
            self.prepared(|r| {
                let chunks = r.s.chunks(pool::threads());
                pool::parallel_for(r.s.bands * chunks, &|t| r.task(chunks, t));
            })
        }
    }

    /// Calls `f` with the convolution ready to run (nothing when it has no output).
    ///
    /// # Safety
    /// As run().
    pub unsafe fn prepared(&self, f: impl FnOnce(&FConvRun)) {
        if self.g.oh * self.g.ow == 0 || self.m == 0 {
            return;
        }
        let s = FConvSchedule::new(self);
        let zeros = vec![0f32; s.seg];
        if !self.nchw {
            f(&FConvRun { conv: *self, s, zeros });
            return;
        }
        let (g, (h2, w2)) = (self.g, (s.g.h, s.g.w));
        let mut buf = PADDED.take();
        buf.clear();
        buf.resize(h2 * w2 * g.c, 0.0);
        for c in 0..g.c {
            for iy in 0..g.h.min(h2.saturating_sub(g.pad[0])) {
                for ix in 0..g.w.min(w2.saturating_sub(g.pad[1])) {
                    // SAFETY: (c, iy, ix) is inside the NCHW image (run()'s contract).
                    buf[((iy + g.pad[0]) * w2 + ix + g.pad[1]) * g.c + c] = unsafe { *self.x.add((c * g.h + iy) * g.w + ix) };
                }
            }
        }
        let conv = FConvNhwc { g: s.g, x: buf.as_ptr(), ldx: s.ldx, nchw: false, ..*self };
        f(&FConvRun { conv, s, zeros });
        PADDED.set(buf);
    }
}

impl FConvRun<'_> {
    /// Task t of `chunks` chunks: K part by K part, every tile of its chunk (for its band).
    ///
    /// # Safety
    /// As FConvNhwc::run, t < bands · chunks.
    pub unsafe fn task(&self, chunks: usize, t: usize) {
        let s = &self.s;
        let (_, t0, t1) = s.task(chunks, t);
        let mut ptrs = vec![[self.zeros.as_ptr(); R]; s.segs];
        for s0 in (0..s.segs).step_by(s.span) {
            for tile in t0..t1 {
                // SAFETY: the caller's contract.
                unsafe {
                    self.window_ptrs(tile, &mut ptrs);
                    self.tile(&ptrs, chunks, t, tile, s0);
                }
            }
        }
    }

    /// The window runs of `tile`'s pixels p0..p0 + n (rows past n repeat pixel p0 + n − 1: computed,
    /// never stored).
    unsafe fn window_ptrs(&self, tile: usize, ptrs: &mut [[*const f32; R]]) {
        let (p0, ow) = (tile * R, self.s.g.ow);
        let n = R.min(self.s.pixels - p0);
        for r in 0..R {
            let p = p0 + r.min(n - 1);
            // SAFETY: the pointers of one pixel, `r` of each segment's R.
            unsafe { self.pixel_ptrs(p / ow, p % ow, ptrs.as_mut_ptr().cast::<*const f32>().add(r)) };
        }
    }

    /// Writes the segment pointers of output pixel (oy, ox) at ptrs, R pointers apart: per kernel row of
    /// the padded input, or per tap with `zeros` for taps in the padding.
    ///
    /// # Safety
    /// (oy, ox) is an output pixel; ptrs has room for segs pointers R apart.
    pub unsafe fn pixel_ptrs(&self, oy: usize, ox: usize, ptrs: *mut *const f32) {
        let (g, x, ldx) = (&self.s.g, self.conv.x, self.s.ldx);
        // SAFETY (the writes): the caller's room; (the reads) every address is a pixel of the input.
        unsafe {
            if self.s.rows {
                for ky in 0..g.kh {
                    let (iy, ix) = (oy * g.stride[0] + ky * g.dil[0], ox * g.stride[1]);
                    *ptrs.add(ky * R) = x.add((iy * g.w + ix) * ldx);
                }
                return;
            }
            let (ky0, ky1) = inside(oy, g.stride[0], g.dil[0], g.pad[0], g.h, g.kh);
            let (kx0, kx1) = inside(ox, g.stride[1], g.dil[1], g.pad[1], g.w, g.kw);
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    *ptrs.add((ky * g.kw + kx) * R) = if (ky0..ky1).contains(&ky) && (kx0..kx1).contains(&kx) {
                        let iy = oy * g.stride[0] + ky * g.dil[0] - g.pad[0];
                        let ix = ox * g.stride[1] + kx * g.dil[1] - g.pad[1];
                        x.add((iy * g.w + ix) * ldx)
                    } else {
                        self.zeros.as_ptr()
                    };
                }
            }
        }
    }

    /// Micro-tile `tile` of task t (of `chunks` chunks) for the K part starting at segment s0, its
    /// pixels' windows given by ptrs (every segment): the task's panel, or every panel (tile-major).
    ///
    /// # Safety
    /// As task(); tile is one of the task's, s0 a part's first segment, every pointer addresses seg
    /// readable floats.
    pub unsafe fn tile(&self, ptrs: &[[*const f32; R]], chunks: usize, t: usize, tile: usize, s0: usize) {
        let s = &self.s;
        let (band, t0, t1) = s.task(chunks, t);
        let s1 = (s0 + s.span).min(s.segs);
        let kfull = s.segs * s.seg;
        let part = Part { k0: s0 * s.seg, kfull, first: s0 == 0, last: s1 == s.segs };
        // Panel by panel, the weights come from memory (too large to stay in a cache between runs), so
        // each tile asks for its share of the weights packed after this part's (the next part, or the
        // next panel's first), one line every few k steps.
        let pf = if s.tile_major {
            Prefetch { at: 0, lines: 0 }
        } else {
            let width = panel_width(self.conv.m, band);
            let at = band * kfull * NB + s1 * s.seg * width;
            let lines = ((s1 - s0) * s.seg * width).min(self.conv.w.len() - at) / 16;
            let (l0, l1) = ((tile - t0) * lines / (t1 - t0), (tile - t0 + 1) * lines / (t1 - t0));
            Prefetch { at: at + 16 * l0, lines: l1 - l0 }
        };
        let (p0, n) = (tile * R, R.min(s.pixels - tile * R));
        for j in if s.tile_major { 0..s.panels } else { band..band + 1 } {
            // SAFETY: every pointer addresses seg readable floats; the tile's pixels are inside out.
            unsafe { self.conv.tile(j, &ptrs[s0..s1], s.seg, part, p0, n, pf) };
        }
    }
}
