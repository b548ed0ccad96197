//! Issue 48: segmentation runs end to end — on the built-in scenes (composed from a small
//! Fashion-MNIST-shaped idx folder written here) and on a folder in the Pascal VOC layout: train,
//! stop and resume to the same numbers as an uninterrupted run, export the tiny model and
//! re-evaluate it from its files to the recorded mIoU; a bad VOC file refused before any run
//! exists, naming it. Small sizes, a few steps: the machinery, not accuracy.

use std::path::{Path, PathBuf};

use crate::support::{db, preempt_and_resume, run_err, run_ok, runs_json, s};

/// A Fashion-MNIST-shaped idx folder: `train` and `test` 28 × 28 items, item i of class i % 10 a
/// filled square whose side and intensity grow with its class, on a soft rim.
pub(crate) fn fake_fashion_mnist(dir: &Path, train: usize, test: usize) {
    use shiftadd_core::data::write_idx;
    std::fs::create_dir_all(dir).expect("mkdir");
    for (prefix, n) in [("train", train), ("t10k", test)] {
        let mut images = Vec::with_capacity(n * 784);
        for i in 0..n {
            let class = i % 10;
            let half = 4 + class as i64; // 8 to 26 pixels across
            for y in 0..28i64 {
                for x in 0..28i64 {
                    let d = (y - 14).abs().max((x - 14).abs());
                    images.push(match d - half {
                        ..0 => 90 + 16 * class as u8,
                        0 => 40,
                        _ => 0,
                    });
                }
            }
        }
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        write_idx(
            &dir.join(format!("{prefix}-images-idx3-ubyte")),
            &[n, 28, 28],
            &images,
        )
        .expect("images");
        write_idx(
            &dir.join(format!("{prefix}-labels-idx1-ubyte")),
            &[n],
            &labels,
        )
        .expect("labels");
    }
}

/// A segmentation config on the scenes of `items` (an idx folder): 300 scenes less 100 for
/// validation, batches of 50 (4 steps an epoch).
pub(crate) fn scenes_config(dir: &Path, name: &str, items: &Path, epochs: usize) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[data]\ndataset = \"fashion-mnist-scenes\"\ndir = \"{}\"\nscenes_train = 300\n\
             val_images = 100\nscenes_test = 60\ncanvas = 40\n\
             [model]\nname = \"micro\"\ntask = \"segmentation\"\nseg_channels = 16\n\
             [aug]\nhybrid = \"none\"\n[eval]\nbn_images = 100\n\
             [train]\nepochs = {epochs}\nbatch_size = 50\nlr = 0.1\nwarmup_epochs = 0.5\nthreads = 1\n",
            items.display()
        ),
    )
    .expect("write config");
    path
}

/// Metric `key`'s values in order of step.
fn series(dbp: &Path, key: &str) -> Vec<f64> {
    db(dbp)
        .prepare("SELECT value FROM metrics WHERE key = ?1 ORDER BY step")
        .expect("prepare")
        .query_map([key], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[test]
fn a_segmentation_run_resumes_exactly_and_its_export_scores_the_same() {
    let dir = tempfile::tempdir().expect("tmp");
    let items = dir.path().join("fmnist");
    fake_fashion_mnist(&items, 600, 100);
    let epochs = 2;
    for (op, hybrid) in [("shift", "mult"), ("add", "mult"), ("mult", "none")] {
        let name = format!("seg-{op}-{hybrid}");
        let cfg = scenes_config(dir.path(), &name, &items, epochs);
        let sets = [format!("ops.kind={op}"), format!("aug.hybrid={hybrid}")];
        let args = |dbp: &Path| -> Vec<String> {
            let mut a = vec!["train".into(), s(&cfg).into(), "--db".into(), s(dbp).into()];
            for set in &sets {
                a.extend(["--set".into(), set.clone()]);
            }
            a
        };
        // Uninterrupted.
        let whole = dir.path().join(format!("{name}-whole.db"));
        let a = args(&whole);
        run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
        // Stopped three steps in (as a cluster preempts a job), then resumed to the end.
        let dbp = dir.path().join(format!("{name}.db"));
        let a = args(&dbp);
        preempt_and_resume(
            &name,
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
            &dbp,
        );
        assert_eq!(runs_json(&dbp)[0]["status"], "finished", "{name}");
        // The same run: every step's loss, every epoch's scores, the test scores.
        for key in [
            "train/loss",
            "val/miou",
            "val/pixel_acc",
            "val/iou/0",
            "test/miou",
            "test/loss",
        ] {
            let (a, b) = (series(&whole, key), series(&dbp, key));
            assert!(!a.is_empty(), "{name}: {key} recorded");
            assert_eq!(a, b, "{name}: {key} the same across the stop");
        }
        assert_eq!(series(&dbp, "val/miou").len(), epochs, "{name}");
        assert!(
            series(&dbp, "val/top1").is_empty(),
            "{name}: no top-1 per pixel"
        );
        let miou = series(&dbp, "test/miou")[0];
        let iou: Vec<f64> = (0..11)
            .flat_map(|c| series(&dbp, &format!("test/iou/{c}")))
            .collect();
        assert!(
            (miou - iou.iter().sum::<f64>() / iou.len() as f64).abs() < 1e-9,
            "{name}: mIoU is the mean of the recorded classes' IoU"
        );
        // Exported, the tiny model gives the recorded test mIoU from its files alone.
        let model_dir = dir.path().join(format!("model-{name}"));
        run_ok(&["export", "1", "--model", s(&model_dir), "--db", s(&dbp)]);
        let exported = shiftadd_core::export::ExportedModel::load(&model_dir).expect("load");
        let config = shiftadd_core::Config::from_toml_str(
            &std::fs::read_to_string(&cfg).expect("config"),
            "config",
            &sets,
        )
        .expect("config");
        let again = exported.evaluate(&config.data, 25).expect("evaluate");
        assert!(
            (again - miou).abs() <= 1e-4,
            "{name}: exported {again} vs recorded {miou}"
        );
        let heads: Vec<_> = exported
            .json
            .steps
            .iter()
            .filter_map(|st| match st {
                shiftadd_core::model::Step::SegHead { cbr, op, .. } => Some((cbr, *op)),
                _ => None,
            })
            .collect();
        assert_eq!(heads.len(), 1, "{name}: one segmentation head");
        let shiftadd_core::model::Step::Conv { op: cbr_op, .. } = heads[0].0.as_ref() else {
            panic!("{name}: the head's cbr is a conv");
        };
        assert_eq!(
            cbr_op.as_str(),
            op,
            "{name}: the head's conv is a body conv"
        );
        // The integer program is for classifiers so far: refused, saying why.
        if op == "shift" {
            let int_dir = dir.path().join(format!("int-{name}"));
            let err = run_err(&["export", "1", "--int", s(&int_dir), "--db", s(&dbp)]);
            assert!(err.contains("segmentation head"), "{err}");
        }
    }
}

#[test]
fn a_voc_folder_trains_and_a_bad_file_is_refused_before_any_run() {
    use shiftadd_core::data::segment::{Composite, compose, write_index_png, write_voc};
    let dir = tempfile::tempdir().expect("tmp");
    let items = dir.path().join("fmnist");
    fake_fashion_mnist(&items, 200, 10);
    let (train, _) = shiftadd_core::data::load_fashion_mnist(&items).expect("items");
    let voc = dir.path().join("voc");
    let scenes = Composite {
        canvas: 40,
        ..Composite::default()
    };
    write_voc(&voc, "train", &compose(&train, 150, &scenes, 1)).expect("train");
    let val = voc.join("val");
    write_voc(&val, "val", &compose(&train, 20, &scenes, 2)).expect("val");
    // One folder: the val list names ids of its own images.
    let mut list = String::new();
    for i in 0..20 {
        for (sub, ext) in [("JPEGImages", "jpg"), ("SegmentationClass", "png")] {
            std::fs::rename(
                val.join(format!("{sub}/{i:06}.{ext}")),
                voc.join(format!("{sub}/v{i:06}.{ext}")),
            )
            .expect("move");
        }
        list.push_str(&format!("v{i:06}\n"));
    }
    std::fs::write(voc.join("ImageSets/Segmentation/val.txt"), list).expect("list");
    let cfg = dir.path().join("voc.toml");
    std::fs::write(
        &cfg,
        format!(
            "[data]\ndataset = \"voc\"\ndir = \"{}\"\nvoc_classes = 11\nvoc_size = 32\nvoc_rgb = false\n\
             val_images = 50\n[model]\nname = \"micro\"\ntask = \"segmentation\"\nseg_channels = 8\n\
             [aug]\nhybrid = \"none\"\n[eval]\nbn_images = 50\n\
             [train]\nepochs = 1\nbatch_size = 25\nthreads = 1\n",
            voc.display()
        ),
    )
    .expect("config");
    let dbp = dir.path().join("voc.db");
    run_ok(&["train", s(&cfg), "--db", s(&dbp)]);
    let listed = runs_json(&dbp);
    assert_eq!(listed[0]["status"], "finished", "{listed:?}");
    assert_eq!(listed[0]["dataset"], "voc");
    assert_eq!(series(&dbp, "val/miou").len(), 1);
    assert_eq!(
        series(&dbp, "test/miou").len(),
        1,
        "VOC's val list is the test split"
    );
    // A class index out of range in a mask the val list names: refused before a run is made.
    let mask = voc.join("SegmentationClass/v000003.png");
    let mut m = vec![0u8; 40 * 40];
    m[2 * 40 + 9] = 11;
    write_index_png(&mask, (40, 40), &m).expect("write");
    let err = run_err(&["train", s(&cfg), "--db", s(&dbp)]);
    assert!(
        err.contains("v000003.png") && err.contains("class index 11 at pixel (9, 2)"),
        "{err}"
    );
    assert_eq!(
        runs_json(&dbp).len(),
        1,
        "no run was created for the bad folder"
    );
    // A task that does not fit the data set, named by its key.
    let err = run_err(&[
        "train",
        s(&cfg),
        "--db",
        s(&dbp),
        "--set",
        "model.task=classification",
    ]);
    assert!(
        err.contains("model.task") && err.contains("class per pixel"),
        "{err}"
    );
}
