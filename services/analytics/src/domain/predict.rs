//! Predicted customer value: how many repeat purchases a customer will make (BG/NBD: Fader,
//! Hardie & Lee 2005, "Counting your customers the easy way"), what they will spend on each
//! (Gamma-Gamma: Fader, Hardie & Lee 2005, "RFM and CLV", and Hardie's note 025), and the
//! discounted value of the coming months, as the Python `lifetimes` package (0.11.3) computes
//! them. `tests/reference/bgnbd.py` makes the reference values the tests compare against.
//!
//! Everything is in days: a customer's [`Rfm`] counts repeat purchases (`frequency`), their age
//! at the last one (`recency`) and at the end of observation (`t`), and the mean value of the
//! repeat purchases (`monetary`).
//!
//! The fits follow lifetimes:
//! - BG/NBD minimises the mean negative log-likelihood over log(r, α, a, b), recency and T
//!   scaled by 1/max(T) (α is scaled back afterwards); Gamma-Gamma minimises it over
//!   log(p, q, v) on the repeat customers, unscaled. Neither has a penalty (lifetimes'
//!   `penalizer_coef=0`).
//! - lifetimes calls `scipy.optimize.minimize(method=None, jac=True, tol=1e-7)`, which is BFGS
//!   with autograd's exact gradient, stopping when the gradient's largest component is at most
//!   1e-7, within 200 iterations per parameter, from log-parameters 0.1 each. This module runs
//!   the same BFGS (scipy's update and first step, exact gradients) from the same start, with
//!   scipy's fallback Wolfe line search (`scalar_search_wolfe2`, c1 = 1e-4, c2 = 0.9); scipy
//!   first tries MINPACK's `dcsrch`, which this module does not port, so the iterates differ
//!   in detail but end at the same optimum (to about 1e-7 relative on the reference data).
//! - One deliberate difference: when no step length gives a decrease that f64 can resolve,
//!   scipy reports "precision loss" and lifetimes raises `ConvergenceError`; here the fit is
//!   kept if the predicted decrease is already below [`FLAT`] × max(1, |f|), the point being
//!   the optimum to working precision, and refused otherwise (a fit drifting to a boundary).
//!
//! Predictions are lifetimes' `conditional_expected_number_of_purchases_up_to_time` (equation
//! 10 of the BG/NBD paper), `conditional_expected_average_profit` and `customer_lifetime_value`
//! (`freq="D"`: months of 30 days, each month's purchases discounted by (1 + d)^month).

/// Days in each month of [`lifetime_value`] (lifetimes' `freq="D"`).
pub const DAYS_PER_MONTH: f64 = 30.0;

/// The fewest repeat customers (frequency > 0) a tenant needs before either model is fitted.
///
/// Only repeat customers tell the BG/NBD model when customers stop buying (a, b) and the
/// Gamma-Gamma model how spend varies between and within customers (p, q, v); one-time
/// customers only inform the purchase rate. 20 is five per parameter of the larger model, and
/// where lifetimes itself stops failing most of the time: in 60 simulated tenants per size
/// (BG/NBD r = 0.9, α = 45 days, a = 0.7, b = 3; customers' ages 60-540 days), both of its fits
/// converged for 7 tenants at about 6 repeat customers, 24 at 13, 37 at 20, 45 at 32 and 53 at
/// 48. Below it the fits are not attempted; above it a fit can still fail ([`BgNbd::fit`] and
/// [`GammaGamma::fit`] return `None`).
pub const MIN_REPEAT_CUSTOMERS: usize = 20;

/// A fit has converged when the largest component of the gradient of the mean negative
/// log-likelihood (in log-parameters) is at most this (scipy's `gtol`, from lifetimes' `tol`).
pub const GTOL: f64 = 1e-7;

/// When the line search can no longer find a decrease, the fit is kept if the decrease BFGS
/// predicts (−∇f·p) is at most this times max(1, |f|): the objective is then flat to within
/// rounding. In simulated tenants, interior optima stopped by rounding predicted at most 1.2e-14
/// × |f|, fits drifting to a boundary (a, b or p, q → ∞) at least 6e-14 × |f|.
pub const FLAT: f64 = 1e-13;

/// lifetimes' starting point: every log-parameter 0.1.
const START: f64 = 0.1;
/// Wolfe conditions: sufficient decrease and curvature.
const C1: f64 = 1e-4;
const C2: f64 = 0.9;
/// ψ's asymptotic series: the coefficients B₂ₖ / 2k of x⁻²ᵏ, k = 1..6.
const DIGAMMA_SERIES: [f64; 6] = [
    1.0 / 12.0,
    -1.0 / 120.0,
    1.0 / 252.0,
    -1.0 / 240.0,
    1.0 / 132.0,
    -691.0 / 32760.0,
];
/// Relative size of the last term at which the 2F1 series stops.
const HYP_EPS: f64 = 1e-16;
/// The most terms of the 2F1 series (z close to 1 needs many).
const HYP_MAX_TERMS: u32 = 1_000_000;

/// A customer's history, in days.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rfm {
    /// Repeat purchases (purchases after the first): a whole number.
    pub frequency: f64,
    /// Age at the last purchase (0 without repeat purchases).
    pub recency: f64,
    /// Age at the end of observation (lifetimes' `T`).
    pub t: f64,
    /// Mean value of the repeat purchases (0 without them).
    pub monetary: f64,
}

impl Rfm {
    /// Whether lifetimes would accept the history: finite; frequency a whole number ≥ 0;
    /// 0 ≤ recency ≤ t, recency 0 without repeat purchases; monetary ≥ 0, and > 0 with repeat
    /// purchases.
    pub fn is_valid(&self) -> bool {
        let Self {
            frequency,
            recency,
            t,
            monetary,
        } = *self;
        [frequency, recency, t, monetary].iter().all(|v| v.is_finite())
            && frequency >= 0.0
            && frequency.fract() == 0.0
            && (0.0..=t).contains(&recency)
            && (frequency > 0.0 || recency == 0.0)
            && monetary >= 0.0
            && (frequency == 0.0 || monetary > 0.0)
    }
}

/// The customers with repeat purchases.
pub fn repeat_customers(data: &[Rfm]) -> usize {
    data.iter().filter(|c| c.frequency > 0.0).count()
}

/// Whether the fits are attempted: every history valid and at least [`MIN_REPEAT_CUSTOMERS`]
/// repeat customers.
pub fn has_enough_data(data: &[Rfm]) -> bool {
    data.iter().all(Rfm::is_valid) && repeat_customers(data) >= MIN_REPEAT_CUSTOMERS
}

/// A fitted BG/NBD model: purchase rates Gamma(r, α) (α in days), dropout probabilities
/// Beta(a, b).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbd {
    /// Shape of the purchase rates' Gamma.
    pub r: f64,
    /// Scale of the purchase rates' Gamma, in days.
    pub alpha: f64,
    /// Beta's first shape.
    pub a: f64,
    /// Beta's second shape.
    pub b: f64,
}

impl BgNbd {
    /// The maximum-likelihood fit, as lifetimes' `BetaGeoFitter(penalizer_coef=0.0).fit`; `None`
    /// without enough data ([`has_enough_data`]) or when the minimisation does not converge.
    pub fn fit(data: &[Rfm]) -> Option<Self> {
        if !has_enough_data(data) {
            return None;
        }
        let max_t = data.iter().map(|c| c.t).fold(0.0, f64::max);
        if max_t <= 0.0 {
            return None;
        }
        let scale = 1.0 / max_t;
        let distinct = Distinct::of(data, |c| [c.frequency, c.recency, c.t]);
        let freq = Frequencies::of(&distinct.histories);
        let theta = minimise(|theta: &[f64; 4]| bg_objective(theta, &distinct, &freq, scale))?;
        let [r, alpha, a, b] = theta.map(f64::exp);
        let fit = Self {
            r,
            alpha: alpha / scale,
            a,
            b,
        };
        [fit.r, fit.alpha, fit.a, fit.b]
            .iter()
            .all(|e| e.is_finite() && *e > 0.0)
            .then_some(fit)
    }

    /// The expected repeat purchases of the customer in the next `t` days (lifetimes'
    /// `conditional_expected_number_of_purchases_up_to_time`).
    pub fn expected_purchases(&self, t: f64, c: &Rfm) -> f64 {
        let Self { r, alpha, a, b } = *self;
        let x = c.frequency;
        let age = alpha + c.t;
        let z = t / (age + t);
        let one_minus_z = age / (age + t);
        let hyp = hyp2f1_times_power(r + x, b + x, a + b + x - 1.0, z, one_minus_z, r + x);
        let numerator = (a + b + x - 1.0) / (a - 1.0) * (1.0 - hyp);
        let denominator = if x > 0.0 {
            1.0 + a / (b + x - 1.0) * (age / (alpha + c.recency)).powf(r + x)
        } else {
            1.0
        };
        numerator / denominator
    }
}

/// A fitted Gamma-Gamma model of the value of a customer's purchases: each purchase
/// Gamma(p, ν), the customers' ν Gamma(q, v).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGamma {
    /// Shape of each purchase's value.
    pub p: f64,
    /// Shape of the customers' ν.
    pub q: f64,
    /// Rate of the customers' ν, in units of value.
    pub v: f64,
}

impl GammaGamma {
    /// The maximum-likelihood fit on the repeat customers, as lifetimes'
    /// `GammaGammaFitter(penalizer_coef=0.0).fit` on the customers with frequency > 0; `None`
    /// without enough data ([`has_enough_data`]), when the minimisation does not converge, or
    /// when q ≤ 1 (the customers' mean spend p·v/(q − 1) does not exist; lifetimes would go on
    /// and predict negative values).
    pub fn fit(data: &[Rfm]) -> Option<Self> {
        if !has_enough_data(data) {
            return None;
        }
        let repeat: Vec<Rfm> = data.iter().filter(|c| c.frequency > 0.0).copied().collect();
        let distinct = Distinct::of(&repeat, |c| [c.frequency, c.monetary]);
        let freq = Frequencies::of(&distinct.histories);
        let ln_m: Vec<f64> = distinct.histories.iter().map(|c| c.monetary.ln()).collect();
        let theta = minimise(|theta: &[f64; 3]| gg_objective(theta, &distinct, &freq, &ln_m))?;
        let [p, q, v] = theta.map(f64::exp);
        let fit = Self { p, q, v };
        ([p, q, v].iter().all(|e| e.is_finite() && *e > 0.0) && q > 1.0).then_some(fit)
    }

    /// The customer's expected value per purchase (lifetimes'
    /// `conditional_expected_average_profit`): their mean, weighted p·x / (p·x + q − 1), and
    /// the population's mean p·v / (q − 1); without repeat purchases the population's mean.
    pub fn expected_average_profit(&self, c: &Rfm) -> f64 {
        let px = self.p * c.frequency;
        let weight = px / (px + self.q - 1.0);
        let mean = self.v * self.p / (self.q - 1.0);
        (1.0 - weight) * mean + weight * c.monetary
    }
}

/// The customer's value over the next `months` months of [`DAYS_PER_MONTH`] days (lifetimes'
/// `GammaGammaFitter.customer_lifetime_value(bg, ..., time=months, discount_rate=d, freq="D")`):
/// the sum over months m of expected average profit × expected purchases in month m /
/// (1 + d)^m.
pub fn lifetime_value(bg: &BgNbd, gg: &GammaGamma, c: &Rfm, months: u32, monthly_discount: f64) -> f64 {
    gg.expected_average_profit(c) * discounted_purchases(bg, c, months, monthly_discount)
}

/// The purchases expected in each of the next `months` months of [`DAYS_PER_MONTH`] days,
/// each discounted by (1 + d)^month and summed: [`lifetime_value`] without the value per
/// purchase. It depends on the frequency, recency and age alone, so customers of the same
/// history share it.
pub fn discounted_purchases(bg: &BgNbd, c: &Rfm, months: u32, monthly_discount: f64) -> f64 {
    let mut value = 0.0;
    let mut previous = 0.0;
    for month in 1..=months {
        let cumulative = bg.expected_purchases(DAYS_PER_MONTH * f64::from(month), c);
        value += (cumulative - previous) / (1.0 + monthly_discount).powf(f64::from(month));
        previous = cumulative;
    }
    value
}

/// The distinct histories of a fit's customers as its likelihood reads them, each with the
/// number of customers who have it: the likelihood is a sum over customers, so each distinct
/// history's term is computed once per evaluation and counted that many times (many customers
/// share a history: ages and recencies are whole days).
struct Distinct {
    histories: Vec<Rfm>,
    customers: Vec<f64>,
    /// The customers in all.
    total: f64,
}

impl Distinct {
    /// The histories of `data` that differ in `key`, in order of first appearance.
    #[allow(clippy::cast_precision_loss)]
    fn of<const N: usize>(data: &[Rfm], key: impl Fn(&Rfm) -> [f64; N]) -> Self {
        let mut index: std::collections::HashMap<[u64; N], usize> = std::collections::HashMap::new();
        let mut histories = Vec::new();
        let mut customers: Vec<f64> = Vec::new();
        for c in data {
            let next = histories.len();
            let at = *index.entry(key(c).map(f64::to_bits)).or_insert(next);
            if at == next {
                histories.push(*c);
                customers.push(0.0);
            }
            customers[at] += 1.0;
        }
        Self {
            histories,
            customers,
            total: data.len() as f64,
        }
    }
}

/// The distinct frequencies of a fit's customers, and each customer's among them: the terms of
/// the likelihoods that depend on the frequency alone (ln Γ and ψ of r + x, b + x, p·x, ...)
/// are computed once per distinct frequency and evaluation, not once per customer (frequencies
/// are whole numbers, and a tenant has few distinct ones).
struct Frequencies {
    values: Vec<f64>,
    of: Vec<usize>,
}

impl Frequencies {
    fn of(data: &[Rfm]) -> Self {
        let mut values: Vec<f64> = data.iter().map(|c| c.frequency).collect();
        values.sort_by(f64::total_cmp);
        values.dedup();
        let of = data
            .iter()
            .map(|c| values.partition_point(|v| *v < c.frequency))
            .collect();
        Self { values, of }
    }

    /// `f` of every distinct frequency.
    fn table(&self, f: impl Fn(f64) -> f64) -> Vec<f64> {
        self.values.iter().map(|x| f(*x)).collect()
    }
}

/// BG/NBD's mean negative log-likelihood (lifetimes' `_negative_log_likelihood`, section 7 of
/// the paper) and its gradient, at log(r, α, a, b), recency and T multiplied by `scale`.
#[allow(clippy::cast_precision_loss)]
fn bg_objective(theta: &[f64; 4], data: &Distinct, freq: &Frequencies, scale: f64) -> (f64, [f64; 4]) {
    let [r, alpha, a, b] = theta.map(f64::exp);
    let ln_alpha = alpha.ln();
    let ln_a = a.ln();
    let (lg_r, dg_r) = (ln_gamma(r), digamma(r));
    let (lg_ab, dg_ab) = (ln_gamma(a + b), digamma(a + b));
    let (lg_b, dg_b) = (ln_gamma(b), digamma(b));
    let (lg_rx, dg_rx) = (freq.table(|x| ln_gamma(r + x)), freq.table(|x| digamma(r + x)));
    let (lg_bx, dg_bx) = (freq.table(|x| ln_gamma(b + x)), freq.table(|x| digamma(b + x)));
    let (lg_abx, dg_abx) = (freq.table(|x| ln_gamma(a + b + x)), freq.table(|x| digamma(a + b + x)));
    let mut total = 0.0;
    let mut grad = [0.0; 4];
    for ((c, &k), &w) in data.histories.iter().zip(&freq.of).zip(&data.customers) {
        let x = c.frequency;
        let tx = c.recency * scale;
        let t = c.t * scale;
        let rx = r + x;
        let ln_age = (alpha + t).ln();
        let a1 = lg_rx[k] - lg_r + r * ln_alpha;
        let a3 = -rx * ln_age;
        let (ll, d) = if x > 0.0 {
            let a2 = lg_ab + lg_bx[k] - lg_b - lg_abx[k];
            let bx1 = b + x - 1.0;
            let ln_last = (tx + alpha).ln();
            let a4 = ln_a - bx1.ln() - rx * ln_last;
            let hi = a3.max(a4);
            let (e3, e4) = ((a3 - hi).exp(), (a4 - hi).exp());
            let w4 = e4 / (e3 + e4);
            let w3 = 1.0 - w4;
            let d = [
                dg_rx[k] - dg_r + ln_alpha - w3 * ln_age - w4 * ln_last,
                r / alpha - w3 * rx / (alpha + t) - w4 * rx / (tx + alpha),
                dg_ab - dg_abx[k] + w4 / a,
                dg_ab + dg_bx[k] - dg_b - dg_abx[k] - w4 / bx1,
            ];
            (a1 + a2 + hi + (e3 + e4).ln(), d)
        } else {
            let d = [
                dg_rx[k] - dg_r + ln_alpha - ln_age,
                r / alpha - rx / (alpha + t),
                0.0,
                0.0,
            ];
            (a1 + a3, d)
        };
        total += w * ll;
        for (g, d) in grad.iter_mut().zip(d) {
            *g += w * d;
        }
    }
    let n = data.total;
    let params = [r, alpha, a, b];
    (-total / n, std::array::from_fn(|i| -grad[i] * params[i] / n))
}

/// Gamma-Gamma's mean negative log-likelihood (lifetimes' `_negative_log_likelihood`, equation
/// 1a of note 025) and its gradient, at log(p, q, v), over repeat customers only; `ln_m` holds
/// each customer's ln(monetary value).
#[allow(clippy::cast_precision_loss)]
fn gg_objective(theta: &[f64; 3], data: &Distinct, freq: &Frequencies, ln_m: &[f64]) -> (f64, [f64; 3]) {
    let [p, q, v] = theta.map(f64::exp);
    let (lg_q, dg_q, ln_v) = (ln_gamma(q), digamma(q), v.ln());
    let (lg_pxq, dg_pxq) = (freq.table(|x| ln_gamma(p * x + q)), freq.table(|x| digamma(p * x + q)));
    let (lg_px, dg_px) = (freq.table(|x| ln_gamma(p * x)), freq.table(|x| digamma(p * x)));
    let ln_xs = freq.table(f64::ln);
    let mut total = 0.0;
    let mut grad = [0.0; 3];
    for (((c, &k), &ln_m), &w) in data.histories.iter().zip(&freq.of).zip(ln_m).zip(&data.customers) {
        let (x, m) = (c.frequency, c.monetary);
        let px = p * x;
        let ln_xmv = (x * m + v).ln();
        let ln_x = ln_xs[k];
        total += w * (lg_pxq[k] - lg_px[k] - lg_q + q * ln_v + (px - 1.0) * ln_m + px * ln_x - (px + q) * ln_xmv);
        grad[0] += w * x * (dg_pxq[k] - dg_px[k] + ln_m + ln_x - ln_xmv);
        grad[1] += w * (dg_pxq[k] - dg_q + ln_v - ln_xmv);
        grad[2] += w * (q / v - (px + q) / (x * m + v));
    }
    let n = data.total;
    (-total / n, [-grad[0] * p / n, -grad[1] * q / n, -grad[2] * v / n])
}

/// ln Γ(x).
fn ln_gamma(x: f64) -> f64 {
    libm::lgamma(x)
}

/// ψ(x) = d ln Γ(x) / dx for x > 0 (NaN otherwise): the recurrence ψ(x) = ψ(x + 1) − 1/x up to
/// x ≥ 10, then the asymptotic series to x⁻¹² (error below 2e-15).
fn digamma(mut x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return f64::NAN;
    }
    let mut acc = 0.0;
    while x < 10.0 {
        acc -= 1.0 / x;
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    let series = inv2 * DIGAMMA_SERIES.iter().rev().fold(0.0, |sum, &c| c + inv2 * sum);
    acc + x.ln() - 0.5 * inv - series
}

/// ₂F₁(a, b; c; z) · (1 − z)^e for 0 ≤ z < 1, `one_minus_z` given exactly. When c − a − b < 0
/// the series of ₂F₁ would grow towards z = 1, so Euler's transformation
/// ₂F₁(a, b; c; z) = (1 − z)^(c−a−b) ₂F₁(c − a, c − b; c; z) is summed instead (what lifetimes'
/// fallback does when scipy's `hyp2f1` overflows).
fn hyp2f1_times_power(a: f64, b: f64, c: f64, z: f64, one_minus_z: f64, e: f64) -> f64 {
    let d = c - a - b;
    if d >= 0.0 {
        hyp2f1_series(a, b, c, z) * (e * one_minus_z.ln()).exp()
    } else {
        hyp2f1_series(c - a, c - b, c, z) * ((d + e) * one_minus_z.ln()).exp()
    }
}

/// The Gauss series of ₂F₁(a, b; c; z), 0 ≤ z < 1, summed until the remaining terms cannot
/// change it; NaN if it does not settle.
fn hyp2f1_series(a: f64, b: f64, c: f64, z: f64) -> f64 {
    let mut term = 1.0;
    let mut total = 1.0;
    for n in 0..HYP_MAX_TERMS {
        let k = f64::from(n);
        let ratio = (a + k) * (b + k) / ((c + k) * (k + 1.0)) * z;
        term *= ratio;
        total += term;
        if !term.is_finite() {
            return f64::NAN;
        }
        if term == 0.0 {
            return total;
        }
        // Later ratios stay below max(|ratio|, z), so the tail is at most term / (1 − bound).
        let bound = ratio.abs().max(z);
        if bound < 1.0 && term.abs() <= HYP_EPS * (1.0 - bound) * total.abs() {
            return total;
        }
    }
    f64::NAN
}

/// What the line search found: the step length, and the objective and its gradient there.
struct Step<const N: usize> {
    alpha: f64,
    value: f64,
    grad: [f64; N],
}

/// BFGS as scipy's `_minimize_bfgs` with `gtol` [`GTOL`], max-norm, `maxiter` 200·N, from
/// [`START`]; the argmin, or `None` when it does not converge (see the module's doc).
fn minimise<const N: usize>(objective: impl Fn(&[f64; N]) -> (f64, [f64; N])) -> Option<[f64; N]> {
    let mut x = [START; N];
    let (mut fx, mut g) = objective(&x);
    if !fx.is_finite() || !all_finite(&g) {
        return None;
    }
    let mut h: [[f64; N]; N] = std::array::from_fn(|i| std::array::from_fn(|j| if i == j { 1.0 } else { 0.0 }));
    let mut old_fx = fx + dot(&g, &g).sqrt() / 2.0;
    let mut gnorm = max_abs(&g);
    let max_iterations = 200 * N;
    let mut k = 0;
    while gnorm > GTOL && k < max_iterations {
        let p = mat_vec(&h, &g).map(|v| -v);
        let Some(step) = line_search(&objective, &x, fx, &g, &p, old_fx) else {
            let decrement = -dot(&g, &p);
            let flat = (0.0..=FLAT * fx.abs().max(1.0)).contains(&decrement);
            return (flat && all_finite(&x)).then_some(x);
        };
        let s = p.map(|v| step.alpha * v);
        for (xi, si) in x.iter_mut().zip(&s) {
            *xi += si;
        }
        let y: [f64; N] = std::array::from_fn(|i| step.grad[i] - g[i]);
        old_fx = fx;
        fx = step.value;
        g = step.grad;
        k += 1;
        gnorm = max_abs(&g);
        if gnorm <= GTOL {
            break;
        }
        if !fx.is_finite() {
            return None;
        }
        // H ← (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ, expanded for a symmetric H.
        let sy = dot(&s, &y);
        let rho = if sy == 0.0 { 1000.0 } else { 1.0 / sy };
        let hy = mat_vec(&h, &y);
        let yhy = dot(&y, &hy);
        for (row, (&si, &hyi)) in h.iter_mut().zip(s.iter().zip(&hy)) {
            for (hij, (&sj, &hyj)) in row.iter_mut().zip(s.iter().zip(&hy)) {
                *hij = *hij - rho * (si * hyj + hyi * sj) + (rho * rho * yhy + rho) * si * sj;
            }
        }
    }
    (gnorm <= GTOL && all_finite(&x)).then_some(x)
}

/// scipy's `scalar_search_wolfe2` along `p` from `x`: a step meeting the strong Wolfe
/// conditions, or `None`. A non-finite objective counts as +∞.
fn line_search<const N: usize>(
    objective: &impl Fn(&[f64; N]) -> (f64, [f64; N]),
    x: &[f64; N],
    f0: f64,
    g0: &[f64; N],
    p: &[f64; N],
    old_f0: f64,
) -> Option<Step<N>> {
    let derphi0 = dot(g0, p);
    let eval = |alpha: f64| {
        let point: [f64; N] = std::array::from_fn(|i| x[i] + alpha * p[i]);
        let (value, grad) = objective(&point);
        (if value.is_finite() { value } else { f64::INFINITY }, grad)
    };
    let mut alpha1 = if derphi0 == 0.0 {
        1.0
    } else {
        (1.01 * 2.0 * (f0 - old_f0) / derphi0).min(1.0)
    };
    if alpha1 < 0.0 {
        alpha1 = 1.0;
    }
    let mut alpha0 = 0.0;
    let (mut phi_a1, mut g_a1) = eval(alpha1);
    let mut phi_a0 = f0;
    let mut derphi_a0 = derphi0;
    for i in 0..10 {
        if alpha1 == 0.0 {
            return None;
        }
        if phi_a1 > f0 + C1 * alpha1 * derphi0 || (i > 0 && phi_a1 >= phi_a0) {
            let bracket = Bracket {
                lo: alpha0,
                hi: alpha1,
                phi_lo: phi_a0,
                phi_hi: phi_a1,
                derphi_lo: derphi_a0,
            };
            return zoom(&eval, p, bracket, f0, derphi0);
        }
        let derphi_a1 = dot(&g_a1, p);
        if derphi_a1.abs() <= -C2 * derphi0 {
            return Some(Step {
                alpha: alpha1,
                value: phi_a1,
                grad: g_a1,
            });
        }
        if derphi_a1 >= 0.0 {
            let bracket = Bracket {
                lo: alpha1,
                hi: alpha0,
                phi_lo: phi_a1,
                phi_hi: phi_a0,
                derphi_lo: derphi_a1,
            };
            return zoom(&eval, p, bracket, f0, derphi0);
        }
        alpha0 = alpha1;
        alpha1 *= 2.0;
        phi_a0 = phi_a1;
        derphi_a0 = derphi_a1;
        (phi_a1, g_a1) = eval(alpha1);
    }
    // scipy takes the last step when the expansion runs out.
    phi_a1.is_finite().then_some(Step {
        alpha: alpha1,
        value: phi_a1,
        grad: g_a1,
    })
}

/// An interval of step lengths holding a Wolfe step: `lo` the best so far, with φ and φ' there;
/// φ at `hi`.
struct Bracket {
    lo: f64,
    hi: f64,
    phi_lo: f64,
    phi_hi: f64,
    derphi_lo: f64,
}

/// scipy's `_zoom`: narrows the bracket by cubic, then quadratic interpolation, then bisection,
/// for at most 11 trial steps.
fn zoom<const N: usize>(
    eval: &impl Fn(f64) -> (f64, [f64; N]),
    p: &[f64; N],
    mut br: Bracket,
    phi0: f64,
    derphi0: f64,
) -> Option<Step<N>> {
    let mut phi_rec = phi0;
    let mut a_rec = 0.0;
    for i in 0..=10 {
        let dalpha = br.hi - br.lo;
        let (a, b) = if dalpha < 0.0 { (br.hi, br.lo) } else { (br.lo, br.hi) };
        let cubic = if i > 0 {
            let cchk = 0.2 * dalpha;
            cubicmin(br.lo, br.phi_lo, br.derphi_lo, br.hi, br.phi_hi, a_rec, phi_rec)
                .filter(|&a_j| a_j <= b - cchk && a_j >= a + cchk)
        } else {
            None
        };
        let a_j = cubic.unwrap_or_else(|| {
            let qchk = 0.1 * dalpha;
            quadmin(br.lo, br.phi_lo, br.derphi_lo, br.hi, br.phi_hi)
                .filter(|&a_q| a_q <= b - qchk && a_q >= a + qchk)
                .unwrap_or(br.lo + 0.5 * dalpha)
        });
        let (phi_aj, g_aj) = eval(a_j);
        if phi_aj > phi0 + C1 * a_j * derphi0 || phi_aj >= br.phi_lo {
            phi_rec = br.phi_hi;
            a_rec = br.hi;
            br.hi = a_j;
            br.phi_hi = phi_aj;
        } else {
            let derphi_aj = dot(&g_aj, p);
            if derphi_aj.abs() <= -C2 * derphi0 {
                return Some(Step {
                    alpha: a_j,
                    value: phi_aj,
                    grad: g_aj,
                });
            }
            if derphi_aj * (br.hi - br.lo) >= 0.0 {
                phi_rec = br.phi_hi;
                a_rec = br.hi;
                br.hi = br.lo;
                br.phi_hi = br.phi_lo;
            } else {
                phi_rec = br.phi_lo;
                a_rec = br.lo;
            }
            br.lo = a_j;
            br.phi_lo = phi_aj;
            br.derphi_lo = derphi_aj;
        }
    }
    None
}

/// The minimiser of the cubic through (a, fa) with slope fpa, (b, fb) and (c, fc).
fn cubicmin(a: f64, fa: f64, fpa: f64, b: f64, fb: f64, c: f64, fc: f64) -> Option<f64> {
    let db = b - a;
    let dc = c - a;
    let denom = (db * dc).powi(2) * (db - dc);
    let eb = fb - fa - fpa * db;
    let ec = fc - fa - fpa * dc;
    let ca = (dc * dc * eb - db * db * ec) / denom;
    let cb = (-dc.powi(3) * eb + db.powi(3) * ec) / denom;
    let radical = cb * cb - 3.0 * ca * fpa;
    let xmin = a + (-cb + radical.sqrt()) / (3.0 * ca);
    xmin.is_finite().then_some(xmin)
}

/// The minimiser of the parabola through (a, fa) with slope fpa and (b, fb).
fn quadmin(a: f64, fa: f64, fpa: f64, b: f64, fb: f64) -> Option<f64> {
    let db = b - a;
    let curvature = (fb - fa - fpa * db) / (db * db);
    let xmin = a - fpa / (2.0 * curvature);
    xmin.is_finite().then_some(xmin)
}

fn dot<const N: usize>(u: &[f64; N], v: &[f64; N]) -> f64 {
    u.iter().zip(v).map(|(a, b)| a * b).sum()
}

fn mat_vec<const N: usize>(m: &[[f64; N]; N], v: &[f64; N]) -> [f64; N] {
    std::array::from_fn(|i| dot(&m[i], v))
}

/// The largest |component|, NaN if any is NaN.
fn max_abs<const N: usize>(v: &[f64; N]) -> f64 {
    v.iter().fold(0.0, |m: f64, e| {
        if m.is_nan() || e.is_nan() {
            f64::NAN
        } else {
            m.max(e.abs())
        }
    })
}

fn all_finite<const N: usize>(v: &[f64; N]) -> bool {
    v.iter().all(|e| e.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated from tests/reference/bgnbd.out (lifetimes 0.11.3, see bgnbd.py).
    /// lifetimes' BetaGeoFitter: r, alpha, a, b.
    const LIFETIMES_BG: [f64; 4] = [
        0.7991423806871865,
        35.35479047753396,
        0.6166007928343094,
        3.4122102960128897,
    ];
    /// lifetimes' GammaGammaFitter: p, q, v.
    const LIFETIMES_GG: [f64; 3] = [3.403275207922832, 4.677770387775596, 370.8562932991723];

    /// The customers of bgnbd.py: (frequency, recency, T, monetary value), days.
    const CUSTOMERS: [(f64, f64, f64, f64); 40] = [
        (4.0, 394.0, 409.0, 1209.01),
        (1.0, 490.0, 513.0, 107.4),
        (10.0, 249.0, 449.0, 379.88),
        (4.0, 320.0, 393.0, 508.0),
        (2.0, 352.0, 406.0, 156.03),
        (0.0, 0.0, 63.0, 0.0),
        (4.0, 27.0, 418.0, 359.79),
        (1.0, 25.0, 459.0, 230.82),
        (3.0, 55.0, 79.0, 290.31),
        (1.0, 103.0, 140.0, 78.8),
        (0.0, 0.0, 228.0, 0.0),
        (2.0, 70.0, 447.0, 833.07),
        (1.0, 22.0, 181.0, 498.64),
        (4.0, 64.0, 76.0, 292.76),
        (0.0, 0.0, 148.0, 0.0),
        (0.0, 0.0, 84.0, 0.0),
        (4.0, 236.0, 291.0, 232.23),
        (0.0, 0.0, 533.0, 0.0),
        (13.0, 448.0, 504.0, 243.23),
        (2.0, 119.0, 139.0, 413.88),
        (0.0, 0.0, 480.0, 0.0),
        (1.0, 65.0, 451.0, 268.64),
        (4.0, 375.0, 433.0, 259.19),
        (4.0, 168.0, 179.0, 209.53),
        (27.0, 405.0, 481.0, 168.85),
        (1.0, 76.0, 133.0, 172.75),
        (2.0, 59.0, 428.0, 427.97),
        (1.0, 24.0, 323.0, 204.55),
        (1.0, 264.0, 369.0, 185.83),
        (1.0, 112.0, 115.0, 148.12),
        (1.0, 69.0, 88.0, 1449.92),
        (9.0, 406.0, 463.0, 249.67),
        (1.0, 17.0, 248.0, 70.81),
        (9.0, 459.0, 481.0, 260.41),
        (13.0, 232.0, 281.0, 567.48),
        (18.0, 183.0, 456.0, 167.56),
        (0.0, 0.0, 84.0, 0.0),
        (0.0, 0.0, 236.0, 0.0),
        (1.0, 2.0, 244.0, 132.02),
        (4.0, 41.0, 60.0, 290.62),
    ];

    /// lifetimes' predictions per customer: purchases in 365 days, expected average profit,
    /// 12-month value at 1% a month.
    const EXPECTED: [(f64, f64, f64); 40] = [
        (3.047094256674214, 1024.8472063836634, 2901.813578116852),
        (0.9076532309710599, 229.8583964784658, 193.5858697478671),
        (0.41714192053091004, 376.3004848570032, 145.90162577866957),
        (2.8347445345464677, 472.9421176869155, 1245.950638873336),
        (1.6858534546133146, 221.67884153915566, 347.10857985906654),
        (2.171360812637472, 343.1769511447384, 694.9651474223754),
        (0.0025397563485769744, 356.2564025106056, 0.8407171876181955),
        (0.1332518184482576, 289.176221859649, 35.76378402930061),
        (6.37896877455428, 304.31044379534626, 1814.2014141245058),
        (2.2854174941660634, 216.11273284289751, 460.06943601434824),
        (0.9536495190301162, 343.1769511447384, 304.07353284909846),
        (0.17198661562988193, 661.2215625089729, 105.59584028284655),
        (0.8261088516140095, 417.89523007216314, 321.2937513046114),
        (8.858900370389811, 303.48369157161324, 2513.944990222171),
        (1.3038630852603856, 343.1769511447384, 416.2527571613011),
        (1.8606045207762303, 343.1769511447384, 595.0028516003133),
        (3.588005664405286, 255.82842985093288, 853.9209491000395),
        (0.47480706590823707, 343.1769511447384, 151.09684951649632),
        (6.80256939187599, 250.90068587590986, 1586.0081242767608),
        (3.7086886562178694, 389.0782427592717, 1345.077540994619),
        (0.5199692178058176, 343.1769511447384, 165.50205962802085),
        (0.2957272113588733, 307.35317985605434, 84.36366361544732),
        (2.742319380299962, 277.0540346087314, 705.8798961458311),
        (5.567656998846542, 237.95672258082809, 1234.7292293107846),
        (6.0564434340404345, 175.55879968012928, 988.4209043999257),
        (2.185490136770579, 261.26675726812977, 531.9703828926545),
        (0.14895043172598624, 398.2256445944139, 55.08431328525851),
        (0.28435669005665326, 276.5503972545309, 73.05492138404941),
        (1.0899181575429924, 267.5532356021589, 270.8041819393546),
        (2.7824835224755176, 249.4291455428134, 646.9239006256591),
        (3.104346107322145, 875.0971497659889, 2534.5479660634774),
        (5.225457459821698, 259.6940364193099, 1261.132663458015),
        (0.4089264368363416, 212.27259814191183, 80.7037264592894),
        (5.509906692209452, 269.28269793778094, 1378.7140148701335),
        (8.977631644883527, 550.2652855032472, 4600.151161430442),
        (9.350084934679347e-05, 177.50627972323784, 0.015429687438607233),
        (1.8606045207762303, 343.1769511447384, 595.0028516003133),
        (0.9288589224310205, 343.1769511447384, 296.1414531260862),
        (0.2549368398780523, 241.6912020276858, 57.28882997636766),
        (9.029816733009236, 301.79886982896903, 2550.3736545156844),
    ];

    fn customers() -> Vec<Rfm> {
        CUSTOMERS
            .iter()
            .map(|&(frequency, recency, t, monetary)| Rfm {
                frequency,
                recency,
                t,
                monetary,
            })
            .collect()
    }

    fn assert_close(what: &str, got: f64, want: f64, relative: f64) {
        let error = (got - want).abs() / want.abs();
        assert!(
            error <= relative,
            "{what}: {got}, lifetimes {want} (relative error {error:e})"
        );
    }

    fn lifetimes_models() -> (BgNbd, GammaGamma) {
        let [r, alpha, a, b] = LIFETIMES_BG;
        let [p, q, v] = LIFETIMES_GG;
        (BgNbd { r, alpha, a, b }, GammaGamma { p, q, v })
    }

    #[test]
    fn fits_match_lifetimes() {
        let data = customers();
        let bg = BgNbd::fit(&data).expect("BG/NBD fit");
        let gg = GammaGamma::fit(&data).expect("Gamma-Gamma fit");
        let names = ["r", "alpha", "a", "b", "p", "q", "v"];
        let got = [bg.r, bg.alpha, bg.a, bg.b, gg.p, gg.q, gg.v];
        let want = LIFETIMES_BG.into_iter().chain(LIFETIMES_GG);
        for ((name, got), want) in names.into_iter().zip(got).zip(want) {
            assert_close(name, got, want, 1e-4);
        }
    }

    #[test]
    fn predictions_match_lifetimes_with_its_parameters() {
        let (bg, gg) = lifetimes_models();
        for (i, (c, &(purchases, profit, value))) in customers().iter().zip(&EXPECTED).enumerate() {
            assert_close(
                &format!("purchases of {i}"),
                bg.expected_purchases(365.0, c),
                purchases,
                1e-9,
            );
            assert_close(&format!("profit of {i}"), gg.expected_average_profit(c), profit, 1e-12);
            assert_close(
                &format!("value of {i}"),
                lifetime_value(&bg, &gg, c, 12, 0.01),
                value,
                1e-9,
            );
        }
    }

    #[test]
    fn predictions_from_own_fits_match_lifetimes() {
        let data = customers();
        let bg = BgNbd::fit(&data).expect("BG/NBD fit");
        let gg = GammaGamma::fit(&data).expect("Gamma-Gamma fit");
        for (i, (c, &(purchases, profit, value))) in data.iter().zip(&EXPECTED).enumerate() {
            assert_close(
                &format!("purchases of {i}"),
                bg.expected_purchases(365.0, c),
                purchases,
                1e-5,
            );
            assert_close(&format!("profit of {i}"), gg.expected_average_profit(c), profit, 1e-5);
            assert_close(
                &format!("value of {i}"),
                lifetime_value(&bg, &gg, c, 12, 0.01),
                value,
                1e-5,
            );
        }
    }

    #[test]
    fn too_few_repeat_customers_are_not_fitted() {
        let mut repeat = 0;
        let data: Vec<Rfm> = customers()
            .into_iter()
            .filter(|c| {
                repeat += usize::from(c.frequency > 0.0);
                c.frequency == 0.0 || repeat < MIN_REPEAT_CUSTOMERS
            })
            .collect();
        assert_eq!(repeat_customers(&data), MIN_REPEAT_CUSTOMERS - 1);
        assert!(!has_enough_data(&data));
        assert_eq!(BgNbd::fit(&data), None);
        assert_eq!(GammaGamma::fit(&data), None);
        assert!(has_enough_data(&customers()));
    }

    #[test]
    fn invalid_histories_are_not_fitted() {
        let bad = [
            Rfm {
                frequency: 2.0,
                recency: 500.0,
                t: 400.0,
                monetary: 10.0,
            },
            Rfm {
                frequency: 0.0,
                recency: 5.0,
                t: 400.0,
                monetary: 0.0,
            },
            Rfm {
                frequency: 1.5,
                recency: 5.0,
                t: 400.0,
                monetary: 10.0,
            },
            Rfm {
                frequency: 2.0,
                recency: 5.0,
                t: 400.0,
                monetary: 0.0,
            },
            Rfm {
                frequency: 2.0,
                recency: f64::NAN,
                t: 400.0,
                monetary: 10.0,
            },
        ];
        for c in bad {
            assert!(!c.is_valid(), "{c:?}");
            let mut data = customers();
            data.push(c);
            assert_eq!(BgNbd::fit(&data), None);
            assert_eq!(GammaGamma::fit(&data), None);
        }
        assert!(customers().iter().all(Rfm::is_valid));
    }

    #[test]
    fn nothing_is_expected_in_no_time() {
        let (bg, gg) = lifetimes_models();
        for c in customers() {
            assert!(bg.expected_purchases(0.0, &c).abs() <= 0.0);
            assert!(lifetime_value(&bg, &gg, &c, 0, 0.01).abs() <= 0.0);
        }
    }

    /// Central differences of `f` at `theta` against its gradient.
    fn check_gradient<const N: usize>(what: &str, f: impl Fn(&[f64; N]) -> (f64, [f64; N]), theta: [f64; N]) {
        let (_, grad) = f(&theta);
        let h = 1e-6;
        for (i, g) in grad.into_iter().enumerate() {
            let (mut up, mut down) = (theta, theta);
            up[i] += h;
            down[i] -= h;
            let numeric = (f(&up).0 - f(&down).0) / (2.0 * h);
            assert!(
                (numeric - g).abs() <= 1e-6 * g.abs().max(1.0),
                "{what} {i}: {numeric}, analytic {g}"
            );
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let data = customers();
        let repeat: Vec<Rfm> = data.iter().filter(|c| c.frequency > 0.0).copied().collect();
        let distinct = Distinct::of(&data, |c| [c.frequency, c.recency, c.t]);
        let freq = Frequencies::of(&distinct.histories);
        check_gradient(
            "BG/NBD",
            |theta| bg_objective(theta, &distinct, &freq, 1.0 / 533.0),
            [-0.3, -2.1, 0.4, 1.2],
        );
        let distinct = Distinct::of(&repeat, |c| [c.frequency, c.monetary]);
        let (freq, ln_m) = (
            Frequencies::of(&distinct.histories),
            distinct.histories.iter().map(|c| c.monetary.ln()).collect::<Vec<_>>(),
        );
        check_gradient(
            "Gamma-Gamma",
            |theta| gg_objective(theta, &distinct, &freq, &ln_m),
            [1.1, 1.6, 5.8],
        );
    }

    /// A history shared by several customers counts once per customer: the objective over the
    /// distinct histories is the mean of each customer's log-likelihood, written out here from
    /// equation 6 of the BG/NBD paper and equation 1a of note 025.
    #[test]
    #[allow(clippy::cast_precision_loss)]
    fn shared_histories_count_once_per_customer() {
        let mut data = customers();
        // The first customer five times, a one-time buyer three times.
        data.extend([data[0]; 4]);
        data.extend([data[5]; 2]);
        let lg = libm::lgamma;
        let (scale, theta) = (1.0 / 533.0, [-0.3, -2.1, 0.4, 1.2]);
        let [r, alpha, a, b] = theta.map(f64::exp);
        let bg_ll = |c: &Rfm| {
            let (x, tx, t) = (c.frequency, c.recency * scale, c.t * scale);
            let a1 = lg(r + x) - lg(r) + r * alpha.ln();
            let a2 = lg(a + b) + lg(b + x) - lg(b) - lg(a + b + x);
            let a3 = -(r + x) * (alpha + t).ln();
            let a4 = if x > 0.0 {
                (a / (b + x - 1.0)).ln() - (r + x) * (alpha + tx).ln()
            } else {
                f64::NEG_INFINITY
            };
            a1 + a2 + (a3.exp() + a4.exp()).ln()
        };
        let want = -data.iter().map(bg_ll).sum::<f64>() / data.len() as f64;
        let distinct = Distinct::of(&data, |c| [c.frequency, c.recency, c.t]);
        assert!(distinct.histories.len() <= customers().len());
        let (got, _) = bg_objective(&theta, &distinct, &Frequencies::of(&distinct.histories), scale);
        assert_close("BG/NBD objective", got, want, 1e-12);

        let repeat: Vec<Rfm> = data.iter().filter(|c| c.frequency > 0.0).copied().collect();
        let [p, q, v] = [1.1f64, 1.6, 5.8].map(f64::exp);
        let gg_ll = |c: &Rfm| {
            let (x, m) = (c.frequency, c.monetary);
            lg(p * x + q) - lg(p * x) - lg(q) + q * v.ln() + (p * x - 1.0) * m.ln() + p * x * x.ln()
                - (p * x + q) * (x * m + v).ln()
        };
        let want = -repeat.iter().map(gg_ll).sum::<f64>() / repeat.len() as f64;
        let distinct = Distinct::of(&repeat, |c| [c.frequency, c.monetary]);
        let ln_m: Vec<f64> = distinct.histories.iter().map(|c| c.monetary.ln()).collect();
        let (got, _) = gg_objective(
            &[1.1, 1.6, 5.8],
            &distinct,
            &Frequencies::of(&distinct.histories),
            &ln_m,
        );
        assert_close("Gamma-Gamma objective", got, want, 1e-12);
    }

    #[test]
    fn special_functions() {
        // ψ(1) = −γ, ψ(1/2) = −γ − 2 ln 2, ψ(20.5) from ψ(x + 1) = ψ(x) + 1/x.
        assert_close("digamma(1)", digamma(1.0), -0.577_215_664_901_532_9, 1e-13);
        assert_close("digamma(0.5)", digamma(0.5), -1.963_510_026_021_423_5, 1e-13);
        assert_close("digamma(20.5)", digamma(20.5), digamma(19.5) + 1.0 / 19.5, 1e-14);
        // ₂F₁(1, 1; 2; z) = −ln(1 − z) / z (series), ₂F₁(2, 3/2; 3/2; z) = (1 − z)^−2 (Euler).
        assert_close(
            "2F1(1,1;2;0.9)",
            hyp2f1_times_power(1.0, 1.0, 2.0, 0.9, 0.1, 0.0),
            -(0.1f64.ln()) / 0.9,
            1e-13,
        );
        assert_close(
            "2F1(2,1.5;1.5;0.9)",
            hyp2f1_times_power(2.0, 1.5, 1.5, 0.9, 0.1, 0.0),
            100.0,
            1e-12,
        );
        assert_close(
            "2F1 · power",
            hyp2f1_times_power(1.0, 1.0, 2.0, 0.5, 0.5, 2.0),
            2.0f64.ln() / 2.0,
            1e-13,
        );
    }
}
