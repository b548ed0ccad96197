//! CPU time of one UI frame of Compare with 20 runs × 50,000 points per curve (two overlay
//! plots, smoothing on, so each run draws a raw and a smoothed curve per plot: 80 curves,
//! 4 million points) beside the runs list, in a 1600 × 1000 window: the CPU time of the calling
//! thread for layout + painting + tessellation, with the pointer moving over a plot.
//!
//! Reference in the same run: the same two plots drawn the naive way, every point handed to
//! egui_plot. `cargo bench -p shiftadd-app --bench ui_frame` prints both and their ratio.
//!
//! Then the Studies view (issue 16) with a study of 10 variants × 5 seeds × 20,000 points per run:
//! its table, the bar chart with CI whiskers and the banded curves (mean ± std per variant), with
//! and without the raw seeds drawn faintly. Then the runs table with 5,000 runs (issue 20).
//! Budget for each: 16 ms of UI-thread CPU per frame.

use std::time::{Duration, Instant};

use egui::{Color32, Pos2, RawInput, Rect, Vec2};
use egui_plot::{Line, Plot, PlotPoints};
use shiftadd_app::chart::series::{Series, ema_debiased};
use shiftadd_app::gui::ViewCtx;
use shiftadd_app::gui::data::backend::RunRow;
use shiftadd_app::gui::data::backend::StudyData;
use shiftadd_app::gui::data::cache::{DataCache, RunData};
use shiftadd_app::gui::settings::CompareSettings;
use shiftadd_app::gui::views::compare::CompareView;
use shiftadd_app::gui::views::runs::RunsView;
use shiftadd_app::gui::views::study::StudyView;
use shiftadd_app::gui::widgets::export::Export;
use shiftadd_core::spec::study::{Study, Variant};
use shiftadd_core::store::{RunId, RunSummary, StudyRow, StudyRunRow, keys};
use shiftadd_core::study::report::{Row, Table};
use shiftadd_core::study::stats::{Paired, Summary};

const RUNS: i64 = 20;
const POINTS: usize = 50_000;
const FRAMES: usize = 60;

const VARIANTS: usize = 10;
const SEEDS: usize = 5;
const STUDY_POINTS: usize = 20_000;

fn series(seed: u64, rising: bool) -> Series {
    series_of(seed, rising, POINTS)
}

fn series_of(seed: u64, rising: bool, points: usize) -> Series {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let xs: Vec<f64> = (0..points).map(|i| i as f64).collect();
    let ys = xs
        .iter()
        .map(|x| {
            let t = x / points as f64;
            let base = if rising {
                0.9 - 0.8 * (-5.0 * t).exp()
            } else {
                2.3 * (-3.0 * t).exp() + 0.2
            };
            base + 0.05 * noise()
        })
        .collect();
    Series::new(xs, ys)
}

fn run_row(run: RunId) -> RunRow {
    let mut row = RunRow::new(RunSummary {
        id: run,
        name: format!("run-{run}"),
        status: shiftadd_core::store::Status::Finished,
        reason: None,
        dataset: "synthetic".into(),
        model: "micro".into(),
        operator: "add".into(),
        seed: 0,
        tags: String::new(),
        created_at: 0.0,
        finished_at: None,
        epochs_done: Some(10),
        last_val_top1: Some(0.8),
        best_val_top1: Some(0.5 + 0.02 * run as f64),
        test_top1: Some(0.79),
        energy_mj: Some(1.0 + 0.1 * run as f64),
        energy_shiftaddnas_mj: Some(1.0 + 0.1 * run as f64),
        energy_project_mj: Some(1.5 + 0.1 * run as f64),
        uid: format!("bench-{run}"),
        archived: false,
        notes: String::new(),
        started_at: Some(0.0),
        heartbeat_at: Some(60.0),
        segmentation: false,
    });
    row.hybrid = "mult".into();
    row
}

fn data() -> DataCache {
    let mut d = DataCache::default();
    for run in 1..=RUNS {
        let mut rd = RunData::default();
        rd.series
            .insert(keys::VAL_TOP1.into(), series(run as u64, true));
        rd.series
            .insert(keys::TRAIN_LOSS.into(), series(1000 + run as u64, false));
        d.data.insert(run, rd);
        d.runs.push(run_row(run));
    }
    d
}

/// A finished study of `VARIANTS` × `SEEDS` runs, each with validation accuracy and training loss
/// over `STUDY_POINTS` steps, and its results table as the database would give it.
fn study_data() -> DataCache {
    let mut d = DataCache::default();
    let variants: Vec<Variant> = (0..VARIANTS)
        .map(|v| {
            Variant::new(
                format!("variant-{v}"),
                vec![format!("train.lr={}", 0.05 * (v + 1) as f64)],
            )
        })
        .collect();
    let mut cells = Vec::new();
    let mut rows = Vec::new();
    let mut run: RunId = 0;
    for (v, variant) in variants.iter().enumerate() {
        let mut values = Vec::new();
        for seed in 0..SEEDS as u64 {
            run += 1;
            let mut rd = RunData::default();
            let top1 = series_of(run as u64, true, STUDY_POINTS);
            values.push((seed, top1.ys[top1.ys.len() - 1] + 0.002 * v as f64));
            rd.series.insert(keys::VAL_TOP1.into(), top1);
            rd.series.insert(
                keys::TRAIN_LOSS.into(),
                series_of(1000 + run as u64, false, STUDY_POINTS),
            );
            d.data.insert(run, rd);
            d.runs.push(run_row(run));
            cells.push(StudyRunRow {
                study: 1,
                variant: variant.name.clone(),
                seed,
                run,
            });
        }
        let xs: Vec<f64> = values.iter().map(|(_, x)| *x).collect();
        rows.push(Row {
            variant: variant.name.clone(),
            missing: 0,
            failed: 0,
            running: 0,
            pruned: 0,
            summary: Summary::of(&xs),
            values,
            against: (v > 0).then(|| variants[0].name.clone()),
            paired: None,
            best: v + 1 == VARIANTS,
            train_secs: Some(2700.0),
        });
    }
    for r in 1..rows.len() {
        let pairs: Vec<(f64, f64)> = rows[r]
            .values
            .iter()
            .zip(&rows[0].values)
            .map(|(a, b)| (a.1, b.1))
            .collect();
        rows[r].paired = Paired::of(&pairs);
    }
    let study = Study {
        name: "bench-study".into(),
        base_toml: String::new(),
        seeds: (0..SEEDS as u64).collect(),
        metric: keys::TEST_TOP1.into(),
        baseline: variants[0].name.clone(),
        parallel: 2,
        variants,
        prune: None,
    };
    let table = Table {
        study: 1,
        name: study.name.clone(),
        metric: study.metric.clone(),
        baseline: study.baseline.clone(),
        rows,
        left: Default::default(),
    };
    d.studies = Some(std::sync::Arc::new(vec![StudyData {
        row: StudyRow {
            id: 1,
            name: study.name.clone(),
            identity: String::new(),
            spec: String::new(),
            created_at: 0.0,
        },
        study: Some(study),
        cells,
        jobs: Vec::new(),
        table: Some(table),
        fit: None,
    }]));
    d
}

fn input(frame: usize) -> RawInput {
    // The pointer sweeps over the first plot, as a user reading values would.
    let x = 450.0 + (frame % 40) as f32 * 10.0;
    RawInput {
        screen_rect: Some(Rect::from_min_size(Pos2::ZERO, Vec2::new(1600.0, 1000.0))),
        events: vec![egui::Event::PointerMoved(Pos2::new(x, 300.0))],
        time: Some(frame as f64 / 60.0),
        ..RawInput::default()
    }
}

/// CPU time consumed by the calling thread so far (what a frame costs, whatever else runs).
#[allow(unsafe_code)]
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Per-frame CPU times of `draw` (run + tessellate) on this thread.
fn measure(ctx: &egui::Context, mut draw: impl FnMut(&mut egui::Ui)) -> Vec<Duration> {
    let mut times = Vec::with_capacity(FRAMES);
    for frame in 0..FRAMES + 5 {
        let t0 = thread_cpu_time();
        let out = ctx.run_ui(input(frame), |ui| draw(ui));
        let prims = ctx.tessellate(out.shapes, out.pixels_per_point);
        std::hint::black_box(prims);
        if frame >= 5 {
            times.push(thread_cpu_time().saturating_sub(t0));
        }
    }
    times
}

fn report(label: &str, times: &mut [Duration]) -> f64 {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mean = times.iter().map(|d| ms(*d)).sum::<f64>() / times.len() as f64;
    let p95 = ms(times[(times.len() * 95 / 100).min(times.len() - 1)]);
    println!(
        "{label:<44} mean {mean:8.2} ms  median {:8.2} ms  p95 {p95:8.2} ms  max {:8.2} ms",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
    mean
}

fn main() {
    compare_frame();
    studies_frame();
    runs_frame();
}

/// The runs table with 5,000 runs (a quarter of them NAS proxies and study cells), three
/// config-key and metric columns: a steady frame (filter, sort and folding cached, only the
/// visible rows laid out), and the frame after each keystroke in the filter (all recomputed).
fn runs_frame() {
    const N: i64 = 5_000;
    let mut d = DataCache::default();
    d.runs = (1..=N)
        .map(|run| {
            let mut r = run_row(run);
            r.summary.tags = match run % 8 {
                0 => format!("nas-proxy,nas{}", run / 400 * 400 + 1),
                1 => format!("study,study{}", run / 1000),
                _ => "ablation".into(),
            };
            r.config_mut()
                .insert("train.lr".into(), format!("{}", 0.001 * (run % 97) as f64));
            r
        })
        .collect();
    d.runs_loaded = true;
    d.runs_version = 1;
    let mut persisted = shiftadd_app::gui::Persisted::default();
    persisted
        .runs
        .columns
        .push(shiftadd_app::gui::settings::Col::Config("train.lr".into()));
    persisted.runs.sort = shiftadd_app::gui::settings::SortBy::Col(
        shiftadd_app::gui::settings::Col::Config("train.lr".into()),
    );
    let mut view = RunsView::default();
    let (mut commands, mut changes) = (Vec::new(), Vec::new());
    println!("Runs table frame: {N} runs, 9 columns (one a config key, sorted by it), folded");
    let ctx = egui::Context::default();
    let mut steady = measure(&ctx, |ui| {
        egui::Panel::left("runs").exact_size(640.0).show(ui, |ui| {
            view.ui(ui, &mut d, &mut persisted, &mut commands, &mut changes);
        });
    });
    let steady = report("runs table, steady", &mut steady);
    let mut typed = 0;
    let mut typing = measure(&ctx, |ui| {
        typed += 1;
        persisted.runs.filter = if typed % 2 == 0 {
            "-tag:nas-proxy train.lr>0.01".into()
        } else {
            "ablation".into()
        };
        egui::Panel::left("runs").exact_size(640.0).show(ui, |ui| {
            view.ui(ui, &mut d, &mut persisted, &mut commands, &mut changes);
        });
    });
    let typing = report("runs table, filter changed every frame", &mut typing);
    println!(
        "budget 16 ms: steady {steady:.2} ms ({:.0} % of it), filter changed {typing:.2} ms ({:.0} %)",
        steady / 16.0 * 100.0,
        typing / 16.0 * 100.0
    );
}

/// What the app around a view owns and lends it through [`ViewCtx`].
struct Shell {
    export: Export,
    commands: Vec<shiftadd_core::run::Command>,
    searches: shiftadd_app::gui::data::searches::Searches,
    hw_model: shiftadd_core::spec::config::HwModel,
}

impl Shell {
    fn new() -> Self {
        Self {
            export: Export::new(std::env::temp_dir().join("shiftadd-bench-exports"), None),
            commands: Vec::new(),
            searches: shiftadd_app::gui::data::searches::Searches::new(
                &std::env::temp_dir().join("shiftadd-bench.db"),
                std::sync::Arc::new(|| {}),
            ),
            hw_model: shiftadd_core::spec::config::HwModel::default(),
        }
    }

    fn vcx<'a>(&'a mut self, data: &'a mut DataCache, compare: &'a [RunId]) -> ViewCtx<'a> {
        ViewCtx {
            data,
            current: None,
            compare,
            commands: &mut self.commands,
            export: &mut self.export,
            searches: &mut self.searches,
            now: Instant::now(),
            hw_model: &mut self.hw_model,
        }
    }
}

fn compare_frame() {
    let mut d = data();
    let mut shell = Shell::new();
    let runs: Vec<i64> = (1..=RUNS).collect();
    let mut settings = CompareSettings::default();
    let mut view = CompareView::default();
    println!(
        "Compare frame: {RUNS} runs × {POINTS} points × 2 metrics, smoothing {} (raw + smoothed curves)",
        settings.smoothing
    );

    let mut persisted = shiftadd_app::gui::Persisted {
        compare: runs.clone(),
        ..Default::default()
    };
    let ctx = egui::Context::default();
    let mut runs_view = RunsView::default();
    let mut changes = Vec::new();
    let mut app_times = measure(&ctx, |ui| {
        let mut vcx = shell.vcx(&mut d, &runs);
        // The app's layout: the runs list on the left, Compare in the centre.
        egui::Panel::left("runs").exact_size(540.0).show(ui, |ui| {
            runs_view.ui(ui, vcx.data, &mut persisted, vcx.commands, &mut changes);
        });
        egui::CentralPanel::default().show(ui, |ui| view.ui(ui, &mut vcx, &mut settings));
    });
    let app = report(
        "app (smooth full series, decimate per pixel)",
        &mut app_times,
    );

    // Reference: the same curves, every point handed to egui_plot each frame (no runs list).
    let d = data();
    let ctx = egui::Context::default();
    let mut ref_times = measure(&ctx, |ui| {
        egui::Panel::left("runs").exact_size(540.0).show(ui, |_| {});
        egui::CentralPanel::default().show(ui, |ui| {
            ui.columns(2, |cols| {
                for (i, key) in [keys::VAL_TOP1, keys::TRAIN_LOSS].into_iter().enumerate() {
                    Plot::new(("naive", i))
                        .height(420.0)
                        .show(&mut cols[i], |p| {
                            for r in &runs {
                                let s = &d.data[r].series[key];
                                let raw: Vec<[f64; 2]> =
                                    s.xs.iter().zip(&s.ys).map(|(x, y)| [*x, *y]).collect();
                                let sm = ema_debiased(&s.ys, 0.6);
                                let smooth: Vec<[f64; 2]> =
                                    s.xs.iter().zip(&sm).map(|(x, y)| [*x, *y]).collect();
                                p.line(
                                    Line::new(format!("{r} raw"), PlotPoints::from(raw))
                                        .color(Color32::GRAY),
                                );
                                p.line(Line::new(format!("{r}"), PlotPoints::from(smooth)));
                            }
                        });
                }
            });
        });
    });
    let naive = report("reference (all points to egui_plot)", &mut ref_times);
    println!(
        "ratio reference / app: {:.1}×  (budget: 16 ms per frame)",
        naive / app
    );
}

fn studies_frame() {
    println!(
        "\nStudies frame: {VARIANTS} variants × {SEEDS} seeds × {STUDY_POINTS} points (table, CI bars, bands)"
    );
    let mut d = study_data();
    let runs: Vec<i64> = Vec::new();
    let mut shell = Shell::new();
    let mut means = Vec::new();
    // Steady frames (the curves cached), then a live study: every frame one run gains a point,
    // so the bands are recomputed each frame (the worst case; live data arrives about once a second).
    for (show_seeds, live, label) in [
        (false, false, "studies view, bands"),
        (true, false, "studies view, bands + 50 raw seeds"),
        (true, true, "…, a new point every frame (recompute)"),
    ] {
        let mut view = StudyView::default();
        view.show_seeds = show_seeds;
        let ctx = egui::Context::default();
        let mut frame = 0u64;
        let mut times = measure(&ctx, |ui| {
            if live {
                frame += 1;
                let run = 1 + (frame % (VARIANTS * SEEDS) as u64) as RunId;
                if let Some(s) = d
                    .data
                    .get_mut(&run)
                    .and_then(|r| r.series.get_mut(keys::VAL_TOP1))
                {
                    let x = s.xs[s.xs.len() - 1] + 1.0;
                    let y = s.ys[s.ys.len() - 1];
                    s.xs.push(x);
                    s.ys.push(y);
                }
            }
            let mut vcx = shell.vcx(&mut d, &runs);
            egui::CentralPanel::default().show(ui, |ui| view.ui(ui, &mut vcx));
        });
        means.push(report(label, &mut times));
    }
    let worst = means.iter().copied().fold(0.0, f64::max);
    println!(
        "worst mean {worst:.2} ms per frame (budget: 16 ms){}",
        if worst < 16.0 { "" } else { "  OVER BUDGET" }
    );
}
