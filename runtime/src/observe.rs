//! Streaming, mergeable calibration observers. One pass over the data feeds every range method: running
//! min/max, moments, a moving average of per-sample min/max, and a fixed-size histogram whose range grows
//! (bins merge in pairs), so memory stays constant however many samples are seen.

/// Histogram bins. Range growth doubles the bin width, so the bin count never changes.
pub const BINS: usize = 2048;

#[derive(Clone, Debug, PartialEq)]
pub struct Observer {
    pub min: f32,
    pub max: f32,
    pub count: u64,
    sum: f64,
    sumsq: f64,
    /// Exponential moving averages of each sample's min and max.
    pub ema_min: f32,
    pub ema_max: f32,
    /// The moving-average constant, fixed when the observer is made (one pass serves one constant).
    pub ema_c: f32,
    pub samples: u64,
    /// Bins cover [lo, lo + BINS * width); lo is a multiple of width, so 0 is always a bin edge.
    lo: f64,
    width: f64,
    hist: Vec<u64>,
}

/// How a calibration range is chosen from an observer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RangeMethod {
    MinMax,
    MeanStd(f32),
    Percentile(f32),
    MovingAverage(f32),
    Entropy,
    Mse,
    /// Per tensor, whichever of the others has the lowest estimated quantization error.
    Auto,
}

impl RangeMethod {
    /// Parses `minmax | meanstd[:k] | percentile[:p] | moving-average[:c] | entropy | mse | auto`.
    pub fn parse(s: &str) -> Result<RangeMethod, String> {
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a.parse::<f32>().map_err(|_| format!("bad number in calibration method {s:?}"))?)),
            None => (s, None),
        };
        let m = match name {
            "minmax" => RangeMethod::MinMax,
            "meanstd" => RangeMethod::MeanStd(arg.unwrap_or(4.0)),
            "percentile" => RangeMethod::Percentile(arg.unwrap_or(99.999)),
            "moving-average" => RangeMethod::MovingAverage(arg.unwrap_or(0.01)),
            "entropy" => RangeMethod::Entropy,
            "mse" => RangeMethod::Mse,
            "auto" => RangeMethod::Auto,
            _ => {
                return Err(format!(
                    "unknown calibration method {s:?} (minmax, meanstd[:k], percentile[:p], moving-average[:c], entropy, mse, auto)"
                ))
            }
        };
        match m {
            RangeMethod::Percentile(p) if !(50.0..=100.0).contains(&p) => Err(format!("percentile {p} must be in 50..100")),
            RangeMethod::MeanStd(k) if k <= 0.0 => Err("meanstd k must be > 0".into()),
            RangeMethod::MovingAverage(c) if !(0.0..=1.0).contains(&c) || c == 0.0 => Err("moving-average c must be in (0, 1]".into()),
            m => Ok(m),
        }
    }

    pub fn name(&self) -> String {
        match self {
            RangeMethod::MinMax => "minmax".into(),
            RangeMethod::MeanStd(k) => format!("meanstd:{k}"),
            RangeMethod::Percentile(p) => format!("percentile:{p}"),
            RangeMethod::MovingAverage(c) => format!("moving-average:{c}"),
            RangeMethod::Entropy => "entropy".into(),
            RangeMethod::Mse => "mse".into(),
            RangeMethod::Auto => "auto".into(),
        }
    }

    /// Every concrete method, for `--calib-method all`.
    pub fn all() -> Vec<RangeMethod> {
        vec![
            RangeMethod::MinMax,
            RangeMethod::MeanStd(4.0),
            RangeMethod::Percentile(99.999),
            RangeMethod::MovingAverage(0.01),
            RangeMethod::Entropy,
            RangeMethod::Mse,
            RangeMethod::Auto,
        ]
    }
}

impl Default for Observer {
    fn default() -> Self {
        Observer {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            count: 0,
            sum: 0.0,
            sumsq: 0.0,
            ema_min: 0.0,
            ema_max: 0.0,
            ema_c: 0.01,
            samples: 0,
            lo: 0.0,
            width: 0.0,
            hist: vec![0; BINS],
        }
    }
}

impl Observer {
    pub fn with_ema(c: f32) -> Observer {
        Observer { ema_c: c, ..Default::default() }
    }

    pub fn mean(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }

    pub fn std(&self) -> f64 {
        let m = self.mean();
        (self.sumsq / self.count.max(1) as f64 - m * m).max(0.0).sqrt()
    }

    /// The histogram: its first bin's lower edge, the bin width and the counts (empty before any data).
    pub fn histogram(&self) -> (f64, f64, &[u64]) {
        (self.lo, self.width, &self.hist)
    }

    /// Widens the histogram (merging bins in pairs) until it covers [a, b].
    fn cover(&mut self, a: f64, b: f64) {
        if self.width == 0.0 {
            // The first sample sets a bin width that covers its range with room to spare, on a 0 edge.
            let span = (b.max(0.0) - a.min(0.0)).max(1e-12);
            self.width = span / (BINS as f64 / 2.0);
            self.lo = (a.min(0.0) / self.width).floor() * self.width;
            if self.lo + BINS as f64 * self.width <= b {
                self.lo = ((b - BINS as f64 * self.width) / self.width).floor() * self.width + self.width;
            }
        }
        while a < self.lo || b >= self.lo + BINS as f64 * self.width {
            let w2 = self.width * 2.0;
            // Keep 0 on an edge: the new origin is the old one rounded down to the new width, or moved
            // down by half the span when the data extends below.
            let mut new_lo = (self.lo / w2).floor() * w2;
            if a < self.lo {
                let needed = ((self.lo + BINS as f64 * self.width - a) / w2).ceil() * w2;
                new_lo = (((self.lo + BINS as f64 * self.width) - needed.min(BINS as f64 * w2)) / w2).floor() * w2;
            }
            let mut h = vec![0u64; BINS];
            for (i, c) in self.hist.iter().enumerate() {
                if *c > 0 {
                    let center = self.lo + (i as f64 + 0.5) * self.width;
                    let j = (((center - new_lo) / w2).floor() as i64).clamp(0, BINS as i64 - 1) as usize;
                    h[j] += c;
                }
            }
            self.hist = h;
            self.lo = new_lo;
            self.width = w2;
        }
    }

    /// Adds one sample's values.
    pub fn observe(&mut self, data: &[f32]) {
        let (mut mn, mut mx) = (f32::INFINITY, f32::NEG_INFINITY);
        let (mut s, mut ss) = (0f64, 0f64);
        let mut n = 0u64;
        for &v in data {
            if v.is_finite() {
                mn = mn.min(v);
                mx = mx.max(v);
                s += v as f64;
                ss += (v as f64) * (v as f64);
                n += 1;
            }
        }
        if n == 0 {
            return;
        }
        self.min = self.min.min(mn);
        self.max = self.max.max(mx);
        self.count += n;
        self.sum += s;
        self.sumsq += ss;
        if self.samples == 0 {
            (self.ema_min, self.ema_max) = (mn, mx);
        } else {
            let c = self.ema_c;
            self.ema_min = self.ema_min * (1.0 - c) + mn * c;
            self.ema_max = self.ema_max * (1.0 - c) + mx * c;
        }
        self.samples += 1;
        self.cover(mn as f64, mx as f64);
        let inv = 1.0 / self.width;
        for &v in data {
            if v.is_finite() {
                let j = (((v as f64 - self.lo) * inv) as i64).clamp(0, BINS as i64 - 1) as usize;
                self.hist[j] += 1;
            }
        }
    }

    /// Merges another observer of the same tensor (e.g. from another thread).
    pub fn merge(&mut self, o: &Observer) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = o.clone();
            return;
        }
        self.cover(o.lo, o.lo + BINS as f64 * o.width - o.width * 0.5);
        while self.width < o.width {
            self.cover(self.lo - self.width, self.lo + BINS as f64 * self.width);
        }
        for (i, c) in o.hist.iter().enumerate() {
            if *c > 0 {
                let center = o.lo + (i as f64 + 0.5) * o.width;
                let j = (((center - self.lo) / self.width).floor() as i64).clamp(0, BINS as i64 - 1) as usize;
                self.hist[j] += c;
            }
        }
        let (n1, n2) = (self.samples as f32, o.samples as f32);
        self.ema_min = (self.ema_min * n1 + o.ema_min * n2) / (n1 + n2);
        self.ema_max = (self.ema_max * n1 + o.ema_max * n2) / (n1 + n2);
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.count += o.count;
        self.sum += o.sum;
        self.sumsq += o.sumsq;
        self.samples += o.samples;
    }

    fn center(&self, i: usize) -> f64 {
        self.lo + (i as f64 + 0.5) * self.width
    }

    /// The value below which `q` (0..1) of the observed values lie.
    fn quantile(&self, q: f64) -> f32 {
        let target = q * self.count as f64;
        let mut acc = 0f64;
        for (i, c) in self.hist.iter().enumerate() {
            let next = acc + *c as f64;
            if next >= target && *c > 0 {
                let frac = ((target - acc) / *c as f64).clamp(0.0, 1.0);
                return (self.lo + (i as f64 + frac) * self.width) as f32;
            }
            acc = next;
        }
        self.max
    }

    /// Estimated mean squared quantization error of uniform quantization with `levels` steps over [a, b]:
    /// clipping error outside, rounding noise (step²/12) inside.
    pub fn quant_mse(&self, a: f32, b: f32, levels: u32) -> f64 {
        let (a, b) = (a.min(0.0) as f64, b.max(0.0) as f64);
        let step = ((b - a) / (levels - 1) as f64).max(1e-30);
        let mut err = 0f64;
        for (i, c) in self.hist.iter().enumerate() {
            if *c == 0 {
                continue;
            }
            let x = self.center(i);
            let e = if x < a {
                (a - x) * (a - x)
            } else if x > b {
                (x - b) * (x - b)
            } else {
                step * step / 12.0
            };
            err += e * *c as f64;
        }
        err / self.count.max(1) as f64
    }

    /// KL-divergence threshold search (TensorRT's entropy calibration), one-sided: over the histogram from
    /// the minimum upward, the upper clipping threshold whose `levels`-step quantization of the clipped
    /// distribution loses the least information. One-sided, because activations are quantized
    /// asymmetrically from their minimum (folding |x| would let a negative spike, e.g. a normalized
    /// background, decide the range of the positive values).
    fn entropy_threshold(&self, levels: usize) -> f32 {
        let start = (((self.min as f64 - self.lo) / self.width).floor().max(0.0) as usize).min(BINS - 1);
        let mut h: Vec<f64> = self.hist[start..].iter().map(|c| *c as f64).collect();
        let last = h.iter().rposition(|c| *c > 0.0).unwrap_or(0) + 1;
        // The minimum's bin counts as much as its neighbour (as NVIDIA's calibrator does): after a ReLU
        // it holds every zero, and a spike there makes any merging of bins look costly, so the search
        // would pick the smallest threshold and clip most of the range.
        if last > 1 {
            h[0] = h[1];
        }
        let at = |t: usize| (self.lo + (start + t) as f64 * self.width) as f32;
        if last <= levels {
            return self.max;
        }
        let mut best = (f64::INFINITY, last);
        let stride = ((last - levels) / 256).max(1);
        let mut t = levels;
        while t <= last {
            let mut p: Vec<f64> = h[..t].to_vec();
            p[t - 1] += h[t..last].iter().sum::<f64>();
            // Q: the reference squeezed into `levels` bins, spread back over the non-empty source bins.
            let mut q = vec![0f64; t];
            for k in 0..levels {
                let (s, e) = (k * t / levels, ((k + 1) * t / levels).max(k * t / levels + 1));
                let mass: f64 = h[s..e].iter().sum();
                let nonzero = h[s..e].iter().filter(|c| **c > 0.0).count();
                if nonzero > 0 {
                    for j in s..e {
                        if h[j] > 0.0 {
                            q[j] = mass / nonzero as f64;
                        }
                    }
                }
            }
            let (ps, qs): (f64, f64) = (p.iter().sum(), q.iter().sum());
            let mut kl = 0f64;
            for j in 0..t {
                if p[j] > 0.0 {
                    let pj = p[j] / ps;
                    let qj = (q[j] / qs).max(1e-12);
                    kl += pj * (pj / qj).ln();
                }
            }
            if kl < best.0 {
                best = (kl, t);
            }
            t += stride;
        }
        at(best.1).min(self.max)
    }

    /// The calibration range [a, b] by `method`, for a quantizer with `levels` steps (256 for u8).
    pub fn range(&self, method: RangeMethod, levels: u32) -> (f32, f32) {
        if self.count == 0 {
            return (0.0, 0.0);
        }
        let clampr = |a: f32, b: f32| (a.max(self.min), b.min(self.max));
        match method {
            RangeMethod::MinMax => (self.min, self.max),
            RangeMethod::MeanStd(k) => {
                let (m, s) = (self.mean() as f32, self.std() as f32);
                clampr(m - k * s, m + k * s)
            }
            RangeMethod::Percentile(p) => {
                let q = p as f64 / 100.0;
                let lo = if self.min >= 0.0 { self.min } else { self.quantile(1.0 - q) };
                (lo, self.quantile(q))
            }
            RangeMethod::MovingAverage(_) => (self.ema_min, self.ema_max),
            RangeMethod::Entropy => (self.min, self.entropy_threshold((levels as usize).clamp(2, 4096))),
            RangeMethod::Mse => {
                let mut best = (self.quant_mse(self.min, self.max, levels), (self.min, self.max));
                for i in 1..100 {
                    let f = 1.0 - i as f32 * 0.01;
                    let (a, b) = (self.min * f, self.max * f);
                    let e = self.quant_mse(a, b, levels);
                    if e < best.0 {
                        best = (e, (a, b));
                    }
                }
                best.1
            }
            RangeMethod::Auto => self.auto_pick(levels).1,
        }
    }

    /// The method `range` uses for `method`: itself, or for `auto` the candidate (min/max,
    /// percentile:99.999, entropy, mse) whose range quantizes this tensor with the least error.
    pub fn resolve(&self, method: RangeMethod, levels: u32) -> RangeMethod {
        if method != RangeMethod::Auto {
            return method;
        }
        self.auto_pick(levels).0
    }

    /// Auto's candidate with the least quantization error, and its range.
    fn auto_pick(&self, levels: u32) -> (RangeMethod, (f32, f32)) {
        let candidates = [RangeMethod::MinMax, RangeMethod::Percentile(99.999), RangeMethod::Entropy, RangeMethod::Mse];
        let mut best = (f64::INFINITY, RangeMethod::MinMax, (self.min, self.max));
        for m in candidates {
            let (a, b) = self.range(m, levels);
            let e = self.quant_mse(a, b, levels);
            if e < best.0 {
                best = (e, m, (a, b));
            }
        }
        (best.1, best.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                // Roughly normal: sum of uniforms.
                (0..4).map(|k| ((s.rotate_left(k * 16) >> 40) as f32 / (1u64 << 24) as f32) - 0.5).sum::<f32>()
            })
            .collect()
    }

    #[test]
    fn minmax_and_moments_are_exact() {
        let mut o = Observer::default();
        o.observe(&[1.0, -2.0, 3.0]);
        o.observe(&[0.5]);
        assert_eq!((o.min, o.max), (-2.0, 3.0));
        assert!((o.mean() - 0.625).abs() < 1e-12);
        assert_eq!(o.range(RangeMethod::MinMax, 256), (-2.0, 3.0));
    }

    #[test]
    fn histogram_grows_and_keeps_every_count() {
        let mut o = Observer::default();
        o.observe(&[0.1, 0.2]);
        o.observe(&[1000.0, -500.0]);
        o.observe(&data(10000, 7));
        assert_eq!(o.hist.iter().sum::<u64>(), 10004);
        assert!(o.lo <= -500.0 && o.lo + BINS as f64 * o.width > 1000.0);
    }

    #[test]
    fn merge_equals_one_stream() {
        let (a, b) = (data(5000, 1), data(5000, 2));
        let mut one = Observer::default();
        one.observe(&a);
        one.observe(&b);
        let (mut x, mut y) = (Observer::default(), Observer::default());
        x.observe(&a);
        y.observe(&b);
        x.merge(&y);
        assert_eq!((x.min, x.max, x.count), (one.min, one.max, one.count));
        assert_eq!(x.hist.iter().sum::<u64>(), one.hist.iter().sum::<u64>());
        let (p1, p2) = (x.range(RangeMethod::Percentile(99.0), 256), one.range(RangeMethod::Percentile(99.0), 256));
        assert!((p1.1 - p2.1).abs() < 0.02 && (p1.0 - p2.0).abs() < 0.02, "{p1:?} {p2:?}");
    }

    #[test]
    fn clipping_methods_clip_outliers() {
        let mut o = Observer::default();
        let mut v = data(20000, 3);
        v.push(50.0);
        o.observe(&v);
        for m in [RangeMethod::Percentile(99.9), RangeMethod::MeanStd(4.0)] {
            let (a, b) = o.range(m, 256);
            assert!(b < 10.0 && a > -10.0 && b > 0.5, "{} kept the outlier or collapsed: {a}..{b}", m.name());
        }
        // Entropy's smallest threshold is `levels` histogram bins (as in TensorRT): it clips the outlier.
        let (a, b) = o.range(RangeMethod::Entropy, 256);
        assert!(b < 25.0 && b > 0.5 && a == o.min, "entropy: {a}..{b}");
        assert_eq!(o.range(RangeMethod::MinMax, 256).1, 50.0);
        // MSE and auto minimize the estimated error, so they never do worse than min/max.
        let base = o.quant_mse(o.min, o.max, 256);
        for m in [RangeMethod::Mse, RangeMethod::Auto] {
            let (a, b) = o.range(m, 256);
            assert!(o.quant_mse(a, b, 256) <= base, "{}", m.name());
        }
        // With outlier mass that matters, MSE clips it.
        let mut o = Observer::default();
        let mut v = data(20000, 4);
        v.extend(std::iter::repeat_n(30.0, 2));
        v.extend(std::iter::repeat_n(-0.4, 5000));
        o.observe(&v);
        let (_, b) = o.range(RangeMethod::Mse, 256);
        assert!(b < 30.0, "mse kept the outlier: {b}");
    }

    #[test]
    fn entropy_is_not_misled_by_the_zeros_of_a_relu() {
        // A ReLU output: 90% zeros, the rest exponential (mean 0.5; about 1 in 700 of them above 3.3).
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let v: Vec<f32> = (0..50000)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                if i % 10 < 9 {
                    0.0
                } else {
                    (-0.5 * u.ln()).min(6.0) as f32
                }
            })
            .collect();
        let mut o = Observer::default();
        o.observe(&v);
        let (a, b) = o.range(RangeMethod::Entropy, 256);
        // Counted as they are, the zeros make any merging of bins cost ln 2 of their mass, so the search
        // keeps as few bins as it can and clips the tail (here at 2.5, 1 in 150 of the values above 0).
        assert!(a == 0.0 && b > 3.0 && b < o.max, "entropy: {a}..{b} of 0..{}", o.max);
    }

    #[test]
    fn methods_parse() {
        assert_eq!(RangeMethod::parse("percentile:99.9"), Ok(RangeMethod::Percentile(99.9)));
        assert_eq!(RangeMethod::parse("meanstd"), Ok(RangeMethod::MeanStd(4.0)));
        assert!(RangeMethod::parse("percentile:20").is_err());
        assert!(RangeMethod::parse("kl").is_err());
    }
}
