//! The rounding at the heart of round-weights (GPTQ, after Optimal Brain Quantization): with H the
//! second-moment matrix of a layer's inputs, rounding a weight row w to q changes the output energy by
//! (q − w)ᵀ H (q − w). Columns are rounded one at a time and each column's error is spread over the
//! columns not yet rounded as the upper Cholesky factor of H⁻¹ prescribes, which minimizes that energy
//! for every remaining column given the ones already fixed.

/// One weight row's integer grid: value = (q − zp) · scale, q in [qmin, qmax].
#[derive(Clone, Copy, Debug)]
pub struct Grid {
    pub scale: f64,
    pub zp: i32,
    pub qmin: i32,
    pub qmax: i32,
}

impl Grid {
    /// Round to nearest, ties to even, as place-qdq's quantize does.
    pub fn round(&self, w: f64) -> i32 {
        ((w / self.scale).round_ties_even() + self.zp as f64).clamp(self.qmin as f64, self.qmax as f64) as i32
    }

    pub fn value(&self, q: i32) -> f64 {
        (q - self.zp) as f64 * self.scale
    }
}

/// Lower Cholesky factor L of the symmetric `a` ([n, n] row-major): a = L Lᵀ. None if `a` is not
/// positive definite.
fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let dot: f64 = l[i * n..i * n + j].iter().zip(&l[j * n..j * n + j]).map(|(x, y)| x * y).sum();
            let v = a[i * n + j] - dot;
            if i == j {
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[i * n + i] = v.sqrt();
            } else {
                l[i * n + j] = v / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// The inverse of the lower-triangular `l`, itself lower triangular.
fn invert_lower(l: &[f64], n: usize) -> Vec<f64> {
    let mut x = vec![0.0; n * n];
    for i in 0..n {
        // Row i of X: (e_i − Σ_{k<i} L[i][k] X[k]) / L[i][i]; row k of X is zero past column k.
        let (done, row) = x.split_at_mut(i * n);
        let row = &mut row[..n];
        row[i] = 1.0;
        for k in 0..i {
            let f = l[i * n + k];
            if f != 0.0 {
                for (r, xk) in row[..=k].iter_mut().zip(&done[k * n..k * n + k + 1]) {
                    *r -= f * xk;
                }
            }
        }
        let d = l[i * n + i];
        row[..=i].iter_mut().for_each(|r| *r /= d);
    }
    x
}

/// The upper-triangular U with H⁻¹ = Uᵀ U. Reversing the order of rows and columns (J) turns the
/// problem into a plain Cholesky: J H J = L Lᵀ gives H = R Rᵀ with R = J L J upper, so H⁻¹ = R⁻ᵀ R⁻¹
/// and U = R⁻¹ = J L⁻¹ J.
fn inverse_factor(h: &[f64], n: usize) -> Option<Vec<f64>> {
    let rev: Vec<f64> = (0..n * n).map(|i| h[(n - 1 - i / n) * n + (n - 1 - i % n)]).collect();
    let li = invert_lower(&cholesky(&rev, n)?, n);
    Some((0..n * n).map(|i| li[(n - 1 - i / n) * n + (n - 1 - i % n)]).collect())
}

/// Rounds the rows of `w` ([rows, k] row-major, changed in place) onto their grids, minimizing
/// Σ_rows (q − w)ᵀ H (q − w) for the second-moment matrix `h` ([k, k]). Columns are taken in order
/// of decreasing H diagonal (the inputs with the most energy first, while the most columns remain to
/// absorb their error); inputs never seen (zero diagonal) round to nearest. `damp` × the mean
/// diagonal is added to the diagonal, as a prior that keeps H invertible with few samples.
/// Returns the integers, or None if H cannot be factored.
pub fn round_rows(w: &mut [f64], rows: usize, k: usize, h: &[f64], grids: &[Grid], damp: f64) -> Option<Vec<i32>> {
    let diag: Vec<f64> = (0..k).map(|i| h[i * k + i]).collect();
    let mean = diag.iter().sum::<f64>() / k.max(1) as f64;
    if mean <= 0.0 || !mean.is_finite() {
        return None;
    }
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|a, b| diag[*b].total_cmp(&diag[*a]).then(a.cmp(b)));
    let mut hp = vec![0.0; k * k];
    for (i, oi) in order.iter().enumerate() {
        for (j, oj) in order.iter().enumerate() {
            hp[i * k + j] = h[oi * k + oj];
        }
        hp[i * k + i] = if diag[*oi] > 0.0 { hp[i * k + i] + damp * mean } else { 1.0 };
    }
    let u = inverse_factor(&hp, k)?;
    let mut q = vec![0i32; rows * k];
    // Rows in blocks, each block's rows permuted into `block` ([n][k]): every row of U is then read
    // once per block rather than once per row (U outgrows L2 at a few hundred inputs).
    const BLOCK: usize = 16;
    let mut block = vec![0.0; BLOCK * k];
    for r0 in (0..rows).step_by(BLOCK) {
        let n = BLOCK.min(rows - r0);
        for b in 0..n {
            for (i, oi) in order.iter().enumerate() {
                block[b * k + i] = w[(r0 + b) * k + oi];
            }
        }
        for i in 0..k {
            let ui = &u[i * k + i..(i + 1) * k];
            for b in 0..n {
                let g = grids[r0 + b];
                let row = &mut block[b * k..(b + 1) * k];
                let qi = g.round(row[i]);
                q[(r0 + b) * k + order[i]] = qi;
                let e = (row[i] - g.value(qi)) / ui[0];
                for (x, f) in row[i + 1..].iter_mut().zip(&ui[1..]) {
                    *x -= e * f;
                }
            }
        }
        for b in 0..n {
            let g = grids[r0 + b];
            for i in 0..k {
                w[(r0 + b) * k + i] = g.value(q[(r0 + b) * k + i]);
            }
        }
    }
    Some(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A random symmetric positive definite matrix X Xᵀ / m from a fixed generator.
    fn spd(k: usize, m: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        };
        // Correlated inputs: each is a mix of a shared factor and its own noise.
        let x: Vec<f64> = (0..m)
            .flat_map(|_| {
                let f = next();
                (0..k).map(|_| 0.8 * f + 0.6 * next()).collect::<Vec<_>>()
            })
            .collect();
        let mut h = vec![0.0; k * k];
        for p in 0..m {
            for i in 0..k {
                for j in 0..k {
                    h[i * k + j] += x[p * k + i] * x[p * k + j] / m as f64;
                }
            }
        }
        (h, x)
    }

    #[test]
    fn inverse_factor_inverts() {
        let k = 7;
        let (h, _) = spd(k, 50, 1);
        let u = inverse_factor(&h, k).unwrap();
        // H · (Uᵀ U) = I, and U is upper triangular.
        for i in 0..k {
            for j in 0..i {
                assert_eq!(u[i * k + j], 0.0);
            }
            for j in 0..k {
                let v: f64 = (0..k).map(|m| h[i * k + m] * (0..k).map(|t| u[t * k + m] * u[t * k + j]).sum::<f64>()).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-9, "({i},{j}) = {v}");
            }
        }
    }

    #[test]
    fn rounding_lowers_output_error_against_nearest() {
        let (k, rows) = (24, 16);
        let (h, _) = spd(k, 400, 7);
        let (_, wsrc) = spd(rows, k, 3);
        let w: Vec<f64> = wsrc.iter().map(|x| x * 0.3).collect();
        let grid = Grid { scale: 0.05, zp: 0, qmin: -127, qmax: 127 };
        let energy = |q: &[f64]| -> f64 {
            (0..rows)
                .map(|r| {
                    let d: Vec<f64> = (0..k).map(|i| q[r * k + i] - w[r * k + i]).collect();
                    (0..k).map(|i| (0..k).map(|j| d[i] * h[i * k + j] * d[j]).sum::<f64>()).sum::<f64>()
                })
                .sum()
        };
        let nearest: Vec<f64> = w.iter().map(|x| grid.value(grid.round(*x))).collect();
        let mut rounded = w.clone();
        let q = round_rows(&mut rounded, rows, k, &h, &vec![grid; rows], 0.01).unwrap();
        assert!(q.iter().zip(&rounded).all(|(q, v)| grid.value(*q) == *v));
        let (e_near, e_gptq) = (energy(&nearest), energy(&rounded));
        assert!(e_gptq < 0.7 * e_near, "gptq {e_gptq} vs nearest {e_near}");
    }

    #[test]
    fn grid_clamps_and_rounds_ties_to_even() {
        let g = Grid { scale: 0.5, zp: 3, qmin: -128, qmax: 127 };
        assert_eq!(g.round(0.25), 3);
        assert_eq!(g.round(0.75), 5);
        assert_eq!(g.round(1e9), 127);
        assert_eq!(g.value(5), 1.0);
    }
}
