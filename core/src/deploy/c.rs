//! The integer program as C99: `model.h`, `model.c` (weights as `const` arrays, no float, no
//! libm) and `main.c`, a driver that classifies raw images read from a file and prints each one's
//! logits. It computes what [`super::interp`] computes, step for step; the test suite compiles it
//! with the system's `cc` and compares the logits bit for bit.
//!
//! Assumes two's-complement integers with an arithmetic right shift of negative values (every
//! compiler the project knows: gcc, clang, arm-none-eabi-gcc).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::program::{IntModel, IntStep, IntWeights, signed_digits};

/// The files written.
pub const FILES: [&str; 3] = ["model.h", "model.c", "main.c"];

fn list<T: std::fmt::Display>(values: impl IntoIterator<Item = T>) -> String {
    let mut s = String::new();
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            s.push(',');
            if i % 16 == 0 {
                s.push('\n');
            }
        }
        write!(s, "{v}").ok();
    }
    s
}

/// A C identifier from a layer name (`blocks.0.dw` → `blocks_0_dw`).
fn ident(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The C source of `model`: (`model.h`, `model.c`, `main.c`).
pub fn generate(model: &IntModel) -> (String, String, String) {
    let [c, h, w] = model.input;
    let act = if model.act_bits <= 8 {
        "int8_t"
    } else {
        "int16_t"
    };
    let (lo, hi) = model.act_range();
    // Buffers: the current activation, the saved ones, and one to write into.
    let mut size = c * h * w;
    // The current activation's buffer and length.
    let mut cur = 0usize;
    let mut len = size;
    let mut saved: Vec<usize> = Vec::new();
    let mut buffers = 1;
    let mut body = String::new();
    let mut data = String::new();
    let free =
        |cur: usize, saved: &[usize]| (0..).find(|b| *b != cur && !saved.contains(b)).unwrap_or(0);
    writeln!(
        body,
        "    for (int i = 0; i < {}; i++) buf[0][i] = lut[i / {}][image[i]];",
        c * h * w,
        h * w
    )
    .ok();
    for (k, step) in model.steps.iter().enumerate() {
        match step {
            IntStep::Conv(conv) => {
                let g = &conv.geo;
                let id = format!("L{k}_{}", ident(&conv.name));
                let (kind, weights) = match &conv.weights {
                    IntWeights::Shift { sign, shl } => (
                        "shift",
                        format!(
                            "static const int8_t {id}_w[] = {{{}}};\n",
                            list(
                                sign.iter()
                                    .zip(shl)
                                    .map(|(&s, &l)| i32::from(s) * (i32::from(l) + 1))
                            )
                        ),
                    ),
                    IntWeights::Add { w } => (
                        "add",
                        format!("static const int32_t {id}_w[] = {{{}}};\n", list(w)),
                    ),
                    IntWeights::Mult { w } => (
                        "mult",
                        format!("static const int8_t {id}_w[] = {{{}}};\n", list(w)),
                    ),
                };
                let r = &conv.requant;
                data.push_str(&weights);
                writeln!(
                    data,
                    "static const int64_t {id}_mean[] = {{{}}};\nstatic const int32_t {id}_mult[] = {{{}}};\nstatic const int8_t {id}_shift[] = {{{}}};\nstatic const int64_t {id}_bias[] = {{{}}};",
                    list(&r.mean),
                    list(&r.mult),
                    list(&r.shift),
                    list(&r.bias)
                )
                .ok();
                // Shift-add multipliers: each channel's signed digits, `terms` a channel.
                let terms = r.terms as usize;
                let digits = if terms > 0 {
                    let mut sign = Vec::new();
                    let mut exp = Vec::new();
                    for &m in &r.mult {
                        let d = signed_digits(m);
                        for t in 0..terms {
                            let (s, e) = d.get(t).copied().unwrap_or((0, 0));
                            sign.push(i32::from(s));
                            exp.push(e);
                        }
                    }
                    writeln!(
                        data,
                        "static const int8_t {id}_dsign[] = {{{}}};\nstatic const uint8_t {id}_dshift[] = {{{}}};",
                        list(sign),
                        list(exp)
                    )
                    .ok();
                    format!("{id}_dsign, {id}_dshift")
                } else {
                    "0, 0".to_owned()
                };
                let six = super::interp::round_shift(6, -conv.out_frac);
                writeln!(
                    data,
                    "static const struct layer {id} = {{{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {terms}, {six}, {id}_mean, {id}_mult, {id}_shift, {id}_bias, {digits}}};\n",
                    g.input.0,
                    g.input.1,
                    g.input.2,
                    g.out.0,
                    g.out.1,
                    g.out.2,
                    g.k,
                    g.stride,
                    g.pad,
                    g.groups,
                    i32::from(conv.relu6),
                )
                .ok();
                let to = free(cur, &saved);
                buffers = buffers.max(to + 1);
                writeln!(
                    body,
                    "    conv_{kind}(&{id}, {id}_w, buf[{cur}], buf[{to}]); /* {} */",
                    conv.name
                )
                .ok();
                cur = to;
                len = g.out.0 * g.out.1 * g.out.2;
                size = size.max(len);
            }
            IntStep::Save => saved.push(cur),
            IntStep::AddSaved {
                shift_current,
                shift_saved,
                ..
            } => {
                let s = saved.pop().unwrap_or(0);
                writeln!(
                    body,
                    "    for (int i = 0; i < {len}; i++) buf[{cur}][i] = sat(rshift(buf[{cur}][i], {shift_current}) + rshift(buf[{s}][i], {shift_saved})); /* residual */"
                )
                .ok();
            }
            IntStep::Pool {
                channels,
                area,
                mult,
                shift,
                ..
            } => {
                let to = free(cur, &saved);
                buffers = buffers.max(to + 1);
                writeln!(
                    body,
                    "    for (int c = 0; c < {channels}; c++) {{ int64_t s = 0; for (int i = 0; i < {area}; i++) s += buf[{cur}][c * {area} + i]; buf[{to}][c] = sat(rshift(s * {mult}, {shift})); }} /* pool */"
                )
                .ok();
                cur = to;
                len = *channels;
            }
        }
    }
    // The kernels the program uses (an unused static function is a warning).
    let used = |kind: &str| body.contains(&format!("conv_{kind}("));
    let mut kernels = String::new();
    for (kind, text) in [
        (
            "shift",
            "/* Shift: the weight code is sign * (shift + 1), 0 for a zero weight. */\n\
             CONV(conv_shift, int8_t, 0,\n     wv == 0 ? 0 : wv > 0 ? (int64_t)((uint64_t)v << (wv - 1)) : -(int64_t)((uint64_t)v << (-wv - 1)))\n",
        ),
        (
            "add",
            "/* Add: minus the absolute difference; a padded position reads 0 and still counts. */\n\
             CONV(conv_add, int32_t, 1, (v > wv ? wv - v : v - wv))\n",
        ),
        (
            "mult",
            "/* Mult (stem and classifier, int8). */\nCONV(conv_mult, int8_t, 0, v * wv)\n",
        ),
    ] {
        if used(kind) {
            kernels.push_str(text);
        }
    }
    let classes = model.classes;
    let header = format!(
        "/* {}: run {} ({} {} on {}), generated by shiftadd export --int. Integers only. */\n\
         #ifndef SHIFTADD_MODEL_H\n#define SHIFTADD_MODEL_H\n#include <stdint.h>\n\
         #define SHIFTADD_CHANNELS {c}\n#define SHIFTADD_HEIGHT {h}\n#define SHIFTADD_WIDTH {w}\n#define SHIFTADD_CLASSES {classes}\n\
         /* Logits of one image (bytes, channel-major) on a grid of 2^-{} and the predicted class. */\n\
         int shiftadd_classify(const uint8_t *image, int32_t *logits);\n#endif\n",
        model.format,
        model.run,
        model.model,
        model.operator.as_str(),
        model.dataset,
        last_frac(model),
    );
    let lut = model
        .lut
        .iter()
        .map(|t| format!("{{{}}}", list(t)))
        .collect::<Vec<_>>()
        .join(",\n");
    let source = format!(
        r#"/* The integer program of run {run}; see model.h. */
#include "model.h"

typedef {act} act_t;

struct layer {{
    int c, h, w, oc, oh, ow, k, stride, pad, groups, relu6, terms;
    int64_t six;
    const int64_t *mean;
    const int32_t *mult;
    const int8_t *shift;
    const int64_t *bias;
    const int8_t *dsign; /* terms > 0: each channel's multiplier as signed powers of two */
    const uint8_t *dshift;
}};

static int64_t rshift(int64_t v, int s) {{
    return s > 0 ? (v + ((int64_t)1 << (s - 1))) >> s : (int64_t)((uint64_t)v << -s);
}}

static act_t sat(int64_t v) {{
    return (act_t)(v < {lo}LL ? {lo}LL : v > {hi}LL ? {hi}LL : v);
}}

/* Requantise one output of channel o: BN and scales in one multiply and a rounding shift, or,
   with terms > 0, the multiplier's signed powers of two as shifts and additions (no multiply). */
static act_t finish(const struct layer *L, int o, int64_t acc) {{
    int64_t d = acc - L->mean[o], v = 0;
    if (L->terms) {{
        for (int t = 0; t < L->terms; t++) {{
            int s = L->dsign[o * L->terms + t];
            int64_t p = (int64_t)((uint64_t)d << L->dshift[o * L->terms + t]);
            v += s > 0 ? p : s < 0 ? -p : 0;
        }}
    }} else v = d * L->mult[o];
    v = rshift(v, L->shift[o]) + L->bias[o];
    if (L->relu6) v = v < 0 ? 0 : v > L->six ? L->six : v;
    return sat(v);
}}

#define CONV(NAME, WTYPE, PADDED, TAP)                                                      \
    static void NAME(const struct layer *L, const WTYPE *wt, const act_t *x, act_t *y) {{   \
        int pg = L->c / L->groups, opg = L->oc / L->groups;                                  \
        for (int o = 0; o < L->oc; o++) {{                                                   \
            int first = (o / opg) * pg;                                                      \
            for (int oy = 0; oy < L->oh; oy++)                                               \
                for (int ox = 0; ox < L->ow; ox++) {{                                        \
                    int64_t acc = 0;                                                         \
                    for (int i = 0; i < pg; i++)                                             \
                        for (int ky = 0; ky < L->k; ky++)                                    \
                            for (int kx = 0; kx < L->k; kx++) {{                             \
                                int yy = oy * L->stride + ky - L->pad;                       \
                                int xx = ox * L->stride + kx - L->pad;                       \
                                int inside = yy >= 0 && yy < L->h && xx >= 0 && xx < L->w;   \
                                if (!inside && !(PADDED)) continue;                          \
                                int64_t v = inside ? x[((first + i) * L->h + yy) * L->w + xx] : 0; \
                                int64_t wv = wt[((o * pg + i) * L->k + ky) * L->k + kx];     \
                                acc += TAP;                                                  \
                            }}                                                               \
                    y[(o * L->oh + oy) * L->ow + ox] = finish(L, o, acc);                    \
                }}                                                                           \
        }}                                                                                   \
    }}

{kernels}
static const act_t lut[{c}][256] = {{
{lut}
}};

{data}
static act_t buf[{buffers}][{size}];

int shiftadd_classify(const uint8_t *image, int32_t *logits) {{
{body}    int best = 0;
    for (int i = 0; i < {classes}; i++) {{
        logits[i] = buf[{cur}][i];
        if (logits[i] > logits[best]) best = i;
    }}
    return best;
}}
"#,
        run = model.run,
    );
    let main = format!(
        r#"/* Classify raw images: each {n} bytes (channel-major), read from the file named first;
   print each image's logits and predicted class on a line. */
#include <stdio.h>
#include "model.h"

int main(int argc, char **argv) {{
    if (argc != 2) {{ fprintf(stderr, "usage: %s IMAGES.bin\n", argv[0]); return 2; }}
    FILE *f = fopen(argv[1], "rb");
    if (!f) {{ perror(argv[1]); return 1; }}
    static uint8_t image[{n}];
    int32_t logits[SHIFTADD_CLASSES];
    while (fread(image, 1, sizeof image, f) == sizeof image) {{
        int best = shiftadd_classify(image, logits);
        for (int i = 0; i < SHIFTADD_CLASSES; i++) printf("%ld ", (long)logits[i]);
        printf("%d\n", best);
    }}
    fclose(f);
    return 0;
}}
"#,
        n = c * h * w
    );
    (header, source, main)
}

/// The grid of the logits.
fn last_frac(model: &IntModel) -> i32 {
    model
        .steps
        .iter()
        .rev()
        .find_map(|s| match s {
            IntStep::Conv(c) => Some(c.out_frac),
            IntStep::Pool { out_frac, .. } | IntStep::AddSaved { out_frac, .. } => Some(*out_frac),
            IntStep::Save => None,
        })
        .unwrap_or(model.input_frac)
}

/// Write the C files of `model` into `dir`.
pub fn write(model: &IntModel, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let (h, c, m) = generate(model);
    let mut out = Vec::new();
    for (name, text) in FILES.iter().zip([h, c, m]) {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        out.push(path);
    }
    Ok(out)
}
