//! Neural-network kernels of the reference interpreter, in f32. Convolution is im2col + GEMM (ndarray's
//! matrixmultiply), depthwise convolution a direct loop: fast enough to evaluate real models.
use crate::eval::R;
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayD, ArrayView2, ArrayViewMut2, Axis, Ix2, IxDyn, Zip};
use qcc_ir::infer::norm_axis;
use qcc_ir::{Act, Tensor};

/// Geometry of a 2-D window op (1-D ops are mapped onto it with height 1).
struct Win {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    pt: usize,
    pl: usize,
    oh: usize,
    ow: usize,
}

fn win(xs: &[usize], kernel: &[i64], strides: &[i64], pads: &[i64], dil: &[i64], out: &[usize]) -> R<Win> {
    let u = |v: i64| v as usize;
    match xs.len() {
        3 => Ok(Win {
            n: xs[0],
            c: xs[1],
            h: 1,
            w: xs[2],
            kh: 1,
            kw: u(kernel[0]),
            sh: 1,
            sw: u(strides[0]),
            dh: 1,
            dw: u(dil[0]),
            pt: 0,
            pl: u(pads[0]),
            oh: 1,
            ow: out[2],
        }),
        4 => Ok(Win {
            n: xs[0],
            c: xs[1],
            h: xs[2],
            w: xs[3],
            kh: u(kernel[0]),
            kw: u(kernel[1]),
            sh: u(strides[0]),
            sw: u(strides[1]),
            dh: u(dil[0]),
            dw: u(dil[1]),
            pt: u(pads[0]),
            pl: u(pads[1]),
            oh: out[2],
            ow: out[3],
        }),
        r => Err(format!("{}-D windows are not supported (only 1-D and 2-D)", r.saturating_sub(2))),
    }
}

impl Win {
    /// Input row/column for output position `o` and kernel tap `k`, or None in the padding.
    #[inline]
    fn iy(&self, o: usize, k: usize) -> Option<usize> {
        (o * self.sh + k * self.dh).checked_sub(self.pt).filter(|y| *y < self.h)
    }
    #[inline]
    fn ix(&self, o: usize, k: usize) -> Option<usize> {
        (o * self.sw + k * self.dw).checked_sub(self.pl).filter(|x| *x < self.w)
    }
}

/// The run k0..k1 of 0..n for which `at(k)` is inside the image (one run: `at` is monotonic in k).
fn taps(n: usize, at: impl Fn(usize) -> Option<usize>) -> (usize, usize) {
    match (0..n).position(|k| at(k).is_some()) {
        Some(k0) => (k0, k0 + (k0..n).take_while(|k| at(*k).is_some()).count()),
        None => (0, 0),
    }
}

fn apply_act(out: &mut [f32], act: Option<Act>) {
    if let Some(a) = act {
        out.iter_mut().for_each(|v| *v = a.apply(*v));
    }
}

/// Writes the im2col matrix [cg·kh·kw, oh·ow] of one batch item's group `xg` (cg channels) into `col`:
/// row (c, ky, kx) holds, per output pixel, the input that tap reads (zero in the padding).
fn fill_patches<T: ndarray::LinalgScalar>(g: &Win, xg: &[T], cg: usize, col: &mut [T]) {
    let sp = g.oh * g.ow;
    for c in 0..cg {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = &mut col[((c * g.kh + ky) * g.kw + kx) * sp..][..sp];
                for oy in 0..g.oh {
                    let dst = &mut row[oy * g.ow..][..g.ow];
                    match g.iy(oy, ky) {
                        None => dst.fill(T::zero()),
                        Some(iy) => {
                            let src = &xg[(c * g.h + iy) * g.w..][..g.w];
                            for (ox, d) in dst.iter_mut().enumerate() {
                                *d = g.ix(ox, kx).map_or(T::zero(), |ix| src[ix]);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The im2col matrix [cg·kh·kw, oh·ow] of batch item `b`, group `gi` of a conv's input `x` (shape `xs`,
/// standard layout) for weights of shape `ws`: the vectors the conv's output pixels take dot products
/// with. Calibration gathers their second moments for round-weights.
#[allow(clippy::too_many_arguments)]
pub fn conv_patches(
    x: &[f32],
    xs: &[usize],
    ws: &[usize],
    strides: &[i64],
    pads: &[i64],
    dil: &[i64],
    group: usize,
    out_shape: &[usize],
    b: usize,
    gi: usize,
) -> Result<Vec<f32>, String> {
    let kernel: Vec<i64> = ws[2..].iter().map(|d| *d as i64).collect();
    let g = win(xs, &kernel, strides, pads, dil, out_shape)?;
    let cg = g.c / group;
    let xg = &x[(b * g.c + gi * cg) * g.h * g.w..][..cg * g.h * g.w];
    let mut col = vec![0.0; cg * g.kh * g.kw * g.oh * g.ow];
    fill_patches(&g, xg, cg, &mut col);
    Ok(col)
}

/// Convolution without bias or activation over any float type: im2col + GEMM, depthwise as a direct loop.
/// `x` and `w` are standard-layout data of shapes `xs` and `ws`. Used in f32 for float convs and in f64 for
/// integer convs, whose sums of integer products stay exact below 2^53.
#[allow(clippy::too_many_arguments)]
pub fn conv_core<T: ndarray::LinalgScalar>(
    x: &[T],
    xs: &[usize],
    w: &[T],
    ws: &[usize],
    strides: &[i64],
    pads: &[i64],
    dil: &[i64],
    group: usize,
    out_shape: &[usize],
) -> R<Vec<T>> {
    let kernel: Vec<i64> = ws[2..].iter().map(|d| *d as i64).collect();
    let g = win(xs, &kernel, strides, pads, dil, out_shape)?;
    let m = ws[0];
    let (cg, mg) = (g.c / group, m / group);
    let (k, sp) = (cg * g.kh * g.kw, g.oh * g.ow);
    let mut out = vec![T::zero(); g.n * m * sp];
    if cg == 1 && mg == 1 {
        // Per output row, each tap inside the image adds its product to a run of outputs (one run: the
        // input column is monotonic in the output's); taps in (ky, kx) order, so every output sums the same
        // terms in the same order as a per-pixel loop, while the inner loop runs over pixels.
        let runs: Vec<(usize, usize)> = (0..g.kw).map(|kx| taps(g.ow, |ox| g.ix(ox, kx))).collect();
        for b in 0..g.n {
            for ch in 0..g.c {
                let xc = &x[(b * g.c + ch) * g.h * g.w..][..g.h * g.w];
                let wc = &w[ch * g.kh * g.kw..][..g.kh * g.kw];
                let oc = &mut out[(b * m + ch) * sp..][..sp];
                for (oy, orow) in oc.chunks_exact_mut(g.ow.max(1)).enumerate().take(g.oh) {
                    for ky in 0..g.kh {
                        let Some(iy) = g.iy(oy, ky) else { continue };
                        let row = &xc[iy * g.w..][..g.w];
                        for (kx, &(o0, o1)) in runs.iter().enumerate().filter(|(_, r)| r.0 < r.1) {
                            let wv = wc[ky * g.kw + kx];
                            let first = o0 * g.sw + kx * g.dw - g.pl;
                            if g.sw == 1 {
                                for (o, xv) in orow[o0..o1].iter_mut().zip(&row[first..first + (o1 - o0)]) {
                                    *o = *o + *xv * wv;
                                }
                            } else {
                                for (i, o) in orow[o0..o1].iter_mut().enumerate() {
                                    *o = *o + row[first + i * g.sw] * wv;
                                }
                            }
                        }
                    }
                }
            }
        }
        return Ok(out);
    }
    let pointwise = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.oh == g.h && g.ow == g.w;
    let mut col = vec![T::zero(); if pointwise { 0 } else { k * sp }];
    for b in 0..g.n {
        for gi in 0..group {
            let xg = &x[(b * g.c + gi * cg) * g.h * g.w..][..cg * g.h * g.w];
            let colv: &[T] = if pointwise {
                xg
            } else {
                fill_patches(&g, xg, cg, &mut col);
                &col
            };
            let a = ArrayView2::from_shape((mg, k), &w[gi * mg * k..][..mg * k]).map_err(|e| e.to_string())?;
            let bm = ArrayView2::from_shape((k, sp), colv).map_err(|e| e.to_string())?;
            let dst = &mut out[(b * m + gi * mg) * sp..][..mg * sp];
            let mut c = ArrayViewMut2::from_shape((mg, sp), dst).map_err(|e| e.to_string())?;
            general_mat_mul(T::one(), &a, &bm, T::zero(), &mut c);
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
pub fn conv(
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    bias: Option<&ArrayD<f32>>,
    strides: &[i64],
    pads: &[i64],
    dil: &[i64],
    group: usize,
    act: Option<Act>,
    residual: Option<&ArrayD<f32>>,
    out_shape: &[usize],
) -> R<ArrayD<f32>> {
    let x = x.as_standard_layout();
    let w = w.as_standard_layout();
    let mut out = conv_core(
        x.as_slice().ok_or("layout")?,
        x.shape(),
        w.as_slice().ok_or("layout")?,
        w.shape(),
        strides,
        pads,
        dil,
        group,
        out_shape,
    )?;
    let (m, sp) = (out_shape[1], out_shape[2..].iter().product::<usize>());
    if let Some(bias) = bias {
        let bias = bias.as_standard_layout();
        let bs = bias.as_slice().ok_or("layout")?;
        for (i, chunk) in out.chunks_mut(sp.max(1)).enumerate() {
            let bv = bs[i % m];
            chunk.iter_mut().for_each(|v| *v += bv);
        }
    }
    if let Some(r) = residual {
        if r.shape() != out_shape {
            return Err(format!("residual shape {:?} is not the output's {:?}", r.shape(), out_shape));
        }
        out.iter_mut().zip(r.iter()).for_each(|(v, r)| *v += r);
    }
    apply_act(&mut out, act);
    ArrayD::from_shape_vec(IxDyn(out_shape), out).map_err(|e| e.to_string())
}

#[allow(clippy::too_many_arguments)]
pub fn conv_transpose(
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    bias: Option<&ArrayD<f32>>,
    strides: &[i64],
    pads: &[i64],
    dil: &[i64],
    group: usize,
    out_shape: &[usize],
) -> R<ArrayD<f32>> {
    let r = x.ndim();
    if r != 3 && r != 4 {
        return Err("only 1-D and 2-D transposed convolution is supported".into());
    }
    let x4 = if r == 3 { x.view().insert_axis(Axis(2)).into_owned() } else { x.to_owned() };
    let w4 = if r == 3 { w.view().insert_axis(Axis(2)).into_owned() } else { w.to_owned() };
    let o4: Vec<usize> = if r == 3 { vec![out_shape[0], out_shape[1], 1, out_shape[2]] } else { out_shape.to_vec() };
    let (s, p, d) =
        if r == 3 { (vec![1, strides[0]], vec![0, pads[0]], vec![1, dil[0]]) } else { (strides.to_vec(), pads.to_vec(), dil.to_vec()) };
    let xs4 = x4.shape().to_vec();
    let (n, c, h, wd) = (xs4[0], xs4[1], xs4[2], xs4[3]);
    let (kh, kw) = (w4.shape()[2], w4.shape()[3]);
    let (m, oh, ow) = (o4[1], o4[2] as i64, o4[3] as i64);
    let (cg, mg) = (c / group, m / group);
    let mut out = ArrayD::<f32>::zeros(IxDyn(&o4));
    for b in 0..n {
        for gi in 0..group {
            for ic in 0..cg {
                let ci = gi * cg + ic;
                for iy in 0..h {
                    for ix in 0..wd {
                        let xv = x4[[b, ci, iy, ix]];
                        for om in 0..mg {
                            for ky in 0..kh {
                                let oy = iy as i64 * s[0] + ky as i64 * d[0] - p[0];
                                if oy < 0 || oy >= oh {
                                    continue;
                                }
                                for kx in 0..kw {
                                    let ox = ix as i64 * s[1] + kx as i64 * d[1] - p[1];
                                    if ox >= 0 && ox < ow {
                                        out[[b, gi * mg + om, oy as usize, ox as usize]] += xv * w4[[ci, om, ky, kx]];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some(bias) = bias {
        for (ch, mut plane) in out.axis_iter_mut(Axis(1)).enumerate() {
            let bv = bias[[ch]];
            plane.mapv_inplace(|v| v + bv);
        }
    }
    out.into_shape_with_order(IxDyn(out_shape)).map_err(|e| e.to_string())
}

#[allow(clippy::too_many_arguments)]
pub fn gemm(
    a: &ArrayD<f32>,
    b: &ArrayD<f32>,
    c: Option<&ArrayD<f32>>,
    alpha: f32,
    beta: f32,
    ta: bool,
    tb: bool,
    act: Option<Act>,
) -> R<ArrayD<f32>> {
    let a = a.view().into_dimensionality::<Ix2>().map_err(|e| e.to_string())?;
    let b = b.view().into_dimensionality::<Ix2>().map_err(|e| e.to_string())?;
    let a = if ta { a.reversed_axes() } else { a };
    let b = if tb { b.reversed_axes() } else { b };
    let mut y = a.dot(&b);
    if alpha != 1.0 {
        y.mapv_inplace(|v| v * alpha);
    }
    let mut y = y.into_dyn();
    if let Some(c) = c {
        let cb = c.broadcast(y.raw_dim()).ok_or("bias does not broadcast")?;
        Zip::from(&mut y).and(&cb).for_each(|v, &cv| *v += beta * cv);
    }
    if let Some(act) = act {
        y.mapv_inplace(|v| act.apply(v));
    }
    Ok(y)
}

pub fn matmul(a: &Tensor, b: &Tensor, out_shape: &[usize]) -> R<Tensor> {
    let (Tensor::F32(a), Tensor::F32(b)) = (a, b) else {
        return Err("matmul supports f32 only".into());
    };
    let a2 = if a.ndim() == 1 { a.view().insert_axis(Axis(0)) } else { a.view() };
    let b2 = if b.ndim() == 1 { b.view().insert_axis(Axis(1)) } else { b.view() };
    let (ra, rb) = (a2.ndim(), b2.ndim());
    let (m, k, n) = (a2.shape()[ra - 2], a2.shape()[ra - 1], b2.shape()[rb - 1]);
    let batch = qcc_ir::infer::broadcast_shapes(&[&a2.shape()[..ra - 2], &b2.shape()[..rb - 2]])?;
    let mut full_a = batch.clone();
    full_a.extend([m, k]);
    let mut full_b = batch.clone();
    full_b.extend([k, n]);
    let ab = a2.broadcast(IxDyn(&full_a)).ok_or("broadcast")?.as_standard_layout().into_owned();
    let bb = b2.broadcast(IxDyn(&full_b)).ok_or("broadcast")?.as_standard_layout().into_owned();
    let nb: usize = batch.iter().product();
    let av = ab.into_shape_with_order((nb, m, k)).map_err(|e| e.to_string())?;
    let bv = bb.into_shape_with_order((nb, k, n)).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(nb * m * n);
    for i in 0..nb {
        out.extend(av.index_axis(Axis(0), i).dot(&bv.index_axis(Axis(0), i)).iter());
    }
    Ok(Tensor::F32(ArrayD::from_shape_vec(IxDyn(out_shape), out).map_err(|e| e.to_string())?))
}

pub fn batch_norm(
    x: &ArrayD<f32>,
    scale: &ArrayD<f32>,
    bias: &ArrayD<f32>,
    mean: &ArrayD<f32>,
    var: &ArrayD<f32>,
    eps: f32,
) -> R<ArrayD<f32>> {
    let mut y = x.to_owned();
    for (c, mut plane) in y.axis_iter_mut(Axis(1)).enumerate() {
        let k = scale[[c]] / (var[[c]] + eps).sqrt();
        let b = bias[[c]] - mean[[c]] * k;
        plane.mapv_inplace(|v| v * k + b);
    }
    Ok(y)
}

/// Max pooling over any numeric type (padding never wins).
pub fn max_pool(x: &Tensor, kernel: &[i64], strides: &[i64], pads: &[i64], dil: &[i64], out_shape: &[usize]) -> R<Tensor> {
    macro_rules! mp {
        ($a:expr, $min:expr) => {{
            let g = win($a.shape(), kernel, strides, pads, dil, out_shape)?;
            let a = $a.as_standard_layout();
            let xs = a.as_slice().ok_or("layout")?;
            let mut out = Vec::with_capacity(g.n * g.c * g.oh * g.ow);
            for plane in xs.chunks(g.h * g.w).take(g.n * g.c) {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut best = $min;
                        for ky in 0..g.kh {
                            let Some(iy) = g.iy(oy, ky) else { continue };
                            for kx in 0..g.kw {
                                if let Some(ix) = g.ix(ox, kx) {
                                    let v = plane[iy * g.w + ix];
                                    if v > best {
                                        best = v;
                                    }
                                }
                            }
                        }
                        out.push(best);
                    }
                }
            }
            ArrayD::from_shape_vec(IxDyn(out_shape), out).map_err(|e| e.to_string())?
        }};
    }
    Ok(match x {
        Tensor::F32(a) => Tensor::F32(mp!(a, f32::NEG_INFINITY)),
        Tensor::U8(a) => Tensor::U8(mp!(a, u8::MIN)),
        Tensor::I8(a) => Tensor::I8(mp!(a, i8::MIN)),
        Tensor::I16(a) => Tensor::I16(mp!(a, i16::MIN)),
        t => return Err(format!("max pooling over {} is not supported", t.dtype())),
    })
}

/// Average pooling. With count_include_pad the divisor counts taps in the explicit padding but not
/// taps a ceil_mode window hangs past it (ONNX Runtime's rule); without it, only taps inside the input.
/// Average pooling along one axis, for output position `o` (kernel k, stride s, dilation d, begin pad p,
/// input length len, end pad pe): the input positions its taps read, and how many taps a divisor that
/// counts padding counts (those before the end of the explicit padding). The compiled kernel uses it too.
pub(crate) fn avg_pool_taps(o: usize, k: usize, s: usize, d: usize, p: usize, len: usize, pe: usize) -> (Vec<usize>, usize) {
    let mut inside = Vec::new();
    let mut padded = 0usize;
    for t in 0..k {
        let pos = (o * s + t * d) as i64 - p as i64;
        if pos < (len + pe) as i64 {
            padded += 1;
        }
        if pos >= 0 && pos < len as i64 {
            inside.push(pos as usize);
        }
    }
    (inside, padded)
}

/// The windows of average pooling, in NCHW output order: `f(plane, taps, divisor)` for every output, with
/// `plane` = n·C + c and `taps` the flat in-plane indices of the window's positions inside the input.
#[allow(clippy::too_many_arguments)]
pub(crate) fn avg_pool_windows(
    xshape: &[usize],
    kernel: &[i64],
    strides: &[i64],
    pads: &[i64],
    dil: &[i64],
    include_pad: bool,
    out_shape: &[usize],
    mut f: impl FnMut(usize, &[usize], usize),
) -> R<()> {
    let g = win(xshape, kernel, strides, pads, dil, out_shape)?;
    let (pb, pr) = if kernel.len() == 1 { (0, pads[1] as usize) } else { (pads[2] as usize, pads[3] as usize) };
    let rows: Vec<_> = (0..g.oh).map(|o| avg_pool_taps(o, g.kh, g.sh, g.dh, g.pt, g.h, pb)).collect();
    let cols: Vec<_> = (0..g.ow).map(|o| avg_pool_taps(o, g.kw, g.sw, g.dw, g.pl, g.w, pr)).collect();
    let mut taps = Vec::with_capacity(g.kh * g.kw);
    for plane in 0..g.n * g.c {
        for (ry, py) in &rows {
            for (cx, px) in &cols {
                taps.clear();
                taps.extend(ry.iter().flat_map(|iy| cx.iter().map(move |ix| iy * g.w + ix)));
                f(plane, &taps, if include_pad { py * px } else { taps.len() });
            }
        }
    }
    Ok(())
}

pub fn avg_pool(
    x: &ArrayD<f32>,
    kernel: &[i64],
    strides: &[i64],
    pads: &[i64],
    dil: &[i64],
    include_pad: bool,
    out_shape: &[usize],
) -> R<ArrayD<f32>> {
    let a = x.as_standard_layout();
    let xs = a.as_slice().ok_or("layout")?;
    let hw: usize = x.shape()[2..].iter().product();
    let mut out = Vec::with_capacity(out_shape.iter().product());
    avg_pool_windows(x.shape(), kernel, strides, pads, dil, include_pad, out_shape, |plane, taps, count| {
        let p = &xs[plane * hw..];
        let sum = taps.iter().fold(0f32, |s, t| s + p[*t]);
        out.push(if count > 0 { sum / count as f32 } else { 0.0 });
    })?;
    ArrayD::from_shape_vec(IxDyn(out_shape), out).map_err(|e| e.to_string())
}

/// Softmax over `axis` (opset < 13, `coerce_2d`: over all dimensions from `axis` on, as one row).
pub fn softmax(x: &ArrayD<f32>, axis: i64, coerce_2d: bool) -> R<ArrayD<f32>> {
    let shape = x.shape().to_vec();
    let dims = softmax_dims(&shape, norm_axis(axis, shape.len())?, coerce_2d);
    let mut y = x.as_standard_layout().into_owned().into_shape_with_order(dims).map_err(|e| e.to_string())?;
    softmax_lanes(y.view_mut());
    y.into_shape_with_order(IxDyn(&shape)).map_err(|e| e.to_string())
}

/// The row-major tensor of `shape` as [outer, len, inner], softmax running over the middle axis.
pub fn softmax_dims(shape: &[usize], axis: usize, coerce_2d: bool) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    if coerce_2d {
        (outer, shape[axis..].iter().product(), 1)
    } else {
        (outer, shape[axis], shape[axis + 1..].iter().product())
    }
}

/// Softmax in place along axis 1 of `y` ([outer, len, inner]); the compiled kernel calls this too, so
/// both sum in the same order.
pub fn softmax_lanes(mut y: ndarray::ArrayViewMut3<f32>) {
    for mut lane in y.lanes_mut(Axis(1)) {
        let m = lane.fold(f32::NEG_INFINITY, |m, v| m.max(*v));
        lane.mapv_inplace(|v| (v - m).exp());
        let s = lane.sum();
        lane.mapv_inplace(|v| v / s);
    }
}

pub fn layer_norm(x: &ArrayD<f32>, scale: &ArrayD<f32>, bias: Option<&ArrayD<f32>>, axis: i64, eps: f32) -> R<ArrayD<f32>> {
    let shape = x.shape().to_vec();
    let a = norm_axis(axis, shape.len())?;
    let inner: usize = shape[a..].iter().product();
    let rows: usize = shape[..a].iter().product();
    let sb = scale.broadcast(IxDyn(&shape[a..])).ok_or("scale does not broadcast")?.iter().copied().collect::<Vec<f32>>();
    let bb: Vec<f32> = match bias {
        Some(b) => b.broadcast(IxDyn(&shape[a..])).ok_or("bias does not broadcast")?.iter().copied().collect(),
        None => vec![0.0; inner],
    };
    let mut y = x.as_standard_layout().into_owned().into_shape_with_order((rows, inner)).map_err(|e| e.to_string())?;
    for mut row in y.rows_mut() {
        let mean = row.sum() / inner as f32;
        let var = row.fold(0.0, |acc, v| acc + (v - mean) * (v - mean)) / inner as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (i, v) in row.iter_mut().enumerate() {
            *v = (*v - mean) * inv * sb[i] + bb[i];
        }
    }
    y.into_shape_with_order(IxDyn(&shape)).map_err(|e| e.to_string())
}

/// ArgMax (`max`) or ArgMin along `axis`: the index of the first extreme, or of the last with `last`.
/// NaN counts as the extreme (as NumPy's argmax, which ONNX's reference uses).
pub fn arg_extreme(t: &Tensor, axis: usize, max: bool, last: bool, out_shape: &[usize]) -> R<Tensor> {
    fn pick<T: Copy + PartialOrd>(a: &ArrayD<T>, axis: usize, max: bool, last: bool, nan: impl Fn(T) -> bool) -> ArrayD<i64> {
        a.map_axis(Axis(axis), |lane| {
            let mut best = 0usize;
            for (i, &v) in lane.iter().enumerate().skip(1) {
                let b = lane[best];
                if nan(b) {
                    break;
                }
                let better = nan(v) || if max { v > b || last && v == b } else { v < b || last && v == b };
                if better {
                    best = i;
                }
            }
            best as i64
        })
    }
    let idx = match t {
        Tensor::F32(a) => pick(a, axis, max, last, |v: f32| v.is_nan()),
        Tensor::I64(a) => pick(a, axis, max, last, |_| false),
        Tensor::I32(a) => pick(a, axis, max, last, |_| false),
        Tensor::I16(a) => pick(a, axis, max, last, |_| false),
        Tensor::I8(a) => pick(a, axis, max, last, |_| false),
        Tensor::U8(a) => pick(a, axis, max, last, |_| false),
        Tensor::Bool(_) => return Err("arg_max/arg_min of bool is not supported".into()),
    };
    idx.into_shape_with_order(IxDyn(out_shape)).map(Tensor::I64).map_err(|e| e.to_string())
}

/// Local response normalization across axis 1 (ONNX LRN): the square sum runs over channels
/// c − ⌊(size−1)/2⌋ ..= c + ⌈(size−1)/2⌉ that exist.
pub fn lrn(x: &ArrayD<f32>, size: usize, alpha: f32, beta: f32, bias: f32) -> R<ArrayD<f32>> {
    let s = x.shape().to_vec();
    let (n, c) = (s[0], s[1]);
    let inner: usize = s[2..].iter().product();
    let x = x.as_standard_layout();
    let xs = x.as_slice().ok_or("input is not contiguous")?;
    let (lo, hi) = ((size - 1) / 2, (size - 1).div_ceil(2));
    let mut y = vec![0f32; xs.len()];
    for b in 0..n {
        for ch in 0..c {
            let (c0, c1) = (ch.saturating_sub(lo), (ch + hi).min(c - 1));
            for i in 0..inner {
                let sq: f32 = (c0..=c1).map(|k| xs[(b * c + k) * inner + i].powi(2)).sum();
                let at = (b * c + ch) * inner + i;
                y[at] = xs[at] / (bias + alpha / size as f32 * sq).powf(beta);
            }
        }
    }
    ArrayD::from_shape_vec(IxDyn(&s), y).map_err(|e| e.to_string())
}

/// Instance normalization: each (n, c) plane minus its mean, over its standard deviation (population
/// variance + epsilon), times scale[c] plus bias[c].
pub fn instance_norm(x: &ArrayD<f32>, scale: &ArrayD<f32>, bias: &ArrayD<f32>, eps: f32) -> R<ArrayD<f32>> {
    let s = x.shape().to_vec();
    let inner: usize = s[2..].iter().product();
    let (sc, bi) = (scale.iter().copied().collect::<Vec<f32>>(), bias.iter().copied().collect::<Vec<f32>>());
    let mut y = x.as_standard_layout().into_owned().into_shape_with_order((s[0] * s[1], inner)).map_err(|e| e.to_string())?;
    for (r, mut row) in y.rows_mut().into_iter().enumerate() {
        let ch = r % s[1];
        let mean = row.sum() / inner as f32;
        let var = row.fold(0.0, |acc, v| acc + (v - mean) * (v - mean)) / inner as f32;
        let inv = 1.0 / (var + eps).sqrt();
        row.mapv_inplace(|v| (v - mean) * inv * sc[ch] + bi[ch]);
    }
    y.into_shape_with_order(IxDyn(&s)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::conv_core;

    /// Depthwise convolution from its definition: every output sums the taps inside the image.
    fn depthwise_by_definition(
        x: &[i64],
        (c, h, w): (usize, usize, usize),
        k: &[i64],
        g: [usize; 8],
        (oh, ow): (usize, usize),
    ) -> Vec<i64> {
        let [kh, kw, sh, sw, dh, dw, pt, pl] = g;
        let mut out = vec![0; c * oh * ow];
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let (iy, ix) = ((oy * sh + ky * dh) as i64 - pt as i64, (ox * sw + kx * dw) as i64 - pl as i64);
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                out[(ch * oh + oy) * ow + ox] += x[(ch * h + iy as usize) * w + ix as usize] * k[(ch * kh + ky) * kw + kx];
                            }
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn depthwise_equals_its_definition() {
        // [kh, kw, sh, sw, dh, dw, pads], on inputs as narrow as one column (a tap column no output reads).
        let cases = [
            ([3, 3, 1, 1, 1, 1, 1, 1], (5, 7)),
            ([3, 3, 2, 2, 1, 1, 1, 1], (6, 5)),
            ([3, 3, 1, 1, 1, 1, 1, 1], (1, 1)),
            ([5, 5, 2, 2, 1, 1, 2, 2], (1, 3)),
            ([3, 3, 1, 2, 2, 2, 2, 2], (4, 6)),
            ([3, 1, 1, 1, 1, 1, 1, 0], (3, 2)),
        ];
        for (g, (h, w)) in cases {
            let [kh, kw, sh, sw, dh, dw, pt, pl] = g;
            let (oh, ow) = ((h + 2 * pt - dh * (kh - 1) - 1) / sh + 1, (w + 2 * pl - dw * (kw - 1) - 1) / sw + 1);
            let c = 3;
            let x: Vec<i64> = (0..c * h * w).map(|i| (i as i64 * 7919) % 23 - 11).collect();
            let k: Vec<i64> = (0..c * kh * kw).map(|i| (i as i64 * 104729) % 13 - 6).collect();
            let to = |v: usize| v as i64;
            let (strides, pads, dil) = ([to(sh), to(sw)], [to(pt), to(pl), to(pt), to(pl)], [to(dh), to(dw)]);
            let got = conv_core(&x, &[1, c, h, w], &k, &[c, 1, kh, kw], &strides, &pads, &dil, c, &[1, c, oh, ow]).unwrap();
            assert_eq!(got, depthwise_by_definition(&x, (c, h, w), &k, g, (oh, ow)), "{g:?} on {h}x{w}");
        }
    }
}
