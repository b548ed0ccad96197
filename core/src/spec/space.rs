//! The two-stage NAS search space (method.md §6) as data: an architecture is, per searchable
//! stage of the MobileNetV2-style body, a depth, a kernel and an expand factor per block, and a
//! width multiplier. Sampling, mutation and crossover stay inside the space; costs come from the
//! hardware model (`nas::cost`); [`is_sub_model`] says whether a TargetNet fits inside a SubNet.
//!
//! The skeleton around the searched stages is `mbv2-tiny`'s: stem, a first block (expand 1, k3),
//! the searched stages (base widths 24, 32, 64, 96, 160 × 0.35), the head MBConv and 1×1 conv.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

pub const DEPTHS: [usize; 3] = [2, 3, 4];
pub const KERNELS: [i64; 3] = [3, 5, 7];
pub const EXPANDS: [i64; 3] = [3, 4, 6];
pub const WIDTHS: [f64; 5] = [0.5, 0.75, 1.0, 1.25, 1.5];
/// Base output channels of the searched stages (× 0.35, as `mbv2-tiny`) and their strides
/// (the first one is 1 at 32 px and below).
pub const STAGE_BASE: [(f64, i64); 5] = [(24.0, 2), (32.0, 2), (64.0, 2), (96.0, 1), (160.0, 2)];

/// One searched stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageArch {
    /// Kernel size of each block (its length is the stage depth).
    pub kernels: Vec<i64>,
    /// Expand factor of each block.
    pub expands: Vec<i64>,
    /// Width multiplier of the stage's output channels.
    pub width: f64,
}

/// A searched architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NasArch {
    pub stages: Vec<StageArch>,
}

/// Why an architecture is outside the space.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("architecture outside the NAS space: {0}")]
pub struct SpaceError(pub String);

impl NasArch {
    /// `mbv2-tiny`'s own body in this space (depths 2, 3, 4, 3, 3; k3; expand 6; width 1).
    pub fn mbv2_tiny() -> Self {
        let stage = |n: usize| StageArch {
            kernels: vec![3; n],
            expands: vec![6; n],
            width: 1.0,
        };
        Self {
            stages: vec![stage(2), stage(3), stage(4), stage(3), stage(3)],
        }
    }

    /// The space's largest architecture: every stage at its deepest, with the largest kernel,
    /// expand factor and width (what bounds a proxy's memory).
    pub fn largest() -> Self {
        let top = |v: &[i64]| v.iter().copied().max().unwrap_or(1);
        let depth = DEPTHS.iter().copied().max().unwrap_or(1);
        let stage = StageArch {
            kernels: vec![top(&KERNELS); depth],
            expands: vec![top(&EXPANDS); depth],
            width: WIDTHS.iter().copied().fold(0.0, f64::max),
        };
        Self {
            stages: vec![stage; STAGE_BASE.len()],
        }
    }

    pub fn validate(&self) -> Result<(), SpaceError> {
        if self.stages.len() != STAGE_BASE.len() {
            return Err(SpaceError(format!(
                "{} stages, expected {}",
                self.stages.len(),
                STAGE_BASE.len()
            )));
        }
        for (i, s) in self.stages.iter().enumerate() {
            if !DEPTHS.contains(&s.kernels.len()) || s.kernels.len() != s.expands.len() {
                return Err(SpaceError(format!(
                    "stage {i}: depth {} (kernels) / {} (expands), allowed {DEPTHS:?}",
                    s.kernels.len(),
                    s.expands.len()
                )));
            }
            if let Some(k) = s.kernels.iter().find(|k| !KERNELS.contains(k)) {
                return Err(SpaceError(format!(
                    "stage {i}: kernel {k}, allowed {KERNELS:?}"
                )));
            }
            if let Some(e) = s.expands.iter().find(|e| !EXPANDS.contains(e)) {
                return Err(SpaceError(format!(
                    "stage {i}: expand {e}, allowed {EXPANDS:?}"
                )));
            }
            if !WIDTHS.iter().any(|w| (w - s.width).abs() < 1e-9) {
                return Err(SpaceError(format!(
                    "stage {i}: width {}, allowed {WIDTHS:?}",
                    s.width
                )));
            }
        }
        Ok(())
    }

    /// Parse and validate the JSON form (`model.arch`).
    pub fn from_json(text: &str) -> Result<Self, SpaceError> {
        let a: Self = serde_json::from_str(text).map_err(|e| SpaceError(e.to_string()))?;
        a.validate()?;
        Ok(a)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A uniformly random architecture of the space.
    pub fn sample(rng: &mut Rng) -> Self {
        let pick = |rng: &mut Rng, n: usize| rng.below(n);
        let stages = (0..STAGE_BASE.len())
            .map(|_| {
                let depth = DEPTHS[pick(rng, DEPTHS.len())];
                StageArch {
                    kernels: (0..depth)
                        .map(|_| KERNELS[pick(rng, KERNELS.len())])
                        .collect(),
                    expands: (0..depth)
                        .map(|_| EXPANDS[pick(rng, EXPANDS.len())])
                        .collect(),
                    width: WIDTHS[pick(rng, WIDTHS.len())],
                }
            })
            .collect();
        Self { stages }
    }

    /// Re-draw each choice with probability `rate` (depth changes add or drop trailing blocks).
    pub fn mutate(&self, rng: &mut Rng, rate: f64) -> Self {
        let mut a = self.clone();
        let hit = |rng: &mut Rng| rng.uniform() < rate;
        let pick = |rng: &mut Rng, n: usize| rng.below(n);
        for s in &mut a.stages {
            if hit(rng) {
                let depth = DEPTHS[pick(rng, DEPTHS.len())];
                while s.kernels.len() < depth {
                    s.kernels.push(KERNELS[pick(rng, KERNELS.len())]);
                    s.expands.push(EXPANDS[pick(rng, EXPANDS.len())]);
                }
                s.kernels.truncate(depth);
                s.expands.truncate(depth);
            }
            for k in &mut s.kernels {
                if hit(rng) {
                    *k = KERNELS[pick(rng, KERNELS.len())];
                }
            }
            for e in &mut s.expands {
                if hit(rng) {
                    *e = EXPANDS[pick(rng, EXPANDS.len())];
                }
            }
            if hit(rng) {
                s.width = WIDTHS[pick(rng, WIDTHS.len())];
            }
        }
        a
    }

    /// Each stage taken whole from one parent or the other.
    pub fn crossover(&self, other: &Self, rng: &mut Rng) -> Self {
        Self {
            stages: self
                .stages
                .iter()
                .zip(&other.stages)
                .map(|(a, b)| {
                    if rng.uniform() < 0.5 {
                        a.clone()
                    } else {
                        b.clone()
                    }
                })
                .collect(),
        }
    }

    /// Shrink `self` into a sub-model of `sub`: depth, kernel, expand and width each at most the
    /// SubNet's (a TargetNet inside the SubNet).
    pub fn clamp_into(&self, sub: &Self) -> Self {
        Self {
            stages: self
                .stages
                .iter()
                .zip(&sub.stages)
                .map(|(t, s)| {
                    let depth = t.kernels.len().min(s.kernels.len());
                    StageArch {
                        kernels: (0..depth).map(|j| t.kernels[j].min(s.kernels[j])).collect(),
                        expands: (0..depth).map(|j| t.expands[j].min(s.expands[j])).collect(),
                        width: t.width.min(s.width),
                    }
                })
                .collect(),
        }
    }
}

/// Whether `target` is a sub-model of `sub`: per stage no deeper, and per block no larger kernel
/// or expand, and no wider.
pub fn is_sub_model(target: &NasArch, sub: &NasArch) -> bool {
    target.stages.len() == sub.stages.len()
        && target.stages.iter().zip(&sub.stages).all(|(t, s)| {
            t.kernels.len() <= s.kernels.len()
                && t.width <= s.width + 1e-9
                && t.kernels.iter().zip(&s.kernels).all(|(a, b)| a <= b)
                && t.expands.iter().zip(&s.expands).all(|(a, b)| a <= b)
        })
}
