//! f32 max pooling over planes (NCHW) as a row kernel (rows.rs): every plane (image × channel) is an
//! image of one channel, so the row loop codegen generates (codegen/src/nest.rs) walks the planes'
//! output rows and calls this row microkernel; the maximum is exact. Average pooling over planes is
//! fnhwc::FAvgPool over the same one-channel images (`planes`).
use super::dwconv::DwGeom;
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
pub fn planes(g: &DwGeom) -> DwGeom {
    DwGeom { n: g.n * g.c, c: 1, ..*g }
}

/// Max pooling of NCHW f32 (padding never wins): x holds g.n·g.c planes of g.h·g.w, out of g.oh·g.ow.
pub struct FMaxPool {
    isa: Isa,
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
