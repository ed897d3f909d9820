//! f32 max and average pooling over planes (NCHW) as row kernels (rows.rs): every plane (image ×
//! channel) is an image of one channel, so the row loop codegen generates (codegen/src/nest.rs) walks
//! the planes' output rows and calls these row microkernels. Average pooling sums each window in the
//! interpreter's order (nn::avg_pool), so its results are identical; max pooling's maximum is exact.
use super::dwconv::{DwGeom, PoolTaps};
use super::fconv::{row_spans, split_phases};
use super::multiversion;
use super::rows::{RowKernel, RowShape};
use super::Isa;
use std::cell::Cell;

thread_local! {
    /// The calling thread's phase array of a strided row, kept between rows.
    static PHASES: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// The geometry of `g`'s planes as images of one channel.
fn planes(g: &DwGeom) -> DwGeom {
    DwGeom { n: g.n * g.c, c: 1, ..*g }
}

/// Max pooling of NCHW f32 (padding never wins): x holds g.n·g.c planes of g.h·g.w, out of g.oh·g.ow.
pub struct FMaxPool {
    pub isa: Isa,
    /// Over planes (`c` = 1).
    g: DwGeom,
    /// row_spans of g: per kx, the output columns whose tap lies inside the row.
    spans: Vec<(usize, usize, usize)>,
    x: *const f32,
    out: *mut f32,
}

// SAFETY: rows read x and write disjoint rows of out.
unsafe impl Sync for FMaxPool {}

impl FMaxPool {
    /// The kernel of NCHW geometry `g` (n images of c channels).
    pub fn new(isa: Isa, g: DwGeom, x: *const f32, out: *mut f32) -> FMaxPool {
        let g = planes(&g);
        FMaxPool { isa, g, spans: row_spans(&g), x, out }
    }
}

impl RowKernel for FMaxPool {
    fn shape(&self) -> RowShape {
        RowShape::of(&self.g, 4, 4)
    }
    fn input(&self) -> *const u8 {
        self.x as *const u8
    }
    fn output(&self) -> *mut u8 {
        self.out as *mut u8
    }

    unsafe fn row(&self, x: *const u8, out: *mut u8, oy: usize) {
        let g = &self.g;
        // SAFETY: the trait's contract: one input plane and one output row.
        let (src, dst) =
            unsafe { (std::slice::from_raw_parts(x as *const f32, g.h * g.w), std::slice::from_raw_parts_mut(out as *mut f32, g.ow)) };
        let mut phases = PHASES.take();
        phases.resize(g.stride[1] * g.w.div_ceil(g.stride[1]), 0.0);
        max_row(self.isa, src, dst, g, &self.spans, &mut phases, oy);
        PHASES.set(phases);
    }
}

multiversion!(
    fn max_row(src: &[f32], o: &mut [f32], g: &DwGeom, spans: &[(usize, usize, usize)], phases: &mut [f32], oy: usize) {
        // Per kernel row inside the plane, a running maximum per tap over a contiguous span of output
        // columns (a strided row split into its phases first). f32::max keeps the other operand when
        // one is NaN: a NaN never wins, as in the interpreter; padding is −∞.
        let s = g.stride[1];
        o.fill(f32::NEG_INFINITY);
        for ky in 0..g.kh {
            let iy = (oy * g.stride[0] + ky * g.dil[0]) as isize - g.pad[0] as isize;
            if iy < 0 || iy >= g.h as isize {
                continue;
            }
            let row = &src[iy as usize * g.w..(iy as usize + 1) * g.w];
            if s > 1 {
                split_phases(row, s, phases);
            }
            for &(lo, hi, start) in spans {
                if hi > lo {
                    let from = if s == 1 { &row[start..] } else { &phases[start..] };
                    for (d, v) in o[lo..hi].iter_mut().zip(from) {
                        *d = d.max(*v);
                    }
                }
            }
        }
    }
);

/// Average pooling of NCHW f32 with the interpreter's divisor rule (nn::avg_pool): with `include_pad`
/// the taps inside the padded extent (end pads in `taps`), else only taps inside the input.
pub struct FAvgPool {
    /// Over planes (`c` = 1).
    g: DwGeom,
    include_pad: bool,
    taps: PoolTaps,
    x: *const f32,
    out: *mut f32,
}

// SAFETY: rows read x and write disjoint rows of out.
unsafe impl Sync for FAvgPool {}

impl FAvgPool {
    /// The kernel of NCHW geometry `g` (n images of c channels) with end pads `pe`.
    pub fn new(g: DwGeom, pe: [usize; 2], include_pad: bool, x: *const f32, out: *mut f32) -> FAvgPool {
        let g = planes(&g);
        FAvgPool { g, include_pad, taps: g.avg_pool_taps(pe), x, out }
    }
}

impl RowKernel for FAvgPool {
    fn shape(&self) -> RowShape {
        RowShape::of(&self.g, 4, 4)
    }
    fn input(&self) -> *const u8 {
        self.x as *const u8
    }
    fn output(&self) -> *mut u8 {
        self.out as *mut u8
    }

    unsafe fn row(&self, x: *const u8, out: *mut u8, oy: usize) {
        let (g, (rows, cols)) = (&self.g, &self.taps);
        // SAFETY: the trait's contract: one input plane and one output row.
        let (plane, dst) =
            unsafe { (std::slice::from_raw_parts(x as *const f32, g.h * g.w), std::slice::from_raw_parts_mut(out as *mut f32, g.ow)) };
        let (ry, py) = &rows[oy];
        for (d, (cx, px)) in dst.iter_mut().zip(cols) {
            let mut sum = 0f32;
            for iy in ry {
                for ix in cx {
                    sum += plane[iy * g.w + ix];
                }
            }
            let count = if self.include_pad { py * px } else { ry.len() * cx.len() };
            *d = if count > 0 { sum / count as f32 } else { 0.0 };
        }
    }
}
