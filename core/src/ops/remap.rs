//! Heterogeneous weight sharing (method.md §5): the stored weights `W` stay in the multiplicative
//! domain and the MF operator sees `R(W)`.
//!
//! - `none`: `R(W) = W` (the ablation that shows the tearing).
//! - `cdf`: rank-based Gaussian→Laplacian matching. With `u = (rank(w)+½)/n`, `μ = mean(w)`,
//!   `b = std(w)/√2`: `w_L = μ − b·sgn(u−½)·ln(1 − 2|u−½|)`, straight-through to `W`.
//! - `cdf-affine` (default): `cdf`, then a learnable affine map per equal-width bin of `w`
//!   (K bins, scale `a_k = softplus(â_k)` from 1, so it stays positive and grows at most
//!   linearly in `â`; shift `b_k` from 0); gradients reach `W`, `â` and `b`.
//! - `fc`: `cdf`, then a learnable `Linear(K→K)` (from the identity) on the means of the K
//!   equal-count rank groups, broadcast back by rank as a per-group offset.
//!
//! In an Add layer the remap's parameters learn from the raw gradient and the weights from
//! AdderNet's scaled one ([`Remap::apply_split`]); remap parameters are never weight-decayed (the optimizer exempts everything under a `remap`
//! path): decay would pull `fc`'s matrix towards 0 instead of the identity it starts at.
//!
//! [`soft_kl_to_laplace`] is the optional regulariser (`remap.kl_weight`): KL from a differentiable
//! (linearly interpolated) histogram of the remapped weights to their fitted Laplace.

use std::cell::RefCell;

use tch::{Kind, Tensor, nn};

use super::straight_through;
use crate::spec::config::RemapKind;

/// `softplus⁻¹(1) = ln(e − 1)`: the stored value of a scale of 1.
const SOFTPLUS_ONE: f64 = 0.541_324_854_612_918_1;

/// Per-layer remap state; learnable parameters live under the layer's `remap` path.
#[derive(Debug)]
pub struct Remap {
    pub kind: RemapKind,
    bins: i64,
    a: Option<Tensor>,
    b: Option<Tensor>,
    fc_weight: Option<Tensor>,
    fc_bias: Option<Tensor>,
    /// What the map computes from the weights' values alone (ranks, the Laplace target, bins),
    /// per weight slice: computed once per optimizer step, not once per forward.
    cache: RefCell<Vec<Cached>>,
}

/// The value-only part of [`Remap::map`] for one weight tensor (a slice of a layer's weight).
#[derive(Debug)]
struct Cached {
    /// The tensor it was computed from, held so that its storage cannot be freed and reused by
    /// another tensor while cached; a hit needs the same storage, shape, strides and version
    /// (every in-place write — an optimizer step, a channel sort, a checkpoint load — bumps the
    /// version a view shares with its parameter).
    src: Tensor,
    version: i64,
    /// `target − w` (flattened, no gradient): `w + delta` is the straight-through remap.
    delta: Tensor,
    /// `cdf-affine`: each element's value bin; `fc`: its rank group.
    bins: Option<Tensor>,
}

/// Entries kept per remap: the tiny slice and a few augmented ones (`hybrid = "mf"`).
const CACHED: usize = 4;

impl Remap {
    pub fn new(p: &nn::Path<'_>, kind: RemapKind, bins: i64) -> Self {
        let (mut a, mut b, mut fc_weight, mut fc_bias) = (None, None, None, None);
        match kind {
            RemapKind::None | RemapKind::Cdf => {}
            RemapKind::CdfAffine => {
                a = Some(p.var("softplus_a", &[bins], nn::Init::Const(SOFTPLUS_ONE)));
                b = Some(p.var("b", &[bins], nn::Init::Const(0.0)));
            }
            RemapKind::Fc => {
                let eye = Tensor::eye(bins, (Kind::Float, p.device()));
                fc_weight = Some(p.var_copy("fc_weight", &eye));
                fc_bias = Some(p.var("fc_bias", &[bins], nn::Init::Const(0.0)));
            }
        }
        Self {
            kind,
            bins,
            a,
            b,
            fc_weight,
            fc_bias,
            cache: RefCell::new(Vec::new()),
        }
    }

    /// The value-only part of the map of `w` (flattened as `flat`), from the cache when `w` has
    /// not changed since it was computed.
    fn values(&self, w: &Tensor, flat: &Tensor) -> (Tensor, Option<Tensor>) {
        let version = w.internal_version();
        let same = |c: &Cached| {
            c.version == version
                && c.src.data_ptr() == w.data_ptr()
                && c.src.size() == w.size()
                && c.src.stride() == w.stride()
                && c.src.device() == w.device()
        };
        let mut cache = self.cache.borrow_mut();
        if let Some(i) = cache.iter().position(same) {
            let c = cache.remove(i);
            let out = (
                c.delta.shallow_clone(),
                c.bins.as_ref().map(Tensor::shallow_clone),
            );
            cache.insert(0, c);
            return out;
        }
        let (delta, bins) = tch::no_grad(|| {
            let ranks = ranks(flat);
            let delta = laplace_target(flat, &ranks) - flat;
            let bins = match self.kind {
                RemapKind::CdfAffine => Some(value_bins(flat, self.bins)),
                RemapKind::Fc => {
                    let n = flat.size()[0];
                    Some((&ranks * self.bins).divide_scalar_mode(n, "floor"))
                }
                RemapKind::None | RemapKind::Cdf => None,
            };
            (delta, bins)
        });
        cache.retain(|c| c.src.data_ptr() != w.data_ptr() || c.src.size() != w.size());
        cache.truncate(CACHED - 1);
        cache.insert(
            0,
            Cached {
                src: w.shallow_clone(),
                version,
                delta: delta.shallow_clone(),
                bins: bins.as_ref().map(Tensor::shallow_clone),
            },
        );
        (delta, bins)
    }

    /// `cdf-affine`'s per-bin scales `a_k` (positive by construction).
    pub fn scales(&self) -> Option<Tensor> {
        self.a.as_ref().map(Tensor::softplus)
    }

    /// `R(w)` for a weight tensor of any shape; gradients reach `w` and the remap's parameters.
    pub fn apply(&self, w: &Tensor) -> Tensor {
        self.map(w, Grads::Both)
    }

    /// `R(w)` twice, by where gradients go: the first reaches `w` only (straight-through, times the
    /// detached `cdf-affine` scale), the second — the same values, `None` for kinds without
    /// parameters — reaches the remap's parameters only. An Add layer feeds the first to the op as
    /// its weight (AdderNet's scaling applies) and the second as the op's raw-gradient sink, so the
    /// remap's parameters learn from the unscaled gradient: η-scaled, they and the weights would
    /// drive each other's steps up (each step's size grows with the other) until they diverge.
    pub fn apply_split(&self, w: &Tensor) -> (Tensor, Option<Tensor>) {
        (self.apply_to_weights(w), self.apply_to_params(w))
    }

    /// The first half of [`Self::apply_split`].
    pub fn apply_to_weights(&self, w: &Tensor) -> Tensor {
        self.map(w, Grads::Weights)
    }

    /// The second half of [`Self::apply_split`].
    pub fn apply_to_params(&self, w: &Tensor) -> Option<Tensor> {
        self.has_params().then(|| self.map_params(w))
    }

    /// `R(w)` with gradients to the remap's parameters only (for a remap with parameters).
    pub fn map_params(&self, w: &Tensor) -> Tensor {
        self.map(w, Grads::Params)
    }

    /// Whether this remap learns parameters of its own (`cdf-affine`, `fc`).
    pub fn has_params(&self) -> bool {
        matches!(self.kind, RemapKind::CdfAffine | RemapKind::Fc)
    }

    fn map(&self, w: &Tensor, grads: Grads) -> Tensor {
        if self.kind == RemapKind::None {
            return w.shallow_clone();
        }
        let shape = w.size();
        let flat = w.flatten(0, -1);
        let (delta, bins) = self.values(w, &flat);
        // Straight-through: the target's values, the gradient of `flat`.
        let mut r = &flat + delta;
        if grads == Grads::Params {
            r = r.detach();
        }
        let param = |t: &Tensor| {
            if grads == Grads::Weights {
                t.detach()
            } else {
                t.shallow_clone()
            }
        };
        let out = match (
            self.kind,
            &self.a,
            &self.b,
            &self.fc_weight,
            &self.fc_bias,
            &bins,
        ) {
            (RemapKind::CdfAffine, Some(a), Some(b), _, _, Some(k)) => {
                param(&a.softplus()).index_select(0, k) * &r + param(b).index_select(0, k)
            }
            (RemapKind::Fc, _, _, Some(fw), Some(fb), Some(g)) => {
                let zeros = Tensor::zeros([self.bins], (r.kind(), r.device()));
                let counts = zeros.index_add(0, g, &r.ones_like()).clamp_min(1.0);
                let means = zeros.index_add(0, g, &r) / counts;
                let moved = means.linear(&param(fw), Some(param(fb)));
                let delta = moved - means;
                let delta = if grads == Grads::Weights {
                    delta.detach()
                } else {
                    delta
                };
                &r + delta.index_select(0, g)
            }
            _ => r,
        };
        out.view(shape.as_slice())
    }
}

/// Where the gradients of a remap's output go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grads {
    Both,
    /// The stored weights only (straight-through).
    Weights,
    /// The remap's own parameters only.
    Params,
}

/// Rank of every element of a 1-D tensor (0 = smallest), as int64, no gradient.
pub fn ranks(flat: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let n = flat.size()[0];
        let order = flat.argsort(0, false);
        order
            .empty_like()
            .scatter(0, &order, &Tensor::arange(n, (Kind::Int64, flat.device())))
    })
}

/// The Laplace quantile of every element's rank (method.md §5), no gradient.
pub fn laplace_target(flat: &Tensor, ranks: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let n = flat.size()[0] as f64;
        let mu = flat.mean(flat.kind());
        let b = flat.std(false) / std::f64::consts::SQRT_2;
        let c = (ranks.to_kind(flat.kind()) + 0.5) / n - 0.5;
        let tail = (c.abs() * -2.0 + 1.0).log();
        mu - b * c.sign() * tail
    })
}

/// Index of the equal-width value bin (over `[min, max]`) of every element, no gradient.
fn value_bins(flat: &Tensor, bins: i64) -> Tensor {
    tch::no_grad(|| {
        let lo = flat.min();
        let span = (flat.max() - &lo).clamp_min(1e-12);
        // NaN weights (a diverged step) fall in bin 0; the loss then reports the divergence.
        ((flat - lo) / span * bins as f64)
            .nan_to_num(0.0, None, None)
            .floor()
            .clamp(0.0, (bins - 1) as f64)
            .to_kind(Kind::Int64)
    })
}

/// KL(soft histogram of `r` ‖ its fitted Laplace) over `bins` bins spanning μ ± 8b; differentiable in `r`.
/// Everything stays on `r`'s device (no host synchronisation): the fit and the Laplace bin
/// probabilities are computed in f64 as tensors.
pub fn soft_kl_to_laplace(r: &Tensor, bins: i64) -> Tensor {
    let flat = r.flatten(0, -1);
    let n = flat.size()[0] as f64;
    let (mu, b) = tch::no_grad(|| {
        let mu = flat.mean(Kind::Float).to_kind(Kind::Double);
        let b = (flat.std(false).to_kind(Kind::Double) / std::f64::consts::SQRT_2).clamp_min(1e-12);
        (mu, b)
    });
    let (lo, hi) = (&mu - &b * 8.0, &mu + &b * 8.0);
    let width = (&hi - &lo) / bins as f64;
    // Non-finite weights (a diverged step) fall in bin 0, not at an index out of range: the KL
    // term and the loss then come out non-finite, and the training loop reports the divergence.
    let t = ((&flat - &lo) / &width - 0.5)
        .nan_to_num(0.0, Some(0.0), Some(0.0))
        .clamp(0.0, (bins - 1) as f64);
    let k0 = tch::no_grad(|| {
        t.floor()
            .clamp(0.0, (bins - 2).max(0) as f64)
            .to_kind(Kind::Int64)
    });
    let frac = &t - k0.to_kind(t.kind());
    let k1 = (&k0 + 1).clamp_max(bins - 1);
    let zeros = Tensor::zeros([bins], (t.kind(), t.device()));
    let counts = zeros
        .index_add(0, &k0, &(frac.ones_like() - &frac))
        .index_add(0, &k1, &frac);
    let p = counts / n;
    let q = tch::no_grad(|| {
        // The Laplace CDF at the bin edges lo + width·i, i = 0..=bins.
        let i = Tensor::arange(bins + 1, (Kind::Double, t.device()));
        let z = (&lo + &width * i - &mu) / &b;
        let below = z.clamp_max(0.0).exp() * 0.5;
        let above = (z.clamp_min(0.0).neg().exp() * 0.5).neg() + 1.0;
        let cdf = below.where_self(&z.lt(0.0), &above);
        let q = (cdf.narrow(0, 1, bins) - cdf.narrow(0, 0, bins))
            .clamp_min(1e-12)
            .to_kind(t.kind());
        &q / q.sum(q.kind())
    });
    (&p * ((&p + 1e-12).log() - q.log())).sum(p.kind())
}

/// Convenience for tests and tools: the remap of `w` without any learnable state.
pub fn cdf_remap(w: &Tensor) -> Tensor {
    let flat = w.flatten(0, -1);
    straight_through(&flat, &laplace_target(&flat, &ranks(&flat))).view(w.size().as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::stats::Moments;
    use tch::Device;

    fn kurtosis(t: &Tensor) -> f64 {
        let v = Vec::<f32>::try_from(t.detach().flatten(0, -1)).expect("f32");
        Moments::of(&v).kurtosis
    }

    #[test]
    fn every_kind_moves_gaussian_kurtosis_towards_three_and_passes_gradients() {
        tch::manual_seed(11);
        for kind in [RemapKind::Cdf, RemapKind::CdfAffine, RemapKind::Fc] {
            let vs = nn::VarStore::new(Device::Cpu);
            let remap = Remap::new(&(vs.root() / "remap"), kind, 100);
            let w = (Tensor::randn([64, 32, 3, 3], (Kind::Float, Device::Cpu)) * 0.05)
                .set_requires_grad(true);
            let before = kurtosis(&w);
            let r = remap.apply(&w);
            assert_eq!(r.size(), w.size());
            let after = kurtosis(&r);
            assert!(
                before.abs() < 0.2 && (after - 3.0).abs() < 0.3,
                "{kind:?}: {before} → {after}"
            );
            // Gradients reach the stored weights (and the remap's own parameters).
            let target = Tensor::randn(r.size(), (Kind::Float, Device::Cpu));
            (&r * &target).sum(Kind::Float).backward();
            let g = w.grad();
            assert!(
                g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "{kind:?}"
            );
            for (name, t) in vs.variables() {
                assert!(
                    t.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0,
                    "{kind:?}: {name} has no gradient"
                );
            }
            // Rank order is preserved (a monotone map at initialisation).
            let rv = Vec::<f32>::try_from(r.detach().flatten(0, -1)).expect("f32");
            let wv = Vec::<f32>::try_from(w.detach().flatten(0, -1)).expect("f32");
            let mut idx: Vec<usize> = (0..wv.len()).collect();
            idx.sort_by(|&i, &j| wv[i].total_cmp(&wv[j]));
            let bad: Vec<(f32, f32, f32, f32)> = idx
                .windows(2)
                .filter(|p| wv[p[0]] < wv[p[1]] && rv[p[0]] > rv[p[1]]) // ties in w may go either way
                .map(|p| (wv[p[0]], wv[p[1]], rv[p[0]], rv[p[1]]))
                .take(5)
                .collect();
            assert!(bad.is_empty(), "{kind:?} not monotone: {bad:?}");
        }
        let w = Tensor::randn([100], (Kind::Float, Device::Cpu));
        let none = Remap::new(&nn::VarStore::new(Device::Cpu).root(), RemapKind::None, 100);
        assert!(none.apply(&w).equal(&w));
    }

    /// Whatever the optimizer does to its parameters, `cdf-affine`'s scales stay positive, so each
    /// bin's map stays increasing.
    #[test]
    fn cdf_affine_scales_stay_positive() {
        let vs = nn::VarStore::new(Device::Cpu);
        let remap = Remap::new(&(vs.root() / "remap"), RemapKind::CdfAffine, 10);
        tch::no_grad(|| {
            for (_, mut t) in vs.variables() {
                let _ = t.fill_(-5.0); // e.g. after large steps against the gradient
            }
        });
        let a = remap.scales().expect("cdf-affine has scales");
        assert!(a.min().double_value(&[]) > 0.0);
        let w = Tensor::linspace(-1.0, 1.0, 1000, (Kind::Float, Device::Cpu));
        let r = Vec::<f32>::try_from(remap.apply(&w)).expect("f32");
        let bins = Vec::<i64>::try_from(value_bins(&w, 10)).expect("i64");
        for i in 1..r.len() {
            if bins[i] == bins[i - 1] {
                assert!(r[i] >= r[i - 1], "not increasing inside bin {}", bins[i]);
            }
        }
    }

    /// `apply_split`: both halves have `apply`'s values; the first sends gradients to the weights
    /// only, the second to the remap's parameters only.
    #[test]
    fn split_remap_routes_gradients_apart() {
        tch::manual_seed(12);
        for kind in [RemapKind::CdfAffine, RemapKind::Fc] {
            let vs = nn::VarStore::new(Device::Cpu);
            let remap = Remap::new(&(vs.root() / "remap"), kind, 10);
            let w = (Tensor::randn([8, 4, 3, 3], (Kind::Float, Device::Cpu)) * 0.1)
                .set_requires_grad(true);
            let (weights, params) = remap.apply_split(&w);
            let params = params.expect("a remap with parameters");
            let whole = remap.apply(&w);
            assert!(
                weights.allclose(&whole, 1e-6, 1e-7, false)
                    && params.allclose(&whole, 1e-6, 1e-7, false)
            );
            let target = Tensor::randn(whole.size(), (Kind::Float, Device::Cpu));
            let param_grads = || -> f64 {
                vs.variables()
                    .values()
                    .map(|t| {
                        let g = t.grad();
                        if g.defined() {
                            g.abs().sum(Kind::Float).double_value(&[])
                        } else {
                            0.0
                        }
                    })
                    .sum()
            };
            (&weights * &target).sum(Kind::Float).backward();
            assert!(
                w.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "{kind:?}"
            );
            assert_eq!(
                param_grads(),
                0.0,
                "{kind:?}: the weight half reached the parameters"
            );
            let mut w = w;
            w.zero_grad();
            (&params * &target).sum(Kind::Float).backward();
            assert_eq!(
                w.grad().abs().sum(Kind::Float).double_value(&[]),
                0.0,
                "{kind:?}"
            );
            assert!(
                param_grads() > 0.0,
                "{kind:?}: the parameter half has no gradient"
            );
        }
        let vs = nn::VarStore::new(Device::Cpu);
        let cdf = Remap::new(&vs.root(), RemapKind::Cdf, 10);
        assert!(
            cdf.apply_split(&Tensor::randn([10], (Kind::Float, Device::Cpu)))
                .1
                .is_none()
        );
    }

    /// The cached value-only part is reused while the weights stay, and recomputed after any
    /// in-place change (an optimizer step, a sort, a load): the map always equals a fresh one's.
    #[test]
    fn cached_remap_follows_every_weight_change() {
        tch::manual_seed(21);
        for kind in [RemapKind::Cdf, RemapKind::CdfAffine, RemapKind::Fc] {
            let vs = nn::VarStore::new(Device::Cpu);
            let w = vs.root().var(
                "w",
                &[16, 8, 3, 3],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.1,
                },
            );
            let remap = Remap::new(&(vs.root() / "remap"), kind, 10);
            let slice = || w.narrow(0, 0, 12).narrow(1, 0, 6);
            let fresh = |t: &Tensor| {
                Remap::new(&(nn::VarStore::new(Device::Cpu).root() / "r"), kind, 10).apply(t)
            };
            let first = remap.apply(&slice());
            assert!(
                first.equal(&remap.apply(&slice())),
                "{kind:?}: a hit is the same map"
            );
            assert!(first.equal(&fresh(&slice())), "{kind:?}");
            // Another slice of the same weight is its own entry.
            let other = remap.apply(&w.narrow(0, 0, 8));
            assert!(other.equal(&fresh(&w.narrow(0, 0, 8))), "{kind:?}");
            tch::no_grad(|| {
                let _ = w.shallow_clone().g_mul_scalar_(-1.5);
            });
            let after = remap.apply(&slice());
            assert!(!after.equal(&first), "{kind:?}: the change is seen");
            assert!(
                after.equal(&fresh(&slice())),
                "{kind:?}: recomputed after a change"
            );
        }
        // A temporary freed and another allocated in its place is not a hit: entries hold theirs.
        let remap = Remap::new(&nn::VarStore::new(Device::Cpu).root(), RemapKind::Cdf, 10);
        for _ in 0..8 {
            let t = Tensor::randn([64], (Kind::Float, Device::Cpu));
            assert!(remap.apply(&t).equal(&cdf_remap(&t)));
        }
    }

    /// The KL term on the device equals the previous formula, whose fit and Laplace bins were
    /// computed on the host in f64, in value and gradient.
    #[test]
    fn device_kl_equals_the_host_formula() {
        fn host(r: &Tensor, bins: i64) -> Tensor {
            let flat = r.flatten(0, -1);
            let n = flat.size()[0] as f64;
            let mu = flat.mean(Kind::Float).double_value(&[]);
            let b = (flat.std(false).double_value(&[]) / std::f64::consts::SQRT_2).max(1e-12);
            let (lo, hi) = (mu - 8.0 * b, mu + 8.0 * b);
            let width = (hi - lo) / bins as f64;
            let t = ((&flat - lo) / width - 0.5).clamp(0.0, (bins - 1) as f64);
            let k0 = tch::no_grad(|| t.floor().clamp(0.0, (bins - 2) as f64).to_kind(Kind::Int64));
            let frac = &t - k0.to_kind(t.kind());
            let k1 = (&k0 + 1).clamp_max(bins - 1);
            let zeros = Tensor::zeros([bins], (t.kind(), t.device()));
            let p = zeros
                .index_add(0, &k0, &(frac.ones_like() - &frac))
                .index_add(0, &k1, &frac)
                / n;
            let cdf = |x: f64| {
                if x < mu {
                    0.5 * ((x - mu) / b).exp()
                } else {
                    1.0 - 0.5 * (-(x - mu) / b).exp()
                }
            };
            let q: Vec<f32> = (0..bins)
                .map(|i| {
                    let (a, c) = (lo + width * i as f64, lo + width * (i + 1) as f64);
                    ((cdf(c) - cdf(a)).max(1e-12)) as f32
                })
                .collect();
            let q = Tensor::from_slice(&q);
            let q = &q / q.sum(q.kind());
            (&p * ((&p + 1e-12).log() - q.log())).sum(p.kind())
        }
        tch::manual_seed(8);
        for scale in [0.01, 1.0] {
            let g =
                (Tensor::randn([5000], (Kind::Float, Device::Cpu)) * scale).set_requires_grad(true);
            let (ours, theirs) = (soft_kl_to_laplace(&g, 100), host(&g, 100));
            let (a, b) = (ours.double_value(&[]), theirs.double_value(&[]));
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-3), "{a} vs {b}");
            let grad = |t: Tensor| Tensor::run_backward(&[t], &[&g], false, false).remove(0);
            let (ga, gb) = (grad(ours), grad(theirs));
            assert!(ga.allclose(&gb, 1e-5, 1e-6, false), "gradients");
        }
    }

    #[test]
    fn soft_kl_prefers_laplace_and_is_differentiable() {
        tch::manual_seed(2);
        let g = Tensor::randn([20_000], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let l = cdf_remap(&g.detach());
        let kl_g = soft_kl_to_laplace(&g, 100);
        let kl_l = soft_kl_to_laplace(&l, 100).double_value(&[]);
        assert!(
            kl_g.double_value(&[]) > 2.0 * kl_l && kl_l >= 0.0,
            "{} vs {kl_l}",
            kl_g.double_value(&[])
        );
        kl_g.backward();
        assert!(g.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }

    #[test]
    fn non_finite_weights_give_a_non_finite_kl_not_a_crash() {
        // A diverged step: the KL term must come out non-finite (the training loop then reports
        // the divergence), not index its histogram out of range.
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let w = Tensor::randn([64], (Kind::Float, Device::Cpu));
            let _ = w.get(3).fill_(bad);
            let kl = soft_kl_to_laplace(&w, 32).double_value(&[]);
            assert!(!kl.is_finite(), "{bad}: {kl}");
        }
    }
}
