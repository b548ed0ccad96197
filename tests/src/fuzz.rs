//! A mutation fuzzer for the parsers that read what a user or another machine hands the tool:
//! config TOML, study files, idx (plain and gzip), CIFAR binaries, exported models (`model.json`
//! and `model.safetensors`, loaded and run on an input) and databases (imported; and imported,
//! listed and deleted from, with what must not change checked after every case). Each case takes
//! a valid seed file, applies a few random mutations (bit flips,
//! interesting bytes, inserted / deleted / duplicated ranges, truncation, splices of another
//! seed) or, one case in ten, random bytes, and feeds it to the parser; a panic is a finding and
//! so is a case slower than [`HANG`]. Errors are the expected outcome. The suite runs a few
//! thousand cases per parser (`fuzz::every_parser_survives_mutated_input`), `make fuzz` a
//! million (`cargo run -p shiftadd-tests --bin fuzz`; `--replay FILE` reruns a saved finding).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shiftadd_core::data::{self, write_cifar_binary, write_idx};
use shiftadd_core::spec::config::Config;
use shiftadd_core::spec::study::Study;
use shiftadd_core::store;

/// A case slower than this counts as a hang.
pub const HANG: Duration = Duration::from_secs(2);

/// Feeds a parser one input; whether it accepted it (an error is a fine answer).
type Feed = Box<dyn FnMut(&[u8]) -> bool>;

/// One parser under test: valid seed inputs and how to feed it one input.
pub struct Target {
    pub name: &'static str,
    seeds: Vec<Vec<u8>>,
    run: Feed,
}

/// What one target's fuzzing found.
#[derive(Debug, Clone)]
pub struct Report {
    pub name: &'static str,
    pub cases: u64,
    /// Inputs the parser accepted (the rest it refused with an error).
    pub accepted: u64,
    pub panics: u64,
    pub hangs: u64,
    pub slowest: Duration,
    pub elapsed: Duration,
    /// One panic per kind (its message with the numbers masked), the message and the input that
    /// caused it, in the order found, at most [`MAX_FINDINGS`] (saved by the caller).
    pub findings: Vec<(String, Vec<u8>)>,
}

/// Distinct findings a report keeps; the rest are counted in `panics`.
pub const MAX_FINDINGS: usize = 16;

/// A panic message's kind: the message with every run of digits replaced by `#`, so the same
/// defect hit with other values (a row id, a version, a length) counts once.
fn kind(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for c in message.chars() {
        if c.is_ascii_digit() {
            if !out.ends_with('#') {
                out.push('#');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// splitmix64: small, fast, and the same sequence everywhere for a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, b'"', b'=', b'\n'];

/// A mutated copy of one of `seeds` (or, one time in ten, random bytes).
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if rng.below(10) == 0 {
        let n = rng.below(512);
        return (0..n).map(|_| rng.next() as u8).collect();
    }
    let mut b = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let len = b.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                b[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                b[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                b.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                b.drain(at..at + n);
            }
            4 if len > 0 => b.truncate(rng.below(len)),
            5 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                let chunk = b[at..at + n].to_vec();
                let to = rng.below(len + 1);
                b.splice(to..to, chunk);
            }
            _ => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(b.len() + 1);
                let from = rng.below(other.len() + 1);
                b.truncate(cut);
                b.extend_from_slice(&other[from..]);
            }
        }
    }
    b
}

/// Feed `cases` inputs to `target`, the sequence fixed by `seed`.
/// `progress` is called every [`PROGRESS_EVERY`] cases with the report so far (a long run shows
/// where it is and what it found).
pub fn fuzz(
    target: &mut Target,
    cases: u64,
    seed: u64,
    progress: &mut dyn FnMut(u64, &Report),
) -> Report {
    let mut rng = Rng(seed ^ 0x5eed);
    let mut report = Report {
        name: target.name,
        cases,
        accepted: 0,
        panics: 0,
        hangs: 0,
        slowest: Duration::ZERO,
        elapsed: Duration::ZERO,
        findings: Vec::new(),
    };
    let mut kinds = std::collections::HashSet::new();
    let t0 = Instant::now();
    for case in 0..cases {
        if case > 0 && case % PROGRESS_EVERY == 0 {
            report.elapsed = t0.elapsed();
            progress(case, &report);
        }
        let input = mutate(&mut rng, &target.seeds);
        let start = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| (target.run)(&input)));
        let took = start.elapsed();
        report.slowest = report.slowest.max(took);
        if took > HANG {
            report.hangs += 1;
        }
        match outcome {
            Ok(true) => report.accepted += 1,
            Ok(false) => {}
            Err(payload) => {
                report.panics += 1;
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                if report.findings.len() < MAX_FINDINGS && kinds.insert(kind(&message)) {
                    report.findings.push((message, input));
                }
            }
        }
    }
    report.elapsed = t0.elapsed();
    report
}

/// How often [`fuzz`] reports progress.
pub const PROGRESS_EVERY: u64 = 10_000;

/// Feed `target` one input (a saved finding) outside any `catch_unwind`: a panic shows where it
/// happened, with a backtrace under `RUST_BACKTRACE=1`.
pub fn replay(target: &mut Target, input: &[u8]) -> bool {
    (target.run)(input)
}

/// Every parser's target, their seed files made in `scratch` (a folder the caller owns) from the
/// project's own presets and from small valid files written here.
pub fn targets(experiments: &Path, scratch: &Path) -> std::io::Result<Vec<Target>> {
    Ok(vec![
        config_target(experiments)?,
        study_target(experiments)?,
        idx_target(&scratch.join("idx"))?,
        cifar_target(&scratch.join("cifar"))?,
        import_target(&scratch.join("import"))?,
        lifecycle_target(&scratch.join("lifecycle"))?,
        model_target(&scratch.join("model-json"), true)?,
        model_target(&scratch.join("model-st"), false)?,
    ])
}

fn files_with(dir: &Path, ext: &str) -> std::io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == ext) {
            out.push(std::fs::read(p)?);
        }
    }
    Ok(out)
}

fn config_target(experiments: &Path) -> std::io::Result<Target> {
    Ok(Target {
        name: "config TOML",
        seeds: files_with(experiments, "toml")?,
        run: Box::new(|b| Config::from_toml_str(&String::from_utf8_lossy(b), "fuzz", &[]).is_ok()),
    })
}

fn study_target(experiments: &Path) -> std::io::Result<Target> {
    let dir = experiments.join("studies");
    let base = dir.clone();
    Ok(Target {
        name: "study file",
        seeds: files_with(&dir, "toml")?,
        run: Box::new(move |b| {
            Study::parse(&String::from_utf8_lossy(b), "fuzz", &base, &[]).is_ok()
        }),
    })
}

/// Fashion-MNIST: the mutated bytes replace the training images, plain or gzipped; the check
/// before a run and the loader both read them.
fn idx_target(dir: &Path) -> std::io::Result<Target> {
    std::fs::create_dir_all(dir)?;
    let n = 3;
    let images: Vec<u8> = (0..n * 784).map(|i| (i % 251) as u8).collect();
    write_idx(&dir.join("t10k-images-idx3-ubyte"), &[n, 28, 28], &images)?;
    write_idx(&dir.join("t10k-labels-idx1-ubyte"), &[n], &[1, 2, 3])?;
    write_idx(&dir.join("train-labels-idx1-ubyte"), &[n], &[4, 5, 6])?;
    let plain = dir.join("seed-images");
    write_idx(&plain, &[n, 28, 28], &images)?;
    let raw = std::fs::read(&plain)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &raw)?;
    let gzipped = gz.finish()?;
    let labels = std::fs::read(dir.join("train-labels-idx1-ubyte"))?;
    let target = dir.join("train-images-idx3-ubyte");
    let dir = dir.to_path_buf();
    Ok(Target {
        name: "idx (plain, gzip)",
        seeds: vec![raw, gzipped, labels],
        run: Box::new(move |b| {
            if std::fs::write(&target, b).is_err() {
                return false;
            }
            let checked = data::check_fashion_mnist_dir(&dir).is_ok();
            let loaded = data::load_fashion_mnist(&dir).is_ok();
            checked && loaded
        }),
    })
}

/// CIFAR-100: the mutated bytes are the test file.
fn cifar_target(dir: &Path) -> std::io::Result<Target> {
    std::fs::create_dir_all(dir)?;
    let images: Vec<u8> = (0..2 * 3072).map(|i| (i % 253) as u8).collect();
    write_cifar_binary(&dir.join("train.bin"), true, &[3, 99], &images)?;
    let seed = dir.join("seed.bin");
    write_cifar_binary(&seed, true, &[7, 42], &images)?;
    let seeds = vec![std::fs::read(&seed)?];
    let target = dir.join("test.bin");
    let dir = dir.to_path_buf();
    Ok(Target {
        name: "CIFAR binary",
        seeds,
        run: Box::new(move |b| {
            if std::fs::write(&target, b).is_err() {
                return false;
            }
            data::check_cifar_dir(&dir, true).is_ok() && data::load_cifar(&dir, true).is_ok()
        }),
    })
}

/// Imported databases: the mutated bytes are another machine's database file; inspected, and
/// merged into a scratch database when inspection passes.
fn import_target(dir: &Path) -> std::io::Result<Target> {
    std::fs::create_dir_all(dir)?;
    let seed = dir.join("seed.db");
    {
        let w = store::Writer::open(&seed).map_err(std::io::Error::other)?;
        let run = w
            .create_run(store::NewRun {
                name: "seed".into(),
                config_toml: Config::default().to_toml(),
                dataset: "synthetic".into(),
                model: "micro".into(),
                operator: "add".into(),
                seed: 0,
                tags: "fuzz".into(),
                provenance: String::new(),
            })
            .map_err(std::io::Error::other)?;
        let rows = (0..20)
            .map(|s| store::MetricRow {
                run,
                key: "train/loss".into(),
                step: s,
                epoch: 0,
                value: 1.0 / (1.0 + s as f64),
                wall_time: 1.7e9 + s as f64,
            })
            .collect();
        w.send(store::WriteOp::Metrics(rows))
            .map_err(std::io::Error::other)?;
        w.status(run, store::Status::Finished, None);
        w.flush().map_err(std::io::Error::other)?;
    }
    let seeds = vec![std::fs::read(&seed)?];
    let file = dir.join("other.db");
    let target = dir.join("target.db");
    Ok(Target {
        name: "imported database",
        seeds,
        run: Box::new(move |b| {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let _ = std::fs::remove_file(with_suffix(&file, suffix));
            }
            if std::fs::write(&file, b).is_err() {
                return false;
            }
            store::import::inspect(&file).is_ok() && store::import::import(&target, &file).is_ok()
        }),
    })
}

/// A hostile database's whole life here (issue 43): the mutated file is listed and its runs
/// deleted as a user's own database, then imported into a project database whose imported runs
/// are listed and deleted in turn. The seeds hold runs whose checkpoint rows name files outside
/// both databases' checkpoint folders (absolute, relative, and a link in the run's own folder to
/// the outside), a zombie run (`running`, heartbeat an hour ahead) and damaged rows (an unknown
/// status, text where a time belongs). The property, checked after every case, panics (a
/// finding) when broken:
/// - nothing changes outside `<db>-checkpoints/` of the two databases and the files themselves;
/// - a listing never fails as a whole: a file with this code's schema that SQLite finds sound is
///   always listed, damaged rows and all, and so is the project database after any import.
fn lifecycle_target(dir: &Path) -> std::io::Result<Target> {
    let outside = dir.join("outside");
    let incoming = dir.join("incoming");
    let project = dir.join("project");
    for d in [&outside, &incoming, &project] {
        std::fs::create_dir_all(d)?;
    }
    for f in ["important.txt", "important.tex", "epoch-0001.model.ot"] {
        std::fs::write(outside.join(f), b"mine")?;
    }
    std::fs::create_dir_all(outside.join("run-1"))?;
    std::fs::write(outside.join("run-1/epoch-0002.model.ot"), b"mine too")?;
    std::fs::write(project.join("notes.txt"), b"the project's own notes")?;
    let file = incoming.join("other.db");
    let target = project.join("project.db");
    let seeds = lifecycle_seeds(&incoming.join("seed.db"), &outside)?;
    store::Writer::open(&target).map_err(std::io::Error::other)?;
    let schema = schema_sql(&target).map_err(std::io::Error::other)?;
    let dbs = [file.clone(), target.clone()];
    let allowed = move |p: &Path| may_change(&dbs, p);
    let before = tree(dir, &allowed)?;
    let outside2 = outside.clone();
    let dir = dir.to_path_buf();
    Ok(Target {
        name: "database lifecycle",
        seeds,
        run: Box::new(move |b| {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let _ = std::fs::remove_file(with_suffix(&file, suffix));
            }
            if std::fs::write(&file, b).is_err() || plant_checkpoints(&file, &outside2).is_err() {
                return false;
            }
            // The file as the user's own database: listed, every run deleted.
            let listed = store::Reader::open(&file).and_then(|r| r.runs());
            if let Err(e) = &listed {
                let sound = store::check(&file).is_ok_and(|c| c.problems.is_empty());
                // Ours: this code's tables and indexes, at this code's schema version (a newer
                // version is refused, rightly, whatever its tables).
                let ours = schema_sql(&file).is_ok_and(|s| s == schema);
                assert!(!(sound && ours), "a sound database was not listed: {e}");
            }
            for run in listed.iter().flatten() {
                let _ = store::manage::delete(&file, run.id);
            }
            // Into the project, as it came: refused whole, or every run it brought in listed and
            // deleted (one still active, as a run beating on another machine is, refused).
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let _ = std::fs::remove_file(with_suffix(&file, suffix));
            }
            if std::fs::write(&file, b).is_err() {
                return false;
            }
            let imported = store::import::import(&target, &file).is_ok();
            let runs = store::Reader::open(&target)
                .and_then(|r| r.runs())
                .unwrap_or_else(|e| panic!("the project database is not listed: {e}"));
            for run in &runs {
                if let Err(e) = store::manage::delete(&target, run.id) {
                    assert!(
                        run.status.is_active(),
                        "an imported run cannot be deleted: {e}"
                    );
                }
            }
            let after = tree(&dir, &allowed).expect("walk the scratch folder");
            if after != before {
                let changed: Vec<_> = before
                    .iter()
                    .filter(|e| !after.contains(e))
                    .chain(after.iter().filter(|e| !before.contains(e)))
                    .collect();
                panic!("a file outside the checkpoint folders changed: {changed:?}");
            }
            listed.is_ok() && imported
        }),
    })
}

/// Whether `p` is one of the databases `dbs`, a file SQLite keeps beside one, or in one's own
/// checkpoint folder: what a case may change.
fn may_change(dbs: &[PathBuf], p: &Path) -> bool {
    dbs.iter().any(|db| {
        ["", "-wal", "-shm", "-journal"]
            .iter()
            .any(|s| p == with_suffix(db, s))
            || store::manage::checkpoint_dir(db, 0)
                .parent()
                .is_some_and(|own| p.starts_with(own))
    })
}

/// The lifecycle seeds: a database with finished runs whose checkpoint rows name files outside,
/// a zombie run, and a copy with damaged rows.
fn lifecycle_seeds(seed: &Path, outside: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    fn io(e: impl std::error::Error + Send + Sync + 'static) -> std::io::Error {
        std::io::Error::other(e)
    }
    {
        let w = store::Writer::open(seed).map_err(io)?;
        for (i, path) in [
            outside.join("important").display().to_string(),
            "../outside/important".to_owned(),
            outside.join("epoch-0001").display().to_string(),
        ]
        .into_iter()
        .enumerate()
        {
            let run = w
                .create_run(store::NewRun {
                    name: format!("hostile {i}"),
                    config_toml: Config::default().to_toml(),
                    dataset: "synthetic".into(),
                    model: "micro".into(),
                    operator: "shift".into(),
                    seed: i as u64,
                    tags: "fuzz".into(),
                    provenance: String::new(),
                })
                .map_err(io)?;
            let rows = (0..5)
                .map(|s| store::MetricRow {
                    run,
                    key: store::keys::VAL_TOP1.into(),
                    step: s,
                    epoch: s,
                    value: 0.1 * s as f64,
                    wall_time: 1.7e9 + s as f64,
                })
                .collect();
            w.send(store::WriteOp::Metrics(rows)).map_err(io)?;
            w.send(store::WriteOp::Checkpoint {
                row: store::CheckpointRow {
                    run,
                    epoch: 1,
                    step: 4,
                    path,
                    rng_state: "0".into(),
                },
                keep: 3,
            })
            .map_err(io)?;
            w.status(run, store::Status::Finished, None);
        }
        w.flush().map_err(io)?;
    }
    let sql = |statements: &str| -> std::io::Result<Vec<u8>> {
        let conn = rusqlite::Connection::open(seed).map_err(io)?;
        conn.execute_batch(statements).map_err(io)?;
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .map_err(io)?;
        drop(conn);
        std::fs::read(seed)
    };
    let zombie = sql(
        "UPDATE runs SET status = 'running', owner_host = 'elsewhere',
         heartbeat_at = strftime('%s', 'now') + 3600 WHERE id = 1",
    )?;
    let damaged = sql("UPDATE runs SET status = 'exploded' WHERE id = 2;
         UPDATE runs SET created_at = 'yesterday' WHERE id = 3;")?;
    Ok(vec![zombie, damaged])
}

/// Each run's own checkpoint folder of database `db`, as a run leaves it (run 1 with its files)
/// or as a hostile one would (run 2 a link to the outside folder).
fn plant_checkpoints(db: &Path, outside: &Path) -> std::io::Result<()> {
    let own = store::manage::checkpoint_dir(db, 1);
    std::fs::create_dir_all(&own)?;
    std::fs::write(own.join("epoch-0001.model.ot"), b"x")?;
    let link = store::manage::checkpoint_dir(db, 2);
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(outside, &link)?;
    }
    Ok(())
}

/// The `CREATE` statements of database `db`, in order, and its schema version
/// (`PRAGMA user_version`): equal when two files share a schema.
fn schema_sql(db: &Path) -> rusqlite::Result<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let sql = conn
        .query_row(
            "SELECT group_concat(sql, ';') FROM (SELECT sql FROM sqlite_master ORDER BY name)",
            [],
            |r| r.get::<_, Option<String>>(0),
        )?
        .unwrap_or_default();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    Ok(format!("{sql}; user_version {version}"))
}

/// Every entry under `root` but those `allowed` to change: its path, kind and content (a link's
/// target, not what it points at).
fn tree(root: &Path, allowed: &dyn Fn(&Path) -> bool) -> std::io::Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if allowed(&p) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p)?;
            let what = if meta.is_symlink() {
                format!("link to {}", std::fs::read_link(&p)?.display())
            } else if meta.is_dir() {
                todo.push(p.clone());
                "folder".to_owned()
            } else {
                format!("{:?}", std::fs::read(&p)?)
            };
            out.push((p, what));
        }
    }
    out.sort();
    Ok(out)
}

/// An exported tiny model (a Mult conv, a residual Add conv with its affine, pool, linear): the
/// mutated bytes replace its `model.json` (`json`) or its `model.safetensors`; the model is
/// loaded and run on a batch.
fn model_target(dir: &Path, json: bool) -> std::io::Result<Target> {
    use shiftadd_core::export::{ExportedModel, FORMAT, ModelJson};
    use shiftadd_core::model::Step;
    use shiftadd_core::spec::config::OpKind;
    use tch::{Kind, Tensor};
    std::fs::create_dir_all(dir)?;
    let conv = |name: &str, op, folded_bn, relu6| Step::Conv {
        name: name.into(),
        op,
        stride: 1,
        pad: 1,
        groups: 1,
        relu6,
        act_fixed_point: op == OpKind::Add,
        folded_bn,
        act: None,
    };
    let model = ModelJson {
        format: FORMAT.into(),
        run: 1,
        model: "micro".into(),
        dataset: "synthetic".into(),
        operator: OpKind::Add,
        weight_bits: 5,
        input: [1, 8, 8],
        norm: vec![(0.5, 0.25)],
        classes: 10,
        steps: vec![
            conv("c1", OpKind::Mult, true, true),
            Step::Save,
            conv("c2", OpKind::Add, false, false),
            Step::AddSaved,
            Step::Pool,
            Step::Linear {
                name: "fc".into(),
                op: OpKind::Mult,
                act_fixed_point: false,
                act: None,
            },
        ],
    };
    let t = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, tch::Device::Cpu));
    let tensors = [
        ("c1.weight", t(&[4, 1, 3, 3])),
        ("c1.bias", t(&[4])),
        ("c2.weight", t(&[4, 4, 3, 3])),
        ("c2.scale", t(&[4])),
        ("c2.shift", t(&[4])),
        ("fc.weight", t(&[10, 4])),
        ("fc.bias", t(&[10])),
    ];
    let json_path = dir.join("model.json");
    let st_path = dir.join("model.safetensors");
    std::fs::write(
        &json_path,
        serde_json::to_vec_pretty(&model).map_err(std::io::Error::other)?,
    )?;
    Tensor::write_safetensors(&tensors, &st_path).map_err(std::io::Error::other)?;
    let target = if json { json_path } else { st_path };
    let seeds = vec![std::fs::read(&target)?];
    let dir = dir.to_path_buf();
    let x = Tensor::zeros([2, 1, 8, 8], (Kind::Float, tch::Device::Cpu));
    Ok(Target {
        name: if json {
            "model.json"
        } else {
            "model.safetensors"
        },
        seeds,
        run: Box::new(move |b| {
            if std::fs::write(&target, b).is_err() {
                return false;
            }
            ExportedModel::load(&dir).is_ok_and(|m| m.forward(&x).is_ok())
        }),
    })
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<20} {:>9} cases  {:>6.1} s  {:>8.0} cases/s  {:>5.1} % accepted  {} panics  {} hangs  slowest {:.1} ms",
            self.name,
            self.cases,
            self.elapsed.as_secs_f64(),
            self.cases as f64 / self.elapsed.as_secs_f64().max(1e-9),
            100.0 * self.accepted as f64 / self.cases.max(1) as f64,
            self.panics,
            self.hangs,
            self.slowest.as_secs_f64() * 1e3
        )
    }
}
