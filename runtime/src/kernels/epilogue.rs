//! Requantization of accumulators into stored 8-bit integers, the fused epilogue of qconv and qgemm
//! (docs/semantics.md): y = clamp(rne(f32(acc) * m[c]) + zy, L, H) (plus a residual's term before the
//! rounding), or the float path for activations that are not clamps.
use super::elementwise::{clamp_to_int, IntElem};
use crate::quant::quantize_value;
use qcc_ir::Act;

/// Restores the interpreter's saturation for a channel whose bias is near the i32 limit: `sat` is +1 (or
/// −1) when the true accumulator is known to be positive (negative) — the bias dominates every possible
/// sum — so a wrapped negative (positive) i32 means the true value passed i32::MAX (MIN).
#[inline(always)]
pub fn saturate(v: i32, sat: i32) -> i32 {
    if sat > 0 && v < 0 {
        i32::MAX
    } else if sat < 0 && v > 0 {
        i32::MIN
    } else {
        v
    }
}

/// The float path: y = quantize(act(f32(acc) * acc_scale[c])).
#[derive(Clone, Copy, Debug)]
pub struct FloatAct<'a> {
    pub act: Act,
    pub acc_scale: &'a [f32],
    pub out_scale: f32,
}

/// A qconv's residual input, stored like the output ([rows][channels], row stride `ld` elements): its
/// term f32(v − zp) · mult joins the product before rounding (f32(v − zp) · scale on the float path).
#[derive(Clone, Copy, Debug)]
pub struct ResidualIn {
    pub ptr: *const u8,
    pub elem: IntElem,
    pub ld: usize,
    pub zp: i32,
    pub mult: f32,
    pub scale: f32,
}

impl ResidualIn {
    /// v − zp of the element at (row r, channel c).
    ///
    /// # Safety
    /// The element lies inside the residual buffer.
    #[inline(always)]
    pub unsafe fn diff(&self, r: usize, c: usize) -> i32 {
        // SAFETY: caller's contract.
        unsafe { self.elem.read(self.ptr, r * self.ld + c) - self.zp }
    }
}

/// How the accumulators of one output row become stored integers. Slices are indexed by output channel.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    pub mult: &'a [f32],
    pub zy: i32,
    /// Output range L..H (the type's range narrowed by a fused ReLU or clip).
    pub qlo: i32,
    pub qhi: i32,
    pub float_act: Option<FloatAct<'a>>,
    /// Only kernels that read it (gemm, wideconv) are given one; the compiler keeps the others' None.
    pub residual: Option<ResidualIn>,
}

impl Epilogue<'_> {
    /// The clamp bounds relative to the zero point, as exact f32 integers: clamping before rounding
    /// equals clamping after, since rounding is monotonic and fixes integers, and keeps the conversion
    /// to integer in range.
    #[inline(always)]
    pub fn bounds(&self) -> (f32, f32) {
        ((self.qlo - self.zy) as f32, (self.qhi - self.zy) as f32)
    }

    /// Requantizes `acc` (channels c0..c0+acc.len()) of output row `r` into the bytes of `out` (u8 or i8
    /// storage: the value's low byte), with the residual of row `r` if there is one.
    ///
    /// # Safety
    /// With a residual, its row `r` holds channels c0..c0+acc.len().
    #[inline(always)]
    pub unsafe fn row_at(&self, acc: &[i32], r: usize, c0: usize, out: &mut [u8]) {
        let Some(res) = self.residual else { return self.row(acc, c0, out) };
        for (i, (o, &a)) in out[..acc.len()].iter_mut().zip(acc).enumerate() {
            // SAFETY: caller's contract.
            *o = self.value_with(a, c0 + i, unsafe { res.diff(r, c0 + i) }) as u8;
        }
    }

    /// `row_at` for an epilogue without a residual.
    #[inline(always)]
    pub fn row(&self, acc: &[i32], c0: usize, out: &mut [u8]) {
        debug_assert!(self.residual.is_none(), "a residual epilogue needs row_at");
        let n = acc.len();
        match self.float_act {
            None => {
                let (lo, hi) = self.bounds();
                let mult = &self.mult[c0..c0 + n];
                for ((o, &a), &m) in out[..n].iter_mut().zip(acc).zip(mult) {
                    // Not NaN: the compiler only emits finite multipliers.
                    let v = clamp_to_int(((a as f32) * m).round_ties_even(), lo, hi) + self.zy;
                    *o = v as u8;
                }
            }
            Some(_) => {
                for (i, (o, &a)) in out[..n].iter_mut().zip(acc).enumerate() {
                    *o = self.value(a, c0 + i) as u8;
                }
            }
        }
    }

    /// One accumulator of channel `c` plus the residual term of `d` = r − zr requantized (as the
    /// interpreter's Requant::apply_residual).
    #[inline(always)]
    pub fn value_with(&self, a: i32, c: usize, d: i32) -> i32 {
        let Some(res) = self.residual else { return self.value(a, c) };
        let d = d as f32;
        match self.float_act {
            None => {
                let (lo, hi) = self.bounds();
                clamp_to_int(((a as f32) * self.mult[c] + d * res.mult).round_ties_even(), lo, hi) + self.zy
            }
            Some(f) => quantize_value(
                f.act.apply(a as f32 * f.acc_scale[c] + d * res.scale),
                f.out_scale,
                self.zy,
                self.qlo as i64,
                self.qhi as i64,
            ) as i32,
        }
    }

    /// One accumulator of channel `c` requantized (what `row` computes for each, for any storage).
    #[inline(always)]
    pub fn value(&self, a: i32, c: usize) -> i32 {
        match self.float_act {
            None => {
                let (lo, hi) = self.bounds();
                clamp_to_int(((a as f32) * self.mult[c]).round_ties_even(), lo, hi) + self.zy
            }
            Some(f) => {
                quantize_value(f.act.apply(a as f32 * f.acc_scale[c]), f.out_scale, self.zy, self.qlo as i64, self.qhi as i64) as i32
            }
        }
    }
}
