//! NetAug's channel sorting: reorder channels by importance so that leading slices hold the most
//! important ones, keeping the full network's function; the optimizer's state follows through
//! the returned [`Permutation`]s.

use tch::{Kind, Tensor};

use super::elastic::{ElasticBn, ElasticConv};
use super::{Block, Net};

/// A reordering of one dimension of one variable (channel sorting); the optimizer applies the same
/// to its state.
#[derive(Debug)]
pub struct Permutation {
    pub var: String,
    pub dim: i64,
    pub perm: Tensor,
}

impl Net {
    /// NetAug's channel sorting (method.md §4): each block's expanded (mid) channels reordered by
    /// the L1 norm of the consuming pointwise conv's input columns (`Σ |W_project[:, c, :, :]|`),
    /// descending, consistently through the expand conv and its BN, the depthwise conv and its BN
    /// and the pointwise conv's input, so that leading slices hold the most important channels and
    /// the full network computes the same function. With `stage_channels` (an extension, off by
    /// default: `aug.sort_stage_channels`) the stem's and every stage's output channels are sorted
    /// too, by their producers' output rows. Returns what was permuted.
    pub fn sort_channels(&self, stage_channels: bool) -> Vec<Permutation> {
        tch::no_grad(|| {
            let mut perms = Vec::new();
            for b in &self.blocks {
                if let Some((expand, expand_bn)) = &b.expand {
                    let perm = consumer_order(&b.project.weight);
                    permute_out(expand, Some(expand_bn), &perm, &mut perms);
                    b.permute_mid(&perm, &mut perms);
                }
                if let Some(se) = &b.se {
                    // SE's hidden channels by their consumer's input columns, as NetAug sorts
                    // them with their block.
                    let perm = consumer_order(&se.expand.weight);
                    permute_out(&se.reduce, None, &perm, &mut perms);
                    reorder(
                        &se.reduce_bias,
                        format!("{}.bias", se.reduce.name),
                        0,
                        &perm,
                        &mut perms,
                    );
                    permute_in(&se.expand, &perm, &mut perms);
                }
            }
            if stage_channels {
                self.sort_stage_channels(&mut perms);
            }
            perms
        })
    }

    /// The extension of [`Self::sort_channels`]: the stem's, each stage's and the head's output
    /// channels, ranked by the L1 norm of their producers' output rows.
    fn sort_stage_channels(&self, perms: &mut Vec<Permutation>) {
        // Channel spaces shared across layers: the stem's output, then each stage's output.
        let stages = self.spec.stages();
        for space in 0..=stages {
            let producers: Vec<(&ElasticConv, &ElasticBn)> = if space == 0 {
                vec![(&self.stem, &self.stem_bn)]
            } else {
                self.blocks
                    .iter()
                    .filter(|b| b.spec.stage == space - 1)
                    .map(|b| (&b.project, &b.project_bn))
                    .collect()
            };
            let perm =
                importance_order(&producers.iter().map(|(c, _)| &c.weight).collect::<Vec<_>>());
            for (conv, bn) in &producers {
                permute_out(conv, Some(bn), &perm, perms);
            }
            // Consumers: blocks reading this space (first block of the next stage and the
            // stage's own later blocks), then the head or the classifier.
            let reads = |i: usize| -> bool {
                let prev_stage = if i == 0 {
                    None
                } else {
                    Some(self.blocks[i - 1].spec.stage)
                };
                match space {
                    0 => i == 0,
                    s => prev_stage == Some(s - 1),
                }
            };
            let mut any_reader = false;
            for (i, b) in self.blocks.iter().enumerate() {
                if !reads(i) {
                    continue;
                }
                any_reader = true;
                match &b.expand {
                    Some((expand, _)) => permute_in(expand, &perm, perms),
                    None => b.permute_mid(&perm, perms),
                }
            }
            if !any_reader {
                match &self.head {
                    Some((conv, _)) => permute_in(conv, &perm, perms),
                    None => permute_in(self.pooled_consumer(), &perm, perms),
                }
            }
        }
        if let Some((conv, bn)) = &self.head {
            let perm = importance_order(&[&conv.weight]);
            permute_out(conv, Some(bn), &perm, perms);
            permute_in(self.pooled_consumer(), &perm, perms);
        }
    }

    /// The layer reading the pooled features: the final conv where there is one, else the
    /// classifier.
    fn pooled_consumer(&self) -> &ElasticConv {
        self.final_conv.as_ref().map_or(&self.fc, |(c, _)| c)
    }
}

impl Block {
    /// Reorder the block's mid channels (the expand conv's output, where it has one, is the
    /// caller's): the depthwise conv and its BN, SE's input columns and output rows, the
    /// project conv's input columns.
    fn permute_mid(&self, perm: &Tensor, perms: &mut Vec<Permutation>) {
        permute_out(&self.dw, Some(&self.dw_bn), perm, perms);
        if let Some(se) = &self.se {
            permute_in(&se.reduce, perm, perms);
            permute_out(&se.expand, None, perm, perms);
            reorder(
                &se.expand_bias,
                format!("{}.bias", se.expand.name),
                0,
                perm,
                perms,
            );
        }
        permute_in(&self.project, perm, perms);
    }
}

/// Channel order by descending L1 norm of the input columns of the consumer `weight` [O, C, k, k].
fn consumer_order(weight: &Tensor) -> Tensor {
    weight
        .abs()
        .sum_dim_intlist(&[0i64, 2, 3][..], false, Kind::Float)
        .argsort(0, true)
}

/// Channel order by descending summed L1 norm of output rows of `weights`.
fn importance_order(weights: &[&Tensor]) -> Tensor {
    let score = weights
        .iter()
        .map(|w| {
            w.abs()
                .sum_dim_intlist(&[1i64, 2, 3][..], false, Kind::Float)
        })
        .reduce(|a, b| a + b)
        .expect("at least one producer");
    score.argsort(0, true)
}

fn reorder(t: &Tensor, var: String, dim: i64, perm: &Tensor, perms: &mut Vec<Permutation>) {
    let sorted = t.index_select(dim, perm);
    t.shallow_clone().copy_(&sorted);
    perms.push(Permutation {
        var,
        dim,
        perm: perm.shallow_clone(),
    });
}

fn permute_out(
    conv: &ElasticConv,
    bn: Option<&ElasticBn>,
    perm: &Tensor,
    perms: &mut Vec<Permutation>,
) {
    reorder(
        &conv.weight,
        format!("{}.weight", conv.name),
        0,
        perm,
        perms,
    );
    for (t, name) in bn.map(ElasticBn::tensors).into_iter().flatten() {
        reorder(t, name, 0, perm, perms);
    }
}

fn permute_in(conv: &ElasticConv, perm: &Tensor, perms: &mut Vec<Permutation>) {
    reorder(
        &conv.weight,
        format!("{}.weight", conv.name),
        1,
        perm,
        perms,
    );
}
