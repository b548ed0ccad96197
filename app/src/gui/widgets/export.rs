//! Export from any plot or table: CSV of what it shows, PNG of the plot, SVG, Markdown, LaTeX.
//! Each export opens a Save dialog (folder, with its subfolders to walk into, and file name); the
//! folder starts where the last export went (kept between starts by the app), else in `exports/`
//! beside the database. Files are written on a background thread; the outcome comes back as a
//! status line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, bounded};
use egui::{ColorImage, Rect};

use super::figure::FigureSize;

/// What a plot asked to export.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportRequest {
    /// Write this CSV text.
    Csv { name: String, text: String },
    /// Write this text as `<name>.<ext>` (a table as Markdown or LaTeX).
    Text {
        name: String,
        ext: &'static str,
        text: String,
    },
    /// Capture the plot named `name` from the next rendered frame (a plot with no SVG of its
    /// own; the area below its title row).
    Png { name: String },
    /// Draw this SVG off screen as a PNG, at the size the Save dialog sets.
    Figure { name: String, svg: String },
    /// Write this picture as a PNG (a segmentation run's masks).
    Image {
        name: String,
        image: Arc<ColorImage>,
    },
}

impl ExportRequest {
    fn name_and_ext(&self) -> (&str, &'static str) {
        match self {
            Self::Csv { name, .. } => (name, "csv"),
            Self::Text { name, ext, .. } => (name, ext),
            Self::Png { name } | Self::Figure { name, .. } | Self::Image { name, .. } => {
                (name, "png")
            }
        }
    }
}

/// Subfolders listed at most in the Save dialog (a huge folder stays responsive).
const MAX_LISTED: usize = 500;

/// An export waiting in the Save dialog for where to go.
struct Pending {
    request: ExportRequest,
    /// A figure's size (as last chosen).
    size: FigureSize,
    folder: String,
    file: String,
    /// The folder last listed and its subfolders (or why it could not be read).
    listed: Option<(String, Result<Vec<String>, String>)>,
}

/// Export requests of this frame and the results of earlier ones.
pub struct Export {
    /// `exports/` beside the database.
    default_dir: PathBuf,
    /// Where the next Save dialog opens: the folder of the last export, else `default_dir`.
    dir: PathBuf,
    pending: Option<Pending>,
    /// PNG captures asked for, waiting for their plot to be drawn (to learn its rectangle).
    png_wanted: Vec<(String, PathBuf)>,
    done_tx: Sender<Result<PathBuf, String>>,
    done_rx: Receiver<Result<PathBuf, String>>,
    /// Every file written, most recent last (tests and the status line read it).
    pub written: Vec<PathBuf>,
    pub last_error: Option<String>,
    /// What the view shows (a run's or a study's name): the start of an export's file name.
    pub subject: Option<String>,
    /// Each plot's title, by its id, as its header last drew it: the rest of the file name.
    titles: std::collections::HashMap<String, String>,
    /// The size the last figure was drawn at.
    size: FigureSize,
}

impl Export {
    /// Exports default to `default_dir`; the Save dialog opens in `last` when given.
    pub fn new(default_dir: PathBuf, last: Option<PathBuf>) -> Self {
        // Writers wait when 64 results are undrained (the UI drains them every frame).
        let (done_tx, done_rx) = bounded(64);
        Self {
            dir: last.unwrap_or_else(|| default_dir.clone()),
            default_dir,
            pending: None,
            png_wanted: Vec::new(),
            done_tx,
            done_rx,
            written: Vec::new(),
            last_error: None,
            subject: None,
            titles: std::collections::HashMap::new(),
            size: FigureSize::default(),
        }
    }

    /// Plot `id` is titled `title` (its header says so every frame; stored when it changes).
    pub fn title(&mut self, id: &str, title: &str) {
        if self.titles.get(id).map(String::as_str) != Some(title) {
            self.titles.insert(id.to_owned(), title.to_owned());
        }
    }

    /// The folder the next Save dialog opens in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder shown in the open Save dialog, if one is open.
    pub fn dialog_folder(&self) -> Option<&str> {
        self.pending.as_ref().map(|p| p.folder.as_str())
    }

    /// Ask where to save `r` (the Save dialog opens at the end of the frame; a request made
    /// while it is open replaces the one waiting).
    pub fn request(&mut self, r: ExportRequest) {
        let (name, ext) = r.name_and_ext();
        let title = self.titles.get(name).map_or(name, String::as_str);
        let file = file_name(self.subject.as_deref(), title, ext);
        self.pending = Some(Pending {
            request: r,
            size: self.size,
            folder: self.dir.display().to_string(),
            file,
            listed: None,
        });
    }

    /// Write `r` to `path` now (no dialog).
    pub fn save(&mut self, r: ExportRequest, path: PathBuf) {
        match r {
            ExportRequest::Csv { text, .. } | ExportRequest::Text { text, .. } => {
                self.spawn_write(path, move |p| {
                    std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))
                });
            }
            ExportRequest::Png { name } => self.png_wanted.push((name, path)),
            ExportRequest::Image { image, .. } => {
                self.spawn_write(path, move |p| write_png(p, &image));
            }
            ExportRequest::Figure { svg, .. } => {
                let size = self.size;
                self.spawn_write(path, move |p| {
                    super::figure::rasterize(&svg, size).and_then(|img| write_png(p, &img))
                });
            }
        }
    }

    /// Draw the Save dialog if an export waits for it. Returns the folder of a confirmed save,
    /// for the app to remember.
    pub fn dialog(&mut self, ctx: &egui::Context) -> Option<PathBuf> {
        let pending = self.pending.as_mut()?;
        let listing = list_subfolders(pending);
        let mut choice = None;
        let modal = egui::Modal::new(egui::Id::unique("export-save-dialog")).show(ctx, |ui| {
            ui.set_width(520.0);
            let (name, ext) = pending.request.name_and_ext();
            let what = self.titles.get(name).map_or(name, String::as_str);
            ui.heading(format!("Export {what} as {}", ext.to_uppercase()));
            ui.add_space(4.0);
            egui::Grid::new("export-save-grid")
                .num_columns(2)
                .spacing([8.0, 6.0])
                .show(ui, |ui| {
                    ui.label("Folder");
                    ui.add(
                        egui::TextEdit::singleline(&mut pending.folder)
                            .desired_width(f32::INFINITY),
                    );
                    ui.end_row();
                    folder_rows(ui, &mut pending.folder, &listing, &self.default_dir);
                    ui.label("File name");
                    let file = ui.add(
                        egui::TextEdit::singleline(&mut pending.file).desired_width(f32::INFINITY),
                    );
                    if file.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                        choice = Some(true);
                    }
                    ui.end_row();
                    if matches!(pending.request, ExportRequest::Figure { .. }) {
                        figure_rows(ui, &mut pending.size);
                    }
                });
            let target = Path::new(pending.folder.trim()).join(pending.file.trim());
            let problem = save_problem(pending.folder.trim(), pending.file.trim(), &target);
            match &problem {
                Some(p) => {
                    ui.colored_label(ui.visuals().error_fg_color, p);
                }
                None if target.exists() => {
                    ui.colored_label(ui.visuals().warn_fg_color, "replaces the file there");
                }
                None => {}
            }
            ui.separator();
            ui.horizontal(|ui| {
                if ui
                    .add_enabled(problem.is_none(), egui::Button::new("Save"))
                    .clicked()
                {
                    choice = Some(true);
                }
                if ui.button("Cancel").clicked() {
                    choice = Some(false);
                }
            });
            problem.is_none()
        });
        let can_save = modal.inner;
        if modal.should_close() && choice.is_none() {
            choice = Some(false);
        }
        match choice {
            Some(true) if can_save => {
                let p = self.pending.take()?;
                self.size = p.size;
                let folder = PathBuf::from(p.folder.trim());
                self.save(p.request, folder.join(p.file.trim()));
                self.dir.clone_from(&folder);
                Some(folder)
            }
            Some(false) => {
                self.pending = None;
                None
            }
            _ => None,
        }
    }

    /// Called by a plot after drawing: if a PNG of it was asked for, request a screenshot and
    /// crop it to `rect` when it arrives.
    pub fn capture_if_requested(&mut self, ctx: &egui::Context, name: &str, rect: Rect) {
        let Some(i) = self.png_wanted.iter().position(|(n, _)| n == name) else {
            return;
        };
        let (_, path) = self.png_wanted.remove(i);
        let tx = self.done_tx.clone();
        let ppp = ctx.pixels_per_point();
        let waker = ctx.clone();
        ctx.request_screenshot(move |image: Arc<ColorImage>| {
            let cropped = image.region(&rect, Some(ppp));
            let result = spawn_named("export", move || write_png(&path, &cropped).map(|()| path));
            // On the UI thread: never wait (a full channel means 64 results undrained).
            let _ = tx.try_send(result);
            waker.request_repaint();
        });
        ctx.request_repaint();
    }

    /// Collect finished writes (call once per frame).
    pub fn poll(&mut self) {
        while let Ok(r) = self.done_rx.try_recv() {
            match r {
                Ok(p) => {
                    self.last_error = None;
                    self.written.push(p);
                }
                Err(e) => self.last_error = Some(e),
            }
        }
    }

    /// A status line for the most recent export.
    pub fn status(&self) -> Option<String> {
        if let Some(e) = &self.last_error {
            return Some(format!("export failed: {e}"));
        }
        self.written
            .last()
            .map(|p| format!("exported {}", p.display()))
    }

    fn spawn_write(
        &self,
        path: PathBuf,
        write: impl FnOnce(&Path) -> Result<(), String> + Send + 'static,
    ) {
        let tx = self.done_tx.clone();
        let spawned = std::thread::Builder::new()
            .name("export".into())
            .spawn(move || {
                let dir = path.parent().unwrap_or(Path::new("."));
                let r = std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))
                    .and_then(|()| write(&path))
                    .map(|()| path);
                let _ = tx.send(r);
            });
        if let Err(e) = spawned {
            let _ = self
                .done_tx
                .try_send(Err(format!("cannot start a thread: {e}")));
        }
    }
}

/// `<subject>_<what>.<ext>`: what the view shows (a run's or a study's name) and the plot's
/// title up to its first `:` or `,` (`aug-control_test-top1-by-variant.svg`), each reduced to
/// letters, digits, dots and dashes. An export of the same plot again proposes the same name
/// (the dialog says that it replaces the file).
fn file_name(subject: Option<&str>, title: &str, ext: &str) -> String {
    let safe = |s: &str| -> String {
        let mut out = String::new();
        for c in s.trim().chars() {
            let c = if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            };
            if !(c == '-' && out.ends_with('-')) {
                out.push(c);
            }
        }
        out.trim_matches('-').to_owned()
    };
    let what = safe(title.split([':', ',']).next().unwrap_or(title));
    let stem = match subject.map(safe).filter(|s| !s.is_empty()) {
        Some(subject) if !what.is_empty() => format!("{subject}_{what}"),
        Some(subject) => subject,
        None if what.is_empty() => "export".to_owned(),
        None => what,
    };
    format!("{stem}.{ext}")
}

/// The Save dialog's rows for a figure: its width in points and its pixels per point.
fn figure_rows(ui: &mut egui::Ui, size: &mut FigureSize) {
    let label = ui.label("Width");
    ui.horizontal(|ui| {
        ui.add(
            egui::DragValue::new(&mut size.width)
                .range(FigureSize::WIDTH)
                .speed(10.0)
                .suffix(" pt"),
        )
        .labelled_by(label.id);
        ui.label("Scale");
        for k in [1.0, 2.0, 3.0, 4.0] {
            ui.selectable_value(&mut size.scale, k, format!("{k}×"));
        }
        ui.weak(format!(
            "{} px wide",
            (size.width * size.scale).round() as u32
        ));
    });
    ui.end_row();
}

/// The Save dialog's rows under the folder field: Up and Default, then the folder's
/// subfolders, a click opening one.
fn folder_rows(
    ui: &mut egui::Ui,
    folder: &mut String,
    listing: &Result<Vec<String>, String>,
    default_dir: &Path,
) {
    ui.label("");
    ui.horizontal(|ui| {
        if ui
            .button("Up")
            .on_hover_text("the folder above this one")
            .clicked()
            && let Some(up) = Path::new(folder.trim()).parent()
        {
            *folder = up.display().to_string();
        }
        if ui
            .button("Default")
            .on_hover_text(format!(
                "exports/ beside the database: {}",
                default_dir.display()
            ))
            .clicked()
        {
            *folder = default_dir.display().to_string();
        }
    });
    ui.end_row();
    ui.label("");
    egui::ScrollArea::vertical()
        .max_height(150.0)
        .auto_shrink([false, true])
        .show(ui, |ui| match &listing {
            Ok(subs) if subs.is_empty() => {
                ui.weak("no subfolders");
            }
            Ok(subs) => {
                for sub in subs {
                    if ui
                        .selectable_label(false, format!("{sub}/"))
                        .on_hover_text("open this folder")
                        .clicked()
                    {
                        *folder = Path::new(folder.trim()).join(sub).display().to_string();
                    }
                }
            }
            Err(why) => {
                ui.weak(why);
            }
        });
    ui.end_row();
}

/// The subfolders of the dialog's folder, listed again only when the folder changed.
fn list_subfolders(p: &mut Pending) -> Result<Vec<String>, String> {
    let folder = p.folder.trim().to_owned();
    if let Some((listed, subs)) = &p.listed
        && *listed == folder
    {
        return subs.clone();
    }
    let path = Path::new(&folder);
    let subs = if path.as_os_str().is_empty() {
        Err("name a folder".to_owned())
    } else if !path.exists() {
        Err("a new folder: created when you save".to_owned())
    } else {
        std::fs::read_dir(path)
            .map_err(|e| format!("cannot read {folder}: {e}"))
            .map(|entries| {
                let mut subs: Vec<String> = entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .take(MAX_LISTED)
                    .collect();
                subs.sort();
                subs
            })
    };
    p.listed = Some((folder, subs.clone()));
    subs
}

/// Why the dialog cannot save to `target` as it stands, if it cannot.
fn save_problem(folder: &str, file: &str, target: &Path) -> Option<String> {
    if folder.is_empty() {
        Some("name a folder".into())
    } else if file.is_empty() {
        Some("name the file".into())
    } else if Path::new(folder).exists() && !Path::new(folder).is_dir() {
        Some(format!("{folder} is a file, not a folder"))
    } else if target.is_dir() {
        Some(format!("{} is a folder", target.display()))
    } else {
        None
    }
}

/// Run `f` on a named thread and wait for it (the screenshot callback runs on the render thread;
/// encoding a plot-sized PNG takes a few milliseconds).
fn spawn_named<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "export thread panicked".to_owned())?
}

/// Encode an egui image as an 8-bit RGBA PNG.
pub fn write_png(path: &Path, image: &ColorImage) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let [w, h] = image.size;
    let mut enc = png::Encoder::new(
        std::io::BufWriter::new(file),
        u32::try_from(w).map_err(|e| e.to_string())?,
        u32::try_from(h).map_err(|e| e.to_string())?,
    );
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(|e| e.to_string())?;
    let bytes: Vec<u8> = image
        .pixels
        .iter()
        .flat_map(egui::Color32::to_srgba_unmultiplied)
        .collect();
    writer
        .write_image_data(&bytes)
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trips_its_size() {
        let dir = std::env::temp_dir().join(format!("shiftadd-png-{}", std::process::id()));
        let img = ColorImage::new([3, 2], vec![egui::Color32::RED; 6]);
        let path = dir.join("x.png");
        write_png(&path, &img).expect("write");
        let decoder = png::Decoder::new(std::io::BufReader::new(
            std::fs::File::open(&path).expect("open"),
        ));
        let reader = decoder.read_info().expect("png");
        assert_eq!((reader.info().width, reader.info().height), (3, 2));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn csv_request_writes_a_file() {
        let dir = std::env::temp_dir().join(format!("shiftadd-csv-{}", std::process::id()));
        let mut e = Export::new(dir.clone(), None);
        let name = file_name(None, "loss plot", "csv");
        e.save(
            ExportRequest::Csv {
                name: "loss plot".into(),
                text: "a,b\n".into(),
            },
            dir.join("sub").join(name),
        );
        let t0 = std::time::Instant::now();
        while e.written.is_empty() && t0.elapsed().as_secs() < 10 {
            std::thread::sleep(std::time::Duration::from_millis(5));
            e.poll();
        }
        let p = e.written.last().expect("written").clone();
        assert!(
            p.file_name()
                .is_some_and(|n| n.to_string_lossy() == "loss-plot.csv")
        );
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "a,b\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn file_names_say_what_the_view_shows_and_the_plot() {
        assert_eq!(
            file_name(
                Some("aug-control"),
                "test/top1 by variant: mean ± 95 % CI",
                "svg"
            ),
            "aug-control_test-top1-by-variant.svg"
        );
        assert_eq!(
            file_name(Some("smoke shift/aug"), "Validation top-1", "png"),
            "smoke-shift-aug_Validation-top-1.png"
        );
        assert_eq!(file_name(None, "Loss", "csv"), "Loss.csv");
        assert_eq!(file_name(Some("  "), "", "csv"), "export.csv");
        assert_eq!(file_name(Some("../x"), "", "csv"), "..-x.csv");
    }

    #[test]
    fn the_dialog_opens_in_the_last_folder_and_lists_visible_subfolders() {
        let dir = std::env::temp_dir().join(format!("shiftadd-dlg-{}", std::process::id()));
        for sub in ["b", "a", ".hidden"] {
            std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        }
        std::fs::write(dir.join("file.txt"), "x").expect("file");
        let mut e = Export::new(PathBuf::from("exports"), Some(dir.clone()));
        assert_eq!(e.dialog_folder(), None);
        e.request(ExportRequest::Png {
            name: "loss".into(),
        });
        assert_eq!(e.dialog_folder(), Some(dir.display().to_string().as_str()));
        let p = e.pending.as_mut().expect("pending");
        assert_eq!(p.file, "loss.png");
        assert_eq!(list_subfolders(p), Ok(vec!["a".to_owned(), "b".to_owned()]));
        p.folder = dir.join("new").display().to_string();
        assert!(list_subfolders(p).is_err_and(|e| e.contains("created when you save")));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_dialog_names_what_stops_a_save() {
        let dir = std::env::temp_dir().join(format!("shiftadd-dlgp-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
        std::fs::write(dir.join("f"), "x").expect("file");
        let d = dir.display().to_string();
        assert_eq!(
            save_problem("", "x.csv", Path::new("x.csv")).as_deref(),
            Some("name a folder")
        );
        assert_eq!(save_problem(&d, "", &dir).as_deref(), Some("name the file"));
        let f = dir.join("f").display().to_string();
        assert!(
            save_problem(&f, "x.csv", &dir.join("f/x.csv"))
                .is_some_and(|p| p.contains("not a folder"))
        );
        assert!(
            save_problem(&d, "sub", &dir.join("sub")).is_some_and(|p| p.contains("is a folder"))
        );
        assert_eq!(save_problem(&d, "x.csv", &dir.join("x.csv")), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
