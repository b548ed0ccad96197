//! What the integer program costs to run: its operations by kind per layer (as a kernel that
//! skips the zero padding of Shift and Mult layers executes them; an Add layer's padded taps
//! count, as `|0 − w|` is part of its sum), the bits its accumulators need, the bytes its
//! weights take (as the generated C stores them, and packed), and its peak activation memory.

use serde::{Deserialize, Serialize};

use super::program::{IntConv, IntModel, IntStep, IntWeights, signed_digits};

/// Integer operations by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    pub shift: u64,
    pub add_sub: u64,
    pub abs: u64,
    pub mul: u64,
    pub cmp: u64,
}

impl std::ops::AddAssign for OpCounts {
    fn add_assign(&mut self, o: Self) {
        self.shift += o.shift;
        self.add_sub += o.add_sub;
        self.abs += o.abs;
        self.mul += o.mul;
        self.cmp += o.cmp;
    }
}

/// One layer's share.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerCount {
    pub name: String,
    /// `shift`, `add`, `mult` for convs; `residual`, `pool`, `argmax`.
    pub kind: String,
    /// A multiplication-free layer (Shift or Add).
    pub mf: bool,
    pub ops: OpCounts,
    /// The part of `ops` on operands of the activations' width (a tap's shift, multiply,
    /// subtraction and absolute value; saturating compares); the rest (accumulation,
    /// requantisation) is on the accumulator's. What [`super::energy`] prices at either width.
    #[serde(default)]
    pub narrow: OpCounts,
    /// Bits its accumulator needs (0 where none).
    pub acc_bits: u32,
    /// Weights and requantisation constants as the generated C stores them, and the weights
    /// packed to the bits they need.
    pub flash_bytes: u64,
    pub packed_weight_bits: u64,
}

/// The program's cost in one place.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Costs {
    pub layers: Vec<LayerCount>,
    pub total: OpCounts,
    /// Multiplications inside MF layers (their requantisation's; zero with `bn_shifts`).
    pub mf_multiplies: u64,
    pub flash_bytes: u64,
    /// The largest sum of live activations (input, output and saved ones) over the steps, as
    /// the generated C holds them (one image; the model is a chain, so this order is the only one).
    pub peak_sram_bytes: u64,
}

/// Bytes of one activation value in the generated C.
pub fn act_bytes(model: &IntModel) -> u64 {
    if model.act_bits <= 8 { 1 } else { 2 }
}

/// Bits of a signed value of magnitude up to `m`.
fn signed_bits(m: u64) -> u64 {
    u64::from(64 - m.leading_zeros()) + 1
}

fn conv_count(c: &IntConv) -> LayerCount {
    let g = &c.geo;
    let (oc, oh, ow) = g.out;
    let k = g.k;
    // For each kernel position, the output positions where it reads the input (not padding).
    let inside = |ky: usize, kx: usize| (g.reads(true, ky) * g.reads(false, kx)) as u64;
    let per_out = g.weights() / oc;
    let at = |i: usize| {
        let kk = i % (k * k);
        inside(kk / k, kk % k)
    };
    let mut ops = OpCounts::default();
    let mut narrow = OpCounts::default();
    let (kind, mf, flash, packed) = match &c.weights {
        IntWeights::Shift { sign, shl } => {
            for (i, (&s, &l)) in sign.iter().zip(shl).enumerate() {
                if s != 0 {
                    let n = at(i % per_out);
                    ops.add_sub += n;
                    if l > 0 {
                        narrow.shift += n;
                    }
                }
            }
            let top = shl.iter().copied().max().unwrap_or(0);
            let bits = 1 + u64::from(8 - top.leading_zeros());
            ("shift", true, sign.len() as u64, sign.len() as u64 * bits)
        }
        IntWeights::Add { w } => {
            let taps = (g.taps_all() * oc) as u64;
            // q − w on the activations' grid, its absolute value, then the accumulation.
            narrow.add_sub += taps;
            narrow.abs += taps;
            ops.add_sub += taps;
            // The generated C stores them as int32; packed, each needs the bits of the largest.
            let top = w.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0);
            let bits = signed_bits(u64::from(top));
            ("add", true, w.len() as u64 * 4, w.len() as u64 * bits)
        }
        IntWeights::Mult { w } => {
            for (i, &v) in w.iter().enumerate() {
                if v != 0 {
                    let n = at(i % per_out);
                    narrow.mul += n;
                    ops.add_sub += n;
                }
            }
            ("mult", false, w.len() as u64, w.len() as u64 * 8)
        }
    };
    // Requantisation of each output: − mean, × mult (or its signed digits: a shift each, an
    // addition between two), rounding shift (and its rounding addition), + bias, clamp.
    let outputs = (oc * oh * ow) as u64;
    let per_channel = outputs / oc as u64;
    for &m in &c.requant.mult {
        if c.requant.multiplier_free() {
            let digits = signed_digits(m).len() as u64;
            ops.shift += digits * per_channel;
            ops.add_sub += digits.saturating_sub(1) * per_channel;
        } else {
            ops.mul += per_channel;
        }
    }
    ops.add_sub += 3 * outputs;
    ops.shift += outputs;
    narrow.cmp += 2 * outputs;
    ops += narrow;
    LayerCount {
        name: c.name.clone(),
        kind: kind.into(),
        mf,
        ops,
        narrow,
        acc_bits: c.acc_bits,
        // mean (8), mult (4), shift (1), bias (8) per channel, and each signed digit's sign and
        // shift (1 + 1) where the multiplier is shifts.
        flash_bytes: flash + (21 + 2 * u64::from(c.requant.terms)) * oc as u64,
        packed_weight_bits: packed,
    }
}

/// The costs of `model`.
pub fn costs(model: &IntModel) -> Costs {
    let bytes = act_bytes(model);
    let [c, h, w] = model.input;
    let mut live = (c * h * w) as u64;
    let mut saved: Vec<u64> = Vec::new();
    let mut peak = live;
    let mut layers = Vec::new();
    let mut residual = 0;
    for step in &model.steps {
        let stacked: u64 = saved.iter().sum();
        match step {
            IntStep::Conv(conv) => {
                let out = (conv.geo.out.0 * conv.geo.out.1 * conv.geo.out.2) as u64;
                peak = peak.max(live + out + stacked);
                live = out;
                layers.push(conv_count(conv));
            }
            IntStep::Save => saved.push(live),
            IntStep::AddSaved {
                shift_current,
                shift_saved,
                ..
            } => {
                saved.pop();
                residual += 1;
                let shifts = u64::from(*shift_current != 0) + u64::from(*shift_saved != 0);
                // Every operand is an activation.
                let ops = OpCounts {
                    shift: shifts * live,
                    add_sub: live,
                    cmp: 2 * live,
                    ..OpCounts::default()
                };
                layers.push(LayerCount {
                    name: format!("residual {residual}"),
                    kind: "residual".into(),
                    mf: false,
                    ops,
                    narrow: ops,
                    acc_bits: model.act_bits + 1,
                    flash_bytes: 0,
                    packed_weight_bits: 0,
                });
            }
            IntStep::Pool { channels, area, .. } => {
                let ch = *channels as u64;
                peak = peak.max(live + ch + stacked);
                live = ch;
                layers.push(LayerCount {
                    name: "pool".into(),
                    kind: "pool".into(),
                    mf: false,
                    ops: OpCounts {
                        add_sub: ch * (*area as u64 - 1),
                        mul: ch,
                        shift: ch,
                        cmp: 2 * ch,
                        ..OpCounts::default()
                    },
                    narrow: OpCounts {
                        cmp: 2 * ch,
                        ..OpCounts::default()
                    },
                    acc_bits: model.act_bits + signed_bits(*area as u64) as u32,
                    flash_bytes: 0,
                    packed_weight_bits: 0,
                });
            }
        }
    }
    let argmax = OpCounts {
        cmp: model.classes.saturating_sub(1) as u64,
        ..OpCounts::default()
    };
    layers.push(LayerCount {
        name: "argmax".into(),
        kind: "argmax".into(),
        mf: false,
        ops: argmax,
        narrow: argmax,
        acc_bits: 0,
        flash_bytes: 0,
        packed_weight_bits: 0,
    });
    let mut total = OpCounts::default();
    for l in &layers {
        total += l.ops;
    }
    let mf_multiplies = layers.iter().filter(|l| l.mf).map(|l| l.ops.mul).sum();
    // The input tables: 256 entries a channel.
    let lut = (c * 256) as u64 * bytes;
    Costs {
        flash_bytes: layers.iter().map(|l| l.flash_bytes).sum::<u64>() + lut,
        peak_sram_bytes: peak * bytes,
        layers,
        total,
        mf_multiplies,
    }
}
