//! Convolution and GEMM with 16-bit activations (the int16 layers of mixed precision; any mix of
//! u8/i8/i16 input and output storage): per output pixel, the input window minus its zero point is
//! gathered once as i32, then every output channel's exact i64 dot product is saturated to i32 and
//! requantized as docs/semantics.md defines. A GEMM is the 1×1 case over [rows, 1, 1, k]. Few layers
//! run here, so this favours one simple exact loop over speed; rows are spread over the thread pool.
use super::dwconv::DwGeom;
use super::elementwise::IntElem;
use super::epilogue::Epilogue;
use super::pool;

pub struct WideConv<'a> {
    /// NHWC geometry; `c` is the input channels.
    pub g: DwGeom,
    /// Output channels.
    pub m: usize,
    pub groups: usize,
    pub x: *const u8,
    pub ex: IntElem,
    pub zx: i32,
    /// [m][kh][kw][c / groups]: weights minus their zero point.
    pub w: &'a [i32],
    pub bias: &'a [i32],
    pub epi: Epilogue<'a>,
    pub out: *mut u8,
    pub eo: IntElem,
}

// SAFETY: tasks read x and write disjoint output rows.
unsafe impl Sync for WideConv<'_> {}

impl WideConv<'_> {
    /// # Safety
    /// X must hold n·h·w·c elements of `ex` and out n·oh·ow·m of `eo`, not overlapping; `w` holds
    /// m·kh·kw·(c / groups) values and `bias` m.
    pub unsafe fn run(&self) {
        let g = self.g;
        pool::parallel_for(g.n * g.oh, &|t| {
            // SAFETY: row t of the output and the input rows it reads are inside the buffers.
            unsafe { self.row(t / g.oh, t % g.oh) }
        });
    }

    unsafe fn row(&self, b: usize, oy: usize) {
        let g = self.g;
        let (cg, mg) = (g.c / self.groups, self.m / self.groups);
        let taps = g.kh * g.kw;
        let mut patch = vec![0i32; taps * g.c];
        for ox in 0..g.ow {
            // Taps outside the input hold the zero point: 0 after subtracting it.
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let row = &mut patch[(ky * g.kw + kx) * g.c..][..g.c];
                    let iy = (oy * g.stride[0] + ky * g.dil[0]) as isize - g.pad[0] as isize;
                    let ix = (ox * g.stride[1] + kx * g.dil[1]) as isize - g.pad[1] as isize;
                    if iy < 0 || iy >= g.h as isize || ix < 0 || ix >= g.w as isize {
                        row.fill(0);
                        continue;
                    }
                    let base = ((b * g.h + iy as usize) * g.w + ix as usize) * g.c;
                    for (ci, v) in row.iter_mut().enumerate() {
                        // SAFETY: base + ci < n·h·w·c (run()'s contract).
                        *v = unsafe { self.ex.read(self.x, base + ci) } - self.zx;
                    }
                }
            }
            let obase = ((b * g.oh + oy) * g.ow + ox) * self.m;
            for o in 0..self.m {
                let c0 = (o / mg) * cg;
                let w = &self.w[o * taps * cg..][..taps * cg];
                let mut s = self.bias[o] as i64;
                for tap in 0..taps {
                    let xs = &patch[tap * g.c + c0..][..cg];
                    s += xs.iter().zip(&w[tap * cg..][..cg]).map(|(a, b)| *a as i64 * *b as i64).sum::<i64>();
                }
                let a = s.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
                // SAFETY: obase + o < n·oh·ow·m.
                unsafe { self.eo.write(self.out, obase + o, self.epi.value(a, o)) };
            }
        }
    }
}
