//! Integer pooling kernels on NHWC activations (global average, max, average) and the requantizing row
//! copy that concatenation is made of. Each equals its interpreter op (runtime/src/qops.rs) exactly.
use super::dwconv::{DwGeom, PoolTaps};
use super::elementwise::{quantize_one, IntElem, Ptr};
use super::pool;
use super::rows::{RowKernel, RowShape};
use crate::quant::quantize_value;

/// Global average pooling of NHWC integers: y[n, c] = quantize((f32(Σ (x − zx)) · sx) / f32(hw)).
///
/// # Safety
/// X holds n·hw·c elements, out n·c.
#[allow(clippy::too_many_arguments)]
pub unsafe fn qgap(
    x: *const u8,
    ex: IntElem,
    n: usize,
    hw: usize,
    c: usize,
    sx: f32,
    zx: i32,
    out: *mut u8,
    eo: IntElem,
    sy: f32,
    zy: i32,
    lo: i32,
    hi: i32,
) {
    let mut sums = vec![0i64; c];
    for b in 0..n {
        sums.fill(0);
        for p in 0..hw {
            for (ch, s) in sums.iter_mut().enumerate() {
                // SAFETY: inside x.
                *s += unsafe { ex.read(x, (b * hw + p) * c + ch) } as i64 - zx as i64;
            }
        }
        for (ch, s) in sums.iter().enumerate() {
            let v = quantize_value((*s as f32 * sx) / hw as f32, sy, zy, lo as i64, hi as i64);
            // SAFETY: inside out.
            unsafe { eo.write(out, b * c + ch, v as i32) };
        }
    }
}

/// Max pooling of NHWC integers (padding never wins; an all-padding window gives the storage minimum,
/// as in the interpreter). A row kernel: x holds n·h·w·c elements, out n·oh·ow·c.
pub struct QMaxPool {
    pub x: *const u8,
    pub elem: IntElem,
    pub g: DwGeom,
    pub out: *mut u8,
}

// SAFETY: rows read x and write disjoint rows of out.
unsafe impl Sync for QMaxPool {}

/// One output row of max pooling for element type T, channels innermost so the max vectorizes.
#[inline(always)]
fn max_row<T: Copy + Ord>(x: &[T], out: &mut [T], g: DwGeom, oy: usize, min: T) {
    let c = g.c;
    for ox in 0..g.ow {
        let best = &mut out[ox * c..(ox + 1) * c];
        best.fill(min);
        for ky in 0..g.kh {
            let iy = (oy * g.stride[0] + ky * g.dil[0]) as isize - g.pad[0] as isize;
            if iy < 0 || iy >= g.h as isize {
                continue;
            }
            for kx in 0..g.kw {
                let ix = (ox * g.stride[1] + kx * g.dil[1]) as isize - g.pad[1] as isize;
                if ix < 0 || ix >= g.w as isize {
                    continue;
                }
                let base = (iy as usize * g.w + ix as usize) * c;
                for (m, v) in best.iter_mut().zip(&x[base..base + c]) {
                    *m = (*m).max(*v);
                }
            }
        }
    }
}

impl RowKernel for QMaxPool {
    fn shape(&self) -> RowShape {
        RowShape::of(&self.g, self.elem.size(), self.elem.size())
    }
    fn input(&self) -> *const u8 {
        self.x
    }
    fn output(&self) -> *mut u8 {
        self.out
    }

    unsafe fn row(&self, x: *const u8, out: *mut u8, oy: usize) {
        let g = self.g;
        let (xlen, olen) = (g.h * g.w * g.c, g.ow * g.c);
        // SAFETY: the trait's contract: one input image and one output row of elem.
        unsafe {
            match self.elem {
                IntElem::U8 => max_row(std::slice::from_raw_parts(x, xlen), std::slice::from_raw_parts_mut(out, olen), g, oy, 0u8),
                IntElem::I8 => max_row(
                    std::slice::from_raw_parts(x as *const i8, xlen),
                    std::slice::from_raw_parts_mut(out as *mut i8, olen),
                    g,
                    oy,
                    i8::MIN,
                ),
                IntElem::I16 => max_row(
                    std::slice::from_raw_parts(x as *const i16, xlen),
                    std::slice::from_raw_parts_mut(out as *mut i16, olen),
                    g,
                    oy,
                    i16::MIN,
                ),
            }
        }
    }
}

/// Average pooling of NHWC integers: per window the exact sum of (x − zx) over the taps inside the input,
/// then quantize((f32(sum) · sx) / f32(divisor)) into (sy, zy, lo, hi). A row kernel: x holds n·h·w·c
/// elements of ex, out n·oh·ow·c of eo.
pub struct QAvgPool {
    pub x: *const u8,
    pub ex: IntElem,
    pub g: DwGeom,
    pub include_pad: bool,
    pub sx: f32,
    pub zx: i32,
    pub out: *mut u8,
    pub eo: IntElem,
    pub q: (f32, i32, i32, i32),
    /// g.avg_pool_taps for the end pads.
    pub taps: PoolTaps,
}

// SAFETY: rows read x and write disjoint rows of out.
unsafe impl Sync for QAvgPool {}

impl RowKernel for QAvgPool {
    fn shape(&self) -> RowShape {
        RowShape::of(&self.g, self.ex.size(), self.eo.size())
    }
    fn input(&self) -> *const u8 {
        self.x
    }
    fn output(&self) -> *mut u8 {
        self.out
    }

    unsafe fn row(&self, x: *const u8, out: *mut u8, oy: usize) {
        let (g, (rows, cols), (sy, zy, lo, hi)) = (&self.g, &self.taps, self.q);
        let (ry, py) = &rows[oy];
        let mut sums = vec![0i32; g.c];
        for (ox, (cx, px)) in cols.iter().enumerate() {
            sums.fill(0);
            for iy in ry {
                for ix in cx {
                    let base = (iy * g.w + ix) * g.c;
                    for (ch, s) in sums.iter_mut().enumerate() {
                        // SAFETY: inside the image. Window sums of 16-bit values fit i32 for windows below
                        // 2^15 taps.
                        *s += unsafe { self.ex.read(x, base + ch) };
                    }
                }
            }
            let inside = (ry.len() * cx.len()) as i32;
            let count = if self.include_pad { py * px } else { ry.len() * cx.len() };
            for (ch, s) in sums.iter().enumerate() {
                let r = if count > 0 { ((s - inside * self.zx) as f32 * self.sx) / count as f32 } else { 0.0 };
                let v = quantize_one(r, sy, zy, lo, hi);
                // SAFETY: inside the output row.
                unsafe { self.eo.write(out, ox * g.c + ch, v) };
            }
        }
    }
}

/// `rows` rows of `len` elements from src (stride len) into dst (stride dst_stride, from element dst_off),
/// each requantized: quantize((x − zs) · ss) with the destination's parameters; with `copy` = the element
/// size, a plain copy (f32 values, or integers whose type and parameters are the destination's).
pub struct RequantRows {
    pub copy: usize,
    pub rows: usize,
    pub len: usize,
    pub src: (*const u8, IntElem, f32, i32),
    pub dst: (*mut u8, IntElem, f32, i32),
    pub dst_stride: usize,
    pub dst_off: usize,
    pub lo: i32,
    pub hi: i32,
}

// SAFETY: rows write disjoint ranges of dst and only read src.
unsafe impl Sync for RequantRows {}

impl RequantRows {
    ///
    /// # Safety
    /// src holds rows·len elements, dst rows·dst_stride.
    pub unsafe fn run(&self) {
        let (sp, dp) = (Ptr(self.src.0 as *mut u8), Ptr(self.dst.0));
        pool::parallel_for(self.rows, &|r| {
            let (from, to) = (r * self.len, r * self.dst_stride + self.dst_off);
            // SAFETY: row r of src and its slot in dst (the caller's contract).
            unsafe {
                if self.copy > 0 {
                    let es = self.copy;
                    std::ptr::copy_nonoverlapping(sp.get().add(from * es), dp.get().add(to * es), self.len * es);
                } else {
                    for i in 0..self.len {
                        let v = (self.src.1.read(sp.get(), from + i) - self.src.3) as f32 * self.src.2;
                        self.dst.1.write(dp.get(), to + i, quantize_one(v, self.dst.2, self.dst.3, self.lo, self.hi));
                    }
                }
            }
        });
    }
}
