//! f32 elementwise kernels (binary ops with broadcasting, activations, sqrt/exp/erf) for the float layers
//! of compiled models. The scalar functions here are the interpreter's own (eval.rs calls them), so
//! compiled float results equal interpreted ones bit for bit.
use super::elementwise::Ptr;
use super::{multiversion, pool, Isa};
use qcc_ir::{Act, Op};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

impl BinOp {
    pub fn from_op(op: &Op) -> Option<BinOp> {
        Some(match op {
            Op::Add => BinOp::Add,
            Op::Sub => BinOp::Sub,
            Op::Mul => BinOp::Mul,
            Op::Div => BinOp::Div,
            Op::Max => BinOp::Max,
            Op::Min => BinOp::Min,
            _ => return None,
        })
    }

    #[inline(always)]
    pub fn apply(self, x: f32, y: f32) -> f32 {
        match self {
            BinOp::Add => x + y,
            BinOp::Sub => x - y,
            BinOp::Mul => x * y,
            BinOp::Div => x / y,
            // NaN propagates through max/min as ONNX Runtime does. Written as comparisons, not f32::max,
            // so that ±0 pairs have one answer (the first operand) in every build and in generated code.
            BinOp::Max => {
                if x.is_nan() || y.is_nan() {
                    f32::NAN
                } else if y > x {
                    y
                } else {
                    x
                }
            }
            BinOp::Min => {
                if x.is_nan() || y.is_nan() {
                    f32::NAN
                } else if y < x {
                    y
                } else {
                    x
                }
            }
        }
    }

    pub fn code(self) -> u64 {
        self as u64
    }

    pub fn from_code(c: u64) -> BinOp {
        [BinOp::Add, BinOp::Sub, BinOp::Mul, BinOp::Div, BinOp::Max, BinOp::Min][(c as usize).min(5)]
    }
}

/// A unary f32 op: a clamp (Relu is clip(0, ∞)), an activation, or an elementwise function.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnOp {
    Clip { min: f32, max: f32 },
    Act(Act),
    Sqrt,
    Exp,
    Erf,
    Identity,
    Neg,
    Abs,
    Reciprocal,
    Log,
    Floor,
    Ceil,
}

impl UnOp {
    pub fn from_op(op: &Op) -> Option<UnOp> {
        Some(match op {
            Op::Relu => UnOp::Clip { min: 0.0, max: f32::INFINITY },
            Op::Clip { min, max } => UnOp::Clip { min: *min, max: *max },
            Op::Sqrt => UnOp::Sqrt,
            Op::Exp => UnOp::Exp,
            Op::Erf => UnOp::Erf,
            Op::Neg => UnOp::Neg,
            Op::Abs => UnOp::Abs,
            Op::Reciprocal => UnOp::Reciprocal,
            Op::Log => UnOp::Log,
            Op::Floor => UnOp::Floor,
            Op::Ceil => UnOp::Ceil,
            Op::Identity | Op::Dropout => UnOp::Identity,
            op => UnOp::Act(op.as_act()?),
        })
    }

    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            // f32::clamp's comparisons (a NaN passes through, -0 stays -0), without its panic on min > max.
            UnOp::Clip { min, max } => {
                let v = if x < min { min } else { x };
                if v > max {
                    max
                } else {
                    v
                }
            }
            UnOp::Act(a) => a.apply(x),
            UnOp::Sqrt => x.sqrt(),
            UnOp::Exp => x.exp(),
            UnOp::Erf => libm::erff(x),
            UnOp::Identity => x,
            UnOp::Neg => -x,
            UnOp::Abs => x.abs(),
            UnOp::Reciprocal => 1.0 / x,
            UnOp::Log => x.ln(),
            UnOp::Floor => x.floor(),
            UnOp::Ceil => x.ceil(),
        }
    }
}

/// y = op(a, b) with broadcasting: `dims` is the output shape, `sa`/`sb` the element strides of a and b
/// for each output axis (0 where the operand is broadcast).
pub struct Binary<'a> {
    pub isa: Isa,
    pub op: BinOp,
    pub dims: &'a [usize],
    pub a: *const f32,
    pub sa: &'a [usize],
    pub b: *const f32,
    pub sb: &'a [usize],
    pub out: *mut f32,
}

// SAFETY: chunks read a and b and write disjoint rows of out.
unsafe impl Sync for Binary<'_> {}

impl Binary<'_> {
    /// # Safety
    /// The pointers must address tensors of the shapes the strides describe.
    pub unsafe fn run(&self) {
        let r = self.dims.len();
        let inner = if r == 0 { 1 } else { self.dims[r - 1] };
        let rows: usize = self.dims[..r.saturating_sub(1)].iter().product();
        let (ia, ib) = if r == 0 { (0, 0) } else { (self.sa[r - 1], self.sb[r - 1]) };
        let (ap, bp, op) = (Ptr(self.a as *mut u8), Ptr(self.b as *mut u8), Ptr(self.out as *mut u8));
        multiversion!(
            fn row(a: *const f32, ia: usize, b: *const f32, ib: usize, out: &mut [f32], f: BinOp) {
                for (j, o) in out.iter_mut().enumerate() {
                    // SAFETY: the strides keep every index inside its operand.
                    *o = unsafe { f.apply(*a.add(j * ia), *b.add(j * ib)) };
                }
            }
        );
        let per_task = (4096 / inner.max(1)).max(1);
        pool::parallel_for(rows.div_ceil(per_task), &|t| {
            for rw in t * per_task..((t + 1) * per_task).min(rows) {
                // Offsets of this row's first element in a and b.
                let (mut rem, mut oa, mut ob) = (rw, 0, 0);
                for ax in (0..r.saturating_sub(1)).rev() {
                    let i = rem % self.dims[ax];
                    rem /= self.dims[ax];
                    oa += i * self.sa[ax];
                    ob += i * self.sb[ax];
                }
                // SAFETY: row rw of the output lies inside out; the operands are addressed by strides.
                unsafe {
                    let out = std::slice::from_raw_parts_mut((op.get() as *mut f32).add(rw * inner), inner);
                    row(self.isa, (ap.get() as *const f32).add(oa), ia, (bp.get() as *const f32).add(ob), ib, out, self.op);
                }
            }
        });
    }
}

/// y = f(x) over `len` elements.
///
/// # Safety
/// x and out must hold len f32 (they may be the same buffer).
pub unsafe fn unary(isa: Isa, f: UnOp, x: *const f32, len: usize, out: *mut f32) {
    let (xp, op) = (Ptr(x as *mut u8), Ptr(out as *mut u8));
    multiversion!(
        fn map(x: *const f32, out: *mut f32, a: usize, b: usize, f: UnOp) {
            for i in a..b {
                // SAFETY: i < len.
                unsafe { *out.add(i) = f.apply(*x.add(i)) };
            }
        }
    );
    pool::parallel_for(len.div_ceil(1 << 14), &|t| {
        map(isa, xp.get() as *const f32, op.get() as *mut f32, t << 14, ((t + 1) << 14).min(len), f);
    });
}

/// The sum every f32 global average pooling takes (the interpreter's and the kernels'), element i at
/// `at(i)` for i < n: eight running sums s_k over the elements i ≡ k (mod 8) of the whole groups of
/// eight, combined as ((((0 + (s0 + s4)) + (s1 + s5)) + (s2 + s6)) + (s3 + s7)), then the last n mod 8
/// elements added in order. The order vectorizes (two 4-lane sums along a plane, or 8 sums per lane
/// across channels) and is fixed here, so compiled pooling equals the interpreter's bit for bit.
#[inline]
pub fn pool_sum(n: usize, at: impl Fn(usize) -> f32) -> f32 {
    let mut s = [0f32; 8];
    let whole = n - n % 8;
    for i in (0..whole).step_by(8) {
        for (k, sk) in s.iter_mut().enumerate() {
            *sk += at(i + k);
        }
    }
    let mut acc = 0f32;
    for k in 0..4 {
        acc += s[k] + s[k + 4];
    }
    (whole..n).fold(acc, |acc, i| acc + at(i))
}
