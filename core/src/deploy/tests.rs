use super::build::{IntOptions, Source, build, multiplier};
use super::float::{FloatConv, FloatNet, FloatStep};
use super::interp::{accumulate, argmax, round_shift};
use super::kernel::Geometry;
use super::program::{IntConv, IntModel, IntStep, IntWeights, Requant, signed_digits};
use super::*;
use crate::rng::Rng;
use crate::spec::config::OpKind;

/// Geometries the tests sweep: plain, strided, padded, depthwise, grouped.
fn geometries() -> Vec<Geometry> {
    [
        ((3, 5, 5), 4, 3, 1, 1, 1),
        ((4, 6, 7), 4, 3, 2, 1, 4),
        ((6, 4, 4), 3, 1, 1, 0, 3),
        ((2, 7, 5), 5, 5, 2, 2, 1),
        ((8, 3, 3), 8, 3, 1, 0, 8),
    ]
    .into_iter()
    .map(|(i, o, k, s, p, g)| Geometry::new(i, o, k, s, p, g).expect("geometry"))
    .collect()
}

fn conv_with(geo: Geometry, weights: IntWeights, in_frac: i32, acc_frac: i32) -> IntConv {
    let n = geo.out.0;
    IntConv {
        name: "t".into(),
        geo,
        weights,
        in_frac,
        acc_frac,
        requant: Requant {
            mean: vec![0; n],
            mult: vec![1; n],
            shift: vec![0; n],
            bias: vec![0; n],
            terms: 0,
        },
        relu6: false,
        out_frac: in_frac,
        acc_bits: 48,
    }
}

fn random_input(rng: &mut Rng, len: usize) -> Vec<i32> {
    (0..len)
        .map(|_| rng.below(65_536) as i32 - 32_768)
        .collect()
}

/// The value of padded input position (c, y, x) of a [C, H, W] tensor, 0 outside.
fn at(x: &[i32], (c, h, w): (usize, usize, usize), ch: usize, y: isize, xx: isize) -> i64 {
    if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
        return 0;
    }
    let _ = c;
    i64::from(x[(ch * h + y as usize) * w + xx as usize])
}

#[test]
fn shift_layers_are_bit_exact_against_a_float64_reference() {
    let mut rng = Rng::new(11);
    for geo in geometries() {
        let n = geo.weights();
        let sign: Vec<i8> = (0..n).map(|_| rng.below(3) as i8 - 1).collect();
        let shl: Vec<u8> = (0..n).map(|_| rng.below(16) as u8).collect();
        let (in_frac, pmin) = (12, -15);
        let conv = conv_with(
            geo,
            IntWeights::Shift {
                sign: sign.clone(),
                shl: shl.clone(),
            },
            in_frac,
            in_frac - pmin,
        );
        let x = random_input(&mut rng, geo.input.0 * geo.input.1 * geo.input.2);
        let acc = accumulate(&conv, &x);
        // The same fixed-point semantics in f64: weights sign·2^(shl + p_min), inputs q·2^-frac.
        let (oc, oh, ow) = geo.out;
        let pg = geo.per_group();
        for o in 0..oc {
            let first = (o / (oc / geo.groups)) * pg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut sum = 0f64;
                    for i in 0..pg {
                        for ky in 0..geo.k {
                            for kx in 0..geo.k {
                                let wi = ((o * pg + i) * geo.k + ky) * geo.k + kx;
                                let w = f64::from(sign[wi]) * 2f64.powi(i32::from(shl[wi]) + pmin);
                                let y = (oy * geo.stride + ky) as isize - geo.pad as isize;
                                let xx = (ox * geo.stride + kx) as isize - geo.pad as isize;
                                let v = at(&x, geo.input, first + i, y, xx) as f64
                                    * 2f64.powi(-in_frac);
                                sum += w * v;
                            }
                        }
                    }
                    let got = acc[(o * oh + oy) * ow + ox] as f64 * 2f64.powi(-conv.acc_frac);
                    assert_eq!(got, sum, "{geo:?} output ({o}, {oy}, {ox})");
                }
            }
        }
    }
}

#[test]
fn the_add_layer_sum_equals_a_direct_integer_reference() {
    let mut rng = Rng::new(5);
    for geo in geometries() {
        let n = geo.weights();
        let w: Vec<i32> = (0..n)
            .map(|_| rng.below(200_000) as i32 - 100_000)
            .collect();
        let conv = conv_with(geo, IntWeights::Add { w: w.clone() }, 10, 10);
        let x = random_input(&mut rng, geo.input.0 * geo.input.1 * geo.input.2);
        let acc = accumulate(&conv, &x);
        // Pad the input explicitly, then sum −|x − w| over every tap.
        let (c, h, wd) = geo.input;
        let (ph, pw) = (h + 2 * geo.pad, wd + 2 * geo.pad);
        let mut padded = vec![0i64; c * ph * pw];
        for ch in 0..c {
            for y in 0..h {
                for xx in 0..wd {
                    padded[(ch * ph + y + geo.pad) * pw + xx + geo.pad] =
                        i64::from(x[(ch * h + y) * wd + xx]);
                }
            }
        }
        let (oc, oh, ow) = geo.out;
        let pg = geo.per_group();
        let mut want = Vec::new();
        for o in 0..oc {
            let g = o / (oc / geo.groups);
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = 0i64;
                    for i in 0..pg {
                        for ky in 0..geo.k {
                            for kx in 0..geo.k {
                                let v = padded[((g * pg + i) * ph + oy * geo.stride + ky) * pw
                                    + ox * geo.stride
                                    + kx];
                                s -= (v - i64::from(w[((o * pg + i) * geo.k + ky) * geo.k + kx]))
                                    .abs();
                            }
                        }
                    }
                    want.push(s);
                }
            }
        }
        assert_eq!(acc, want, "{geo:?}");
    }
}

#[test]
fn rounding_shifts_and_multipliers() {
    assert_eq!(round_shift(5, 1), 3, "2.5 rounds up");
    assert_eq!(round_shift(-5, 1), -2, "−2.5 rounds up");
    assert_eq!(round_shift(3, -2), 12);
    for scale in [0.37, -1.9e-4, 3.0, 1.0 / 3.0, -7.5e3] {
        let (m, s) = multiplier(scale, 15, 0);
        let back = m as f64 * 2f64.powi(-s);
        assert!(((back - scale) / scale).abs() < 1e-4, "{scale}: {m}·2^-{s}");
        assert!(m.unsigned_abs() < 1 << 15);
        // One signed digit: the scale rounded to a power of two; more digits, closer.
        let mut last = f64::INFINITY;
        for terms in 1..=4 {
            let (p, e) = multiplier(scale, 15, terms);
            assert!(signed_digits(p).len() <= terms as usize, "{scale}: {p}");
            let back = p as f64 * 2f64.powi(-e);
            let err = ((back - scale) / scale).abs();
            assert!(
                err <= 0.5f64.powi(terms as i32 + 1) * 1.5,
                "{scale}, {terms} digits: {err}"
            );
            assert!(err <= last + 1e-12);
            last = err;
        }
    }
    // Signed digits: their sum is the number, no two adjacent are nonzero (the fewest digits).
    let mut rng = Rng::new(2);
    for _ in 0..1000 {
        let m = rng.below(1 << 20) as i64 - (1 << 19);
        let d = signed_digits(m);
        assert_eq!(d.iter().map(|&(s, e)| i64::from(s) << e).sum::<i64>(), m);
        assert!(d.windows(2).all(|w| w[1].1 > w[0].1 + 1), "{m}: {d:?}");
    }
}

/// A float program with every kind of step: a Mult stem, a depthwise Shift conv, a pointwise
/// Add conv, a residual add, the pool and a Mult classifier; weights seeded.
fn tiny_net(seed: u64) -> FloatNet {
    let mut rng = Rng::new(seed);
    let mut normal = |n: usize, s: f64| -> Vec<f64> { (0..n).map(|_| rng.normal() * s).collect() };
    let conv = |name: &str,
                op: OpKind,
                geo: Geometry,
                weight: Vec<f64>,
                affine: [Vec<f64>; 3],
                relu6: bool| {
        let [mean, scale, bias] = affine;
        FloatStep::Conv(FloatConv {
            name: name.into(),
            op,
            geo,
            weight,
            mean,
            scale,
            bias,
            relu6,
            fixed_16_16: op == OpKind::Shift,
        })
    };
    let stem = Geometry::new((1, 8, 8), 4, 3, 2, 1, 1).expect("stem");
    let dw = Geometry::new((4, 4, 4), 4, 3, 1, 1, 4).expect("dw");
    let pw = Geometry::new((4, 4, 4), 4, 1, 1, 0, 1).expect("pw");
    let fc = Geometry::new((4, 1, 1), 3, 1, 1, 0, 1).expect("fc");
    let pow2 = |v: f64| v.signum() * 2f64.powi((v.abs().log2().round() as i32).clamp(-15, 0));
    let dw_w: Vec<f64> = normal(dw.weights(), 0.4).into_iter().map(pow2).collect();
    let pw_w = normal(pw.weights(), 1.0);
    let steps = vec![
        conv(
            "stem",
            OpKind::Mult,
            stem,
            normal(stem.weights(), 0.5),
            [vec![0.0; 4], vec![1.0; 4], normal(4, 0.1)],
            true,
        ),
        FloatStep::Save,
        conv(
            "dw",
            OpKind::Shift,
            dw,
            dw_w,
            [normal(4, 0.2), vec![0.8, 1.1, 0.5, 1.3], normal(4, 0.1)],
            true,
        ),
        conv(
            "pw",
            OpKind::Add,
            pw,
            pw_w,
            [
                vec![-6.0, -5.0, -7.0, -4.0],
                vec![0.3, 0.2, 0.4, 0.25],
                normal(4, 0.1),
            ],
            false,
        ),
        FloatStep::AddSaved,
        FloatStep::Pool {
            channels: 4,
            area: 16,
        },
        conv(
            "fc",
            OpKind::Mult,
            fc,
            normal(fc.weights(), 0.7),
            [vec![0.0; 3], vec![1.0; 3], normal(3, 0.1)],
            false,
        ),
    ];
    FloatNet {
        input: [1, 8, 8],
        norm: vec![(0.3, 0.35)],
        classes: 3,
        steps,
    }
}

/// Taps of one output channel that read the input rather than the padding, counted one by one.
fn taps_inside(g: &Geometry) -> usize {
    let (_, h, w) = g.input;
    let mut n = 0;
    for oy in 0..g.out.1 {
        for ox in 0..g.out.2 {
            for ky in 0..g.k {
                for kx in 0..g.k {
                    let y = (oy * g.stride + ky) as isize - g.pad as isize;
                    let x = (ox * g.stride + kx) as isize - g.pad as isize;
                    n += usize::from(y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w);
                }
            }
        }
    }
    n * g.per_group()
}

fn images(seed: u64, n: usize, size: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| (0..size).map(|_| rng.below(256) as u8).collect())
        .collect()
}

fn tiny_int(net: &FloatNet, opts: IntOptions) -> IntModel {
    let calibration: Vec<Vec<f64>> = images(1, 64, 64).iter().map(|i| net.normalise(i)).collect();
    let source = Source {
        run: 7,
        model: "tiny".into(),
        dataset: "synthetic".into(),
        operator: OpKind::Shift,
    };
    build(net, &calibration, source, opts).expect("build")
}

#[test]
fn the_integer_program_follows_the_float_one() {
    let net = tiny_net(3);
    let model = tiny_int(&net, IntOptions::default());
    let mut same = 0;
    let test = images(2, 200, 64);
    for image in &test {
        let mut ft = Vec::new();
        let logits = net.forward(&net.normalise(image), Some(&mut ft));
        let mut it = Vec::new();
        let ints = model.run(model.input(image), Some(&mut it));
        same += usize::from(argmax(&logits) == argmax(&ints));
        for (k, (f, (q, frac))) in ft.iter().zip(&it).enumerate() {
            let top = f.iter().fold(1e-3f64, |a, v| a.max(v.abs()));
            for (a, b) in f.iter().zip(q) {
                let d = (a - f64::from(*b) * 2f64.powi(-frac)).abs();
                assert!(
                    d <= 0.02 * top,
                    "step {k}: {a} vs {b}·2^-{frac} (range {top})"
                );
            }
        }
    }
    assert!(same >= 195, "{same} of 200 predictions agree");
    // No multiply in the MF layers unless the requantisation keeps one.
    let costs = count::costs(&model);
    let mf: Vec<_> = costs.layers.iter().filter(|l| l.mf).collect();
    assert_eq!(mf.len(), 2);
    assert!(
        mf.iter().all(|l| l.ops.mul > 0),
        "per-channel multiplies counted"
    );
    let pow2 = tiny_int(
        &net,
        IntOptions {
            bn_shifts: 2,
            ..IntOptions::default()
        },
    );
    assert_eq!(
        count::costs(&pow2).mf_multiplies,
        0,
        "with bn_shifts none is left"
    );
    assert_eq!(
        costs
            .layers
            .iter()
            .find(|l| l.name == "stem")
            .map(|l| l.ops.mul),
        Some({
            // Stem: every nonzero weight × the positions where it reads the input, + requant.
            let stem = match &model.steps[0] {
                IntStep::Conv(c) => (**c).clone(),
                _ => unreachable!("the stem is first"),
            };
            let IntWeights::Mult { w } = &stem.weights else {
                unreachable!("a Mult stem")
            };
            let zero = w.iter().filter(|&&v| v == 0).count();
            assert_eq!(zero, 0, "seeded weights have no zero");
            (taps_inside(&stem.geo) * stem.geo.out.0 + stem.geo.out.0 * 16) as u64
        })
    );
    // Peak memory: the stem's input and output plus nothing saved, or the residual's three.
    assert_eq!(costs.peak_sram_bytes, 2 * (64 + 64 + 64));
}

#[test]
fn a_corrupt_program_is_refused_naming_the_layer_and_the_array() {
    let net = tiny_net(3);
    let model = tiny_int(&net, IntOptions::default());
    model.validate().expect("a built program is valid");
    let mut short = model.clone();
    if let IntStep::Conv(c) = &mut short.steps[2]
        && let IntWeights::Shift { sign, shl } = &mut c.weights
    {
        sign.pop();
        shl.pop();
    }
    let err = short.validate().unwrap_err();
    assert!(err.contains("layer dw") && err.contains("weights"), "{err}");
    let mut bias = model.clone();
    if let IntStep::Conv(c) = &mut bias.steps[3] {
        c.requant.bias.push(0);
    }
    let err = bias.validate().unwrap_err();
    assert!(
        err.contains("layer pw") && err.contains("requant.bias"),
        "{err}"
    );
    // Through the file: its path and the problem.
    let dir = tempfile::tempdir().expect("tmp");
    let path = save(&bias, dir.path()).expect("save");
    let err = load(&path).expect_err("refused").to_string();
    assert!(
        err.contains(INT_FILE) && err.contains("requant.bias"),
        "{err}"
    );
    std::fs::write(&path, "{\"format\": 3}").expect("write");
    let err = load(&path).expect_err("refused").to_string();
    assert!(err.contains(INT_FILE), "{err}");
}

#[test]
fn a_float_export_that_does_not_fit_its_program_is_refused_naming_the_tensor() {
    use crate::export::{ExportedModel, FORMAT, ModelJson};
    use crate::model::Step;
    let dir = tempfile::tempdir().expect("tmp");
    let json = ModelJson {
        format: FORMAT.into(),
        run: 1,
        model: "micro".into(),
        dataset: "synthetic".into(),
        operator: OpKind::Shift,
        weight_bits: 5,
        input: [2, 2, 2],
        norm: vec![(0.5, 0.25), (0.5, 0.25)],
        classes: 3,
        steps: vec![
            Step::Pool,
            Step::Linear {
                name: "fc".into(),
                op: OpKind::Mult,
                act_fixed_point: false,
                act: None,
            },
        ],
    };
    std::fs::write(
        dir.path().join("model.json"),
        serde_json::to_string(&json).expect("json"),
    )
    .expect("write");
    let write = |w: &[f32]| {
        let tensors = vec![
            (
                "fc.weight".to_owned(),
                tch::Tensor::from_slice(w).view([3, -1]),
            ),
            (
                "fc.bias".to_owned(),
                tch::Tensor::from_slice(&[0f32, 0.0, 0.0]),
            ),
        ];
        tch::Tensor::write_safetensors(&tensors, dir.path().join("model.safetensors")).expect("st");
    };
    write(&[0.1; 9]);
    let err = FloatNet::from_export(&ExportedModel::load(dir.path()).expect("load"))
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("fc.weight") && err.contains("9 values"),
        "{err}"
    );
    write(&[0.1; 6]);
    let net = FloatNet::from_export(&ExportedModel::load(dir.path()).expect("load")).expect("fits");
    assert_eq!(net.classes, 3);
}

#[test]
fn the_generated_c_agrees_with_the_interpreter_bit_for_bit() {
    let Some(cc) = ["cc", "gcc", "clang"].into_iter().find(|c| {
        std::process::Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        panic!("no C compiler (cc, gcc or clang) on PATH: the generated C cannot be checked");
    };
    for (seed, shifts) in [(3, 0), (4, 1), (5, 2)] {
        let net = tiny_net(seed);
        let model = tiny_int(
            &net,
            IntOptions {
                bn_shifts: shifts,
                ..IntOptions::default()
            },
        );
        let dir = tempfile::tempdir().expect("tmp");
        c::write(&model, dir.path()).expect("write C");
        let source = std::fs::read_to_string(dir.path().join("model.c")).expect("model.c");
        assert!(
            !source.contains("float") && !source.contains("double") && !source.contains("math.h")
        );
        let exe = dir.path().join("classify");
        let out = std::process::Command::new(cc)
            .args(["-std=c99", "-O1", "-Wall", "-Werror", "-o"])
            .arg(&exe)
            .arg(dir.path().join("model.c"))
            .arg(dir.path().join("main.c"))
            .output()
            .expect("cc runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let test = images(9, 300, 64);
        std::fs::write(dir.path().join("images.bin"), test.concat()).expect("images");
        let run = std::process::Command::new(&exe)
            .arg(dir.path().join("images.bin"))
            .output()
            .expect("the driver runs");
        assert!(run.status.success());
        let lines: Vec<String> = String::from_utf8_lossy(&run.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(lines.len(), test.len());
        for (image, line) in test.iter().zip(&lines) {
            let logits = model.run(model.input(image), None);
            let want = format!(
                "{} {}",
                logits
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
                argmax(&logits)
            );
            assert_eq!(line, &want, "bn_shifts {shifts}");
        }
    }
}

#[test]
fn a_hostile_program_is_refused_before_it_can_overflow() {
    let net = tiny_net(3);
    let model = tiny_int(&net, IntOptions::default());
    let mut wide = model.clone();
    if let IntStep::Conv(c) = &mut wide.steps[3]
        && let IntWeights::Add { w } = &mut c.weights
    {
        w[0] = i32::MAX;
        c.requant.mult[0] = (1 << 31) - 1;
    }
    let err = wide.validate().unwrap_err();
    assert!(err.contains("layer pw") && err.contains("63 bits"), "{err}");
    let mut big = model.clone();
    if let IntStep::Conv(c) = &mut big.steps[0] {
        c.geo.out.0 = 1 << 20;
    }
    assert!(big.validate().is_err());
    // What passes runs without a panic on any image (the built one does).
    let image = images(3, 1, 64).remove(0);
    assert_eq!(model.run(model.input(&image), None).len(), 3);
}

#[test]
fn operations_are_priced_at_their_operands_width() {
    use super::count::OpCounts;
    use super::energy::price;
    let ops = OpCounts {
        shift: 10,
        add_sub: 20,
        abs: 5,
        mul: 3,
        cmp: 4,
    };
    let narrow = OpCounts {
        shift: 10,
        add_sub: 5,
        abs: 5,
        mul: 3,
        cmp: 4,
    };
    // 8-bit operands at the table's 8-bit row; the 15 accumulating additions at 32 bits.
    let eight = 10.0 * 0.024 + 14.0 * 0.03 + 3.0 * 0.2 + 15.0 * 0.9;
    // 16-bit operands have no row of their own: the 32-bit one.
    let sixteen = 10.0 * 0.13 + 14.0 * 0.9 + 3.0 * 3.7 + 15.0 * 0.9;
    assert!((price(&ops, &narrow, 8) - eight).abs() < 1e-9);
    assert!((price(&ops, &narrow, 16) - sixteen).abs() < 1e-9);
    assert!((price(&ops, &OpCounts::default(), 8) - price(&ops, &ops, 32)).abs() < 1e-9);
}

#[test]
fn the_programs_convs_are_the_layers_the_hardware_models_price() {
    use super::energy::{energies, hw_layers};
    use crate::spec::config::{HwConfig, HwModel};
    use crate::spec::layers::LayerKind;
    let net = tiny_net(3);
    let model = tiny_int(&net, IntOptions::default());
    let layers = hw_layers(&model);
    let kinds: Vec<_> = layers.iter().map(|l| l.kind).collect();
    assert_eq!(
        kinds,
        [
            LayerKind::Conv,
            LayerKind::Depthwise,
            LayerKind::Pointwise,
            LayerKind::Linear
        ]
    );
    let flags: Vec<_> = layers
        .iter()
        .map(|l| (l.bn, l.act == crate::spec::arch::Act::Relu6, l.residual_add))
        .collect();
    assert_eq!(
        flags,
        [
            (true, true, false),
            (true, true, false),
            (true, false, true),
            (false, false, false)
        ]
    );
    assert_eq!(
        (
            layers[0].h_in,
            layers[0].h_out,
            layers[0].stride,
            layers[1].groups
        ),
        (8, 4, 2, 4)
    );
    assert_eq!(
        layers.iter().map(|l| l.op).collect::<Vec<_>>(),
        [OpKind::Mult, OpKind::Shift, OpKind::Add, OpKind::Mult]
    );
    // 8-bit activations move half the data of 16-bit ones (the project model scales by width)
    // and compute for less; every counted step is priced, only convs move data.
    let at = |act_bits: u32| {
        let m = tiny_int(
            &net,
            IntOptions {
                act_bits,
                ..IntOptions::default()
            },
        );
        let costs = count::costs(&m);
        let e = energies(&m, &costs, &HwConfig::default());
        assert_eq!(
            e.iter().map(|e| e.model).collect::<Vec<_>>(),
            HwModel::ALL.to_vec()
        );
        assert_eq!(e[0].layers.len(), costs.layers.len());
        assert!(
            e[0].layers
                .iter()
                .all(|l| (l.memory_pj > 0.0) == layers.iter().any(|h| h.name == l.name))
        );
        e
    };
    let (e16, e8) = (at(16), at(8));
    let project = |e: &[energy::IntEnergy]| {
        e.iter()
            .find(|e| e.model == HwModel::Project)
            .cloned()
            .expect("project")
    };
    let (p16, p8) = (project(&e16), project(&e8));
    assert!((p8.memory_mj * 2.0 - p16.memory_mj).abs() < 1e-12 * p16.memory_mj.max(1.0));
    assert!(p8.compute_mj < p16.compute_mj);
    assert_eq!((p8.word_bits, p16.word_bits), (8, 16));
    assert!((p16.energy_mj - p16.compute_mj - p16.memory_mj).abs() < 1e-15);
}
