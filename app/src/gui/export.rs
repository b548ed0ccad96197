//! Export from any plot: CSV of what it shows, PNG of the plot. Files go to the export folder
//! next to the database (`<db folder>/exports/`), written on a background thread; the outcome
//! comes back as a status line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, unbounded};
use egui::{ColorImage, Rect};

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
    /// Capture the plot named `name` from the next rendered frame.
    Png { name: String },
}

/// Export requests of this frame and the results of earlier ones.
pub struct Export {
    dir: PathBuf,
    /// PNG captures asked for, waiting for their plot to be drawn (to learn its rectangle).
    png_wanted: Vec<String>,
    done_tx: Sender<Result<PathBuf, String>>,
    done_rx: Receiver<Result<PathBuf, String>>,
    /// Every file written, most recent last (tests and the status line read it).
    pub written: Vec<PathBuf>,
    pub last_error: Option<String>,
}

impl Export {
    pub fn new(dir: PathBuf) -> Self {
        let (done_tx, done_rx) = unbounded();
        Self {
            dir,
            png_wanted: Vec::new(),
            done_tx,
            done_rx,
            written: Vec::new(),
            last_error: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn request(&mut self, r: ExportRequest) {
        match r {
            ExportRequest::Csv { name, text } => {
                let path = self.file_for(&name, "csv");
                self.spawn_write(path, move |p| {
                    std::fs::write(p, text).map_err(|e| e.to_string())
                });
            }
            ExportRequest::Text { name, ext, text } => {
                let path = self.file_for(&name, ext);
                self.spawn_write(path, move |p| {
                    std::fs::write(p, text).map_err(|e| e.to_string())
                });
            }
            ExportRequest::Png { name } => self.png_wanted.push(name),
        }
    }

    /// Called by a plot after drawing: if a PNG of it was asked for, request a screenshot and
    /// crop it to `rect` when it arrives.
    pub fn capture_if_requested(&mut self, ctx: &egui::Context, name: &str, rect: Rect) {
        let Some(i) = self.png_wanted.iter().position(|n| n == name) else {
            return;
        };
        self.png_wanted.remove(i);
        let path = self.file_for(name, "png");
        let tx = self.done_tx.clone();
        let ppp = ctx.pixels_per_point();
        let waker = ctx.clone();
        ctx.request_screenshot(move |image: Arc<ColorImage>| {
            let cropped = image.region(&rect, Some(ppp));
            let result = spawn_named("export", move || write_png(&path, &cropped).map(|()| path));
            let _ = tx.send(result);
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

    fn file_for(&self, name: &str, ext: &str) -> PathBuf {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{safe}-{stamp}.{ext}"))
    }

    fn spawn_write(
        &self,
        path: PathBuf,
        write: impl FnOnce(&Path) -> Result<(), String> + Send + 'static,
    ) {
        let tx = self.done_tx.clone();
        let dir = self.dir.clone();
        let spawned = std::thread::Builder::new()
            .name("export".into())
            .spawn(move || {
                let r = std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))
                    .and_then(|()| write(&path))
                    .map(|()| path);
                let _ = tx.send(r);
            });
        if let Err(e) = spawned {
            let _ = self
                .done_tx
                .send(Err(format!("cannot start a thread: {e}")));
        }
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
        let mut e = Export::new(dir.clone());
        e.request(ExportRequest::Csv {
            name: "loss plot".into(),
            text: "a,b\n".into(),
        });
        let t0 = std::time::Instant::now();
        while e.written.is_empty() && t0.elapsed().as_secs() < 10 {
            std::thread::sleep(std::time::Duration::from_millis(5));
            e.poll();
        }
        let p = e.written.last().expect("written").clone();
        assert!(
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("loss_plot-"))
        );
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "a,b\n");
        let _ = std::fs::remove_dir_all(dir);
    }
}
