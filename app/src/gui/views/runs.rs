//! The runs table: every run in the database, virtualised (only the visible rows are laid
//! out), with chosen columns (built-in, any config key, any metric's last / best / min), sort by
//! any column, the filter language of [`crate::gui::data::filter`], NAS proxies and study cells folded under
//! their search / study, shift-click range ticking, and run management (rename, tags, notes,
//! archive, delete with confirmation). Click a name to make it the current run (Monitor,
//! Weights, Hardware); tick runs to compare them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use egui_extras::{Column as TableColumn, TableBuilder};
use shiftadd_core::run::Command;
use shiftadd_core::spec::config::HwModel;
use shiftadd_core::store::manage::RunEdit;
use shiftadd_core::store::{RunId, Status};

use crate::chart::format::format_secs;
use crate::gui::ctx::{Persisted, View};
use crate::gui::data::backend::{Query, RunRow};
use crate::gui::data::cache::DataCache;
use crate::gui::data::filter::{self, Filter};
use crate::gui::settings::{Agg, Col, RunsSettings, SortBy};
use crate::gui::widgets::markdown;

/// What a cell shows, and the number it sorts by (text sorts where there is none).
pub struct Cell {
    pub text: String,
    pub num: Option<f64>,
}

fn pct(v: Option<f64>) -> Cell {
    Cell {
        text: v.map_or_else(|| "–".into(), |v| format!("{:.2}", v * 100.0)),
        num: v,
    }
}

/// A run's score: top-1, or for a segmentation run its mean IoU, marked so.
fn score(v: Option<f64>, segmentation: bool) -> Cell {
    let mut c = pct(v);
    if segmentation && v.is_some() {
        c.text.push_str(" mIoU");
    }
    c
}

fn text(s: &str) -> Cell {
    Cell {
        text: s.to_owned(),
        num: None,
    }
}

/// The cell of `row` in column `col` (energy under cost model `hw`).
pub fn cell(row: &RunRow, col: &Col, hw: HwModel) -> Cell {
    let s = &row.summary;
    match col {
        Col::Status => text(s.status.as_str()),
        Col::Tags => text(&s.tags),
        Col::Data => text(&s.dataset),
        Col::Model => text(&s.model),
        Col::Op => text(&s.operator),
        Col::Hybrid => text(&row.hybrid),
        Col::Seed => Cell {
            text: s.seed.to_string(),
            num: Some(s.seed as f64),
        },
        Col::ValBest => score(s.best_val_top1, s.segmentation),
        Col::ValLast => score(s.last_val_top1, s.segmentation),
        Col::Test => score(s.test_top1, s.segmentation),
        Col::Energy => {
            let e = s.energy_under(hw.as_str());
            Cell {
                text: e.map_or_else(|| "–".into(), |e| format!("{e:.3}")),
                num: e,
            }
        }
        Col::Duration => {
            let d = s.duration_secs();
            Cell {
                text: d.map_or_else(|| "–".into(), format_secs),
                num: d,
            }
        }
        Col::Config(k) => {
            let v = row.config.get(k).map(|v| v.trim_matches('"').to_owned());
            Cell {
                num: v.as_deref().and_then(|v| v.parse().ok()),
                text: v.unwrap_or_else(|| "–".into()),
            }
        }
        Col::Metric(k, agg) => {
            let v = row.metrics.get(k).map(|m| match agg {
                Agg::Last => m.last,
                Agg::Best => m.max,
                Agg::Min => m.min,
            });
            if crate::chart::format::is_accuracy(k) {
                pct(v)
            } else {
                Cell {
                    text: v.map_or_else(|| "–".into(), |v| format!("{v:.4}")),
                    num: v,
                }
            }
        }
    }
}

/// What a folded group's row shows in column `col`, from its runs as listed: how many runs are
/// in each status; the value they share, or their distinct values when there are a few; the
/// range of a number (and how many runs have one). A header does not average across a study's
/// variants.
pub fn group_cell(members: &[&RunRow], col: &Col, hw: HwModel) -> String {
    if members.is_empty() {
        return String::new();
    }
    if *col == Col::Status {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for r in members {
            let s = r.summary.status.as_str();
            match counts.iter_mut().find(|(k, _)| *k == s) {
                Some((_, n)) => *n += 1,
                None => counts.push((s, 1)),
            }
        }
        counts.sort_by_key(|&(k, n)| (std::cmp::Reverse(n), k));
        return counts
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(" · ");
    }
    let cells: Vec<Cell> = members.iter().map(|r| cell(r, col, hw)).collect();
    let nums: Vec<f64> = cells.iter().filter_map(|c| c.num).collect();
    if !nums.is_empty() && !matches!(col, Col::Seed) {
        let (lo, hi) = nums
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(*v), b.max(*v))
            });
        let text_of = |v: f64| {
            cells
                .iter()
                .find(|c| c.num == Some(v))
                .map(|c| c.text.clone())
                .unwrap_or_default()
        };
        let range = if lo == hi {
            text_of(lo)
        } else {
            format!("{} – {}", text_of(lo), text_of(hi))
        };
        return if nums.len() == cells.len() {
            range
        } else {
            format!("{range} ({} of {})", nums.len(), cells.len())
        };
    }
    let mut distinct: Vec<&str> = Vec::new();
    for c in &cells {
        if !distinct.contains(&c.text.as_str()) {
            distinct.push(&c.text);
        }
    }
    if matches!(col, Col::Seed) {
        distinct.sort_by_key(|t| t.parse::<i64>().unwrap_or(i64::MAX));
    }
    if distinct.len() <= 3 {
        distinct.join(", ")
    } else {
        format!("{} values", distinct.len())
    }
}

/// The runs that pass the filter (and the archived toggle), in the chosen order.
pub fn sorted<'a>(
    rows: &'a [RunRow],
    settings: &RunsSettings,
    hw: HwModel,
) -> Result<Vec<&'a RunRow>, String> {
    let f = Filter::parse(&settings.filter)?;
    let mut v: Vec<&RunRow> = rows
        .iter()
        .filter(|r| settings.show_archived || !r.summary.archived || filter_names_archived(&f))
        .filter(|r| f.matches(r))
        .collect();
    let key = |r: &RunRow| -> (Option<f64>, String) {
        match &settings.sort {
            SortBy::Id => (Some(r.summary.id as f64), String::new()),
            SortBy::Name => (None, r.summary.name.to_lowercase()),
            SortBy::Col(c) => {
                let c = cell(r, c, hw);
                (c.num, c.text)
            }
        }
    };
    let mut keyed: Vec<((Option<f64>, String), &RunRow)> =
        v.drain(..).map(|r| (key(r), r)).collect();
    keyed.sort_by(|(a, ra), (b, rb)| {
        let num = |x: Option<f64>| x.unwrap_or(f64::NEG_INFINITY);
        num(a.0)
            .total_cmp(&num(b.0))
            .then_with(|| a.1.cmp(&b.1))
            .then(ra.summary.id.cmp(&rb.summary.id))
    });
    let mut v: Vec<&RunRow> = keyed.into_iter().map(|(_, r)| r).collect();
    if settings.descending {
        v.reverse();
    }
    Ok(v)
}

/// `is:archived` asks for archived runs even while they are hidden.
fn filter_names_archived(f: &Filter) -> bool {
    f.terms.iter().any(|(neg, t)| {
        !neg && matches!(t, filter::Term::Field { key, value } if key == "is" && value == "archived")
    })
}

/// Where a folded run belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    /// The proxies of the NAS search whose run has this id.
    Search(RunId),
    /// The cells of a study.
    Study(i64),
}

impl Group {
    pub fn of(row: &RunRow) -> Option<Self> {
        let tags: Vec<&str> = row.summary.tag_list().collect();
        let numbered = |prefix: &str| {
            tags.iter()
                .find_map(|t| t.strip_prefix(prefix)?.parse::<i64>().ok())
        };
        if tags.contains(&"nas-proxy") {
            return numbered("nas").map(Self::Search);
        }
        if tags.contains(&"study") {
            return numbered("study").map(Self::Study);
        }
        None
    }
}

/// One line of the table as shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// Index into the rows; depth 1 inside an open group; `members`: runs folded under it.
    Run {
        index: usize,
        depth: u8,
        members: usize,
    },
    /// A group whose own run is not listed (a study, a search filtered out).
    Header { group: Group, members: usize },
}

/// The lines of `rows` (already filtered and sorted), folding groups not in `open`.
pub fn lines(rows: &[&RunRow], fold: bool, open: &HashSet<Group>) -> Vec<Line> {
    if !fold {
        return (0..rows.len())
            .map(|index| Line::Run {
                index,
                depth: 0,
                members: 0,
            })
            .collect();
    }
    let mut members: HashMap<Group, Vec<usize>> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        if let Some(g) = Group::of(r) {
            members.entry(g).or_default().push(i);
        }
    }
    let listed: HashSet<RunId> = rows
        .iter()
        .filter(|r| Group::of(r).is_none())
        .map(|r| r.summary.id)
        .collect();
    let mut out = Vec::new();
    let mut seen: HashSet<Group> = HashSet::new();
    let push_members = |out: &mut Vec<Line>, g: Group| {
        if open.contains(&g) {
            for &index in &members[&g] {
                out.push(Line::Run {
                    index,
                    depth: 1,
                    members: 0,
                });
            }
        }
    };
    for (i, r) in rows.iter().enumerate() {
        match Group::of(r) {
            Some(g) => {
                let anchored = matches!(g, Group::Search(s) if listed.contains(&s));
                if !anchored && seen.insert(g) {
                    out.push(Line::Header {
                        group: g,
                        members: members[&g].len(),
                    });
                    push_members(&mut out, g);
                }
            }
            None => {
                let g = Group::Search(r.summary.id);
                let n = members.get(&g).map_or(0, Vec::len);
                out.push(Line::Run {
                    index: i,
                    depth: 0,
                    members: n,
                });
                if n > 0 {
                    push_members(&mut out, g);
                }
            }
        }
    }
    out
}

/// The cells of every group header among `lines`, in `columns`' order.
fn group_cells(
    rows: &[&RunRow],
    lines: &[Line],
    columns: &[Col],
    hw: HwModel,
) -> HashMap<Group, Vec<String>> {
    let headed: HashSet<Group> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Header { group, .. } => Some(*group),
            Line::Run { .. } => None,
        })
        .collect();
    let mut members: HashMap<Group, Vec<&RunRow>> = HashMap::new();
    for r in rows {
        if let Some(g) = Group::of(r).filter(|g| headed.contains(g)) {
            members.entry(g).or_default().push(r);
        }
    }
    members
        .into_iter()
        .map(|(g, m)| (g, columns.iter().map(|c| group_cell(&m, c, hw)).collect()))
        .collect()
}

/// A dialog over the table.
#[derive(Debug, Clone, PartialEq)]
enum Dialog {
    Rename(RunId, String),
    Tags(RunId, String),
    Notes(RunId, String),
    Delete(Vec<RunId>),
}

/// What the table worked out for the current data and settings (recomputed only when either
/// changes: a frame over 5,000 runs must not filter and sort them again).
struct Layout {
    key: (u64, RunsSettings, Vec<Group>, HwModel),
    /// Row ids in display order, and the lines.
    ids: Vec<RunId>,
    lines: Vec<Line>,
    /// Each folded group's row: its cell in each chosen column ([`group_cell`]).
    groups: HashMap<Group, Vec<String>>,
    error: Option<String>,
    /// [`Filter::hints`] of the filter.
    hints: Vec<String>,
}

/// The runs panel's state of this session.
#[derive(Default)]
pub struct RunsView {
    /// The run a shift-click ticks from.
    anchor: Option<RunId>,
    open: HashSet<Group>,
    dialog: Option<Dialog>,
    layout: Option<Layout>,
    add_column: String,
    /// An archive / unarchive chosen in a context menu, sent after the frame.
    pending_archive: Option<(RunId, bool)>,
    /// Runs to delete once the queued ones among them are off the queue, and since when.
    pending_delete: Option<(Vec<RunId>, Instant)>,
    /// Why a delete did not happen (shown above the table until the next one).
    delete_note: Option<String>,
}

impl RunsView {
    fn layout(&mut self, data: &DataCache, settings: &RunsSettings, hw: HwModel) -> &Layout {
        let mut open: Vec<Group> = self.open.iter().copied().collect();
        open.sort();
        let key = (data.runs_version, settings.clone(), open, hw);
        if self.layout.as_ref().is_none_or(|l| l.key != key) {
            let (ids, lines, groups, error) = match sorted(&data.runs, settings, hw) {
                Ok(rows) => {
                    let lines = lines(&rows, settings.fold, &self.open);
                    let groups = group_cells(&rows, &lines, &settings.columns, hw);
                    (
                        rows.iter().map(|r| r.summary.id).collect(),
                        lines,
                        groups,
                        None,
                    )
                }
                Err(e) => (Vec::new(), Vec::new(), HashMap::new(), Some(e)),
            };
            let hints = Filter::parse(&settings.filter)
                .map(|f| f.hints())
                .unwrap_or_default();
            self.layout = Some(Layout {
                key,
                ids,
                lines,
                groups,
                error,
                hints,
            });
        }
        self.layout.as_ref().expect("set above")
    }

    /// The runs panel. Changes to runs go out as `queries` (the data thread applies them).
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        data: &mut DataCache,
        persisted: &mut Persisted,
        commands: &mut Vec<Command>,
        queries: &mut Vec<Query>,
    ) {
        let hw = persisted.hw_model;
        data.set_runs_metrics(persisted.runs.metric_keys());
        self.toolbar(ui, data, persisted, queries);
        if !data.runs_loaded {
            ui.spinner();
            return;
        }
        if data.runs.is_empty() {
            ui.label("No runs yet: pick a preset in Launch and press Launch.");
            return;
        }
        let settings = persisted.runs.clone();
        let layout = self.layout(data, &settings, hw);
        if let Some(e) = &layout.error {
            let line = format!("filter: {e}");
            markdown::label(ui, &line, Some(ui.visuals().error_fg_color));
            return;
        }
        let (ids, lines, groups) = (
            layout.ids.clone(),
            layout.lines.clone(),
            layout.groups.clone(),
        );
        // What the filter probably did not mean (worked out with the layout, not every frame).
        for hint in &layout.hints {
            ui.colored_label(ui.visuals().warn_fg_color, hint);
        }
        if let Some(note) = &self.delete_note {
            ui.colored_label(ui.visuals().warn_fg_color, note);
        }
        match_summary(ui, &ids, &lines, data.runs.len());
        let clicks = self.table(ui, (&ids, &lines, &groups), data, persisted, commands);
        if let Some(by) = clicks.sort {
            sort_by(&mut persisted.runs, by);
        }
        if let Some(g) = clicks.toggle
            && !self.open.remove(&g)
        {
            self.open.insert(g);
        }
        if let Some((id, on, shift)) = clicks.tick {
            self.tick(id, on, shift, (&ids, &lines), &mut persisted.compare);
        }
        self.dialog_ui(ui.ctx(), data, commands, queries);
    }

    /// The table of `lines` (headers of folded groups, and runs by their index in `ids`), only
    /// the visible rows laid out; what was clicked comes back to be applied after. Id and name
    /// stay in place while the chosen columns scroll sideways: two tables side by side, rows of
    /// one height, scrolled together (whichever the pointer moved sets both, from the next frame).
    fn table(
        &mut self,
        ui: &mut egui::Ui,
        (ids, lines, groups): (&[RunId], &[Line], &HashMap<Group, Vec<String>>),
        data: &DataCache,
        persisted: &mut Persisted,
        commands: &mut Vec<Command>,
    ) -> TableClicks {
        let mut clicks = TableClicks::default();
        let y_id = egui::Id::unique("runs-table-y");
        let y = ui.data(|d| d.get_temp::<f32>(y_id)).unwrap_or(0.0);
        let mut offsets = [y, y];
        let rows = TableRows {
            ids,
            lines,
            groups,
            data,
            y,
        };
        let chosen = !persisted.runs.columns.is_empty();
        ui.horizontal_top(|ui| {
            // Each part in a column of its own: a table lays its header and body out in turn.
            offsets[0] = ui
                .vertical(|ui| {
                    let frozen = Part::Frozen { alone: !chosen };
                    self.part(ui, frozen, &rows, persisted, commands, &mut clicks)
                })
                .inner;
            if chosen {
                // The bar is always shown, so that columns past the edge are seen to be there.
                egui::ScrollArea::horizontal()
                    .id_salt("runs-table-x")
                    .scroll_bar_visibility(egui::scroll_area::ScrollBarVisibility::AlwaysVisible)
                    .show(ui, |ui| {
                        offsets[1] = ui
                            .vertical(|ui| {
                                self.part(ui, Part::Chosen, &rows, persisted, commands, &mut clicks)
                            })
                            .inner;
                    });
            }
        });
        if let Some(moved) = offsets.into_iter().find(|o| (o - y).abs() > 0.5) {
            ui.data_mut(|d| d.insert_temp(y_id, moved));
            ui.ctx().request_repaint();
        }
        clicks
    }

    /// One part of the runs table (see [`Self::table`]); its vertical scroll offset after this
    /// frame's input.
    fn part(
        &mut self,
        ui: &mut egui::Ui,
        part: Part,
        rows: &TableRows<'_>,
        persisted: &mut Persisted,
        commands: &mut Vec<Command>,
        clicks: &mut TableClicks,
    ) -> f32 {
        let settings = persisted.runs.clone();
        let hw = persisted.hw_model;
        let data = rows.data;
        let index: HashMap<RunId, usize> = data
            .runs
            .iter()
            .enumerate()
            .map(|(i, r)| (r.summary.id, i))
            .collect();
        let row_h = 20.0;
        let mut table = TableBuilder::new(ui)
            .id_salt(part)
            .striped(true)
            .resizable(true)
            .vertical_scroll_offset(rows.y)
            .animate_scrolling(false);
        let titles: Vec<(SortBy, String)> = match part {
            Part::Frozen { alone } => {
                table = table
                    .auto_shrink([!alone, false])
                    .column(TableColumn::initial(72.0).at_least(56.0))
                    .column(TableColumn::initial(170.0).at_least(60.0).clip(true));
                if !alone {
                    // The chosen columns' bar scrolls both.
                    table = table.scroll_bar_visibility(
                        egui::scroll_area::ScrollBarVisibility::AlwaysHidden,
                    );
                }
                vec![
                    (SortBy::Id, "Id".to_owned()),
                    (SortBy::Name, "Name".to_owned()),
                ]
            }
            Part::Chosen => {
                table = table.auto_shrink([false, false]);
                for c in &settings.columns {
                    table = table.column(
                        TableColumn::initial(column_width(c))
                            .at_least(30.0)
                            .clip(true),
                    );
                }
                settings
                    .columns
                    .iter()
                    .map(|c| (SortBy::Col(c.clone()), c.title(hw)))
                    .collect()
            }
        };
        let shown = table
            .header(row_h, |mut h| {
                for (by, title) in titles {
                    h.col(|ui| {
                        if header(ui, &settings, &by, &title) {
                            clicks.sort = Some(by);
                        }
                    });
                }
            })
            .body(|body| {
                body.rows(row_h, rows.lines.len(), |mut row| {
                    match rows.lines[row.index()] {
                        Line::Header { group, members } => {
                            let open = self.open.contains(&group);
                            let title = group_title(group, members, &data.study_names);
                            let cells = rows.groups.get(&group).map_or(&[][..], Vec::as_slice);
                            group_row(&mut row, part, (group, title), open, cells, clicks);
                        }
                        Line::Run {
                            index: i,
                            depth,
                            members,
                        } => {
                            let Some(r) = rows
                                .ids
                                .get(i)
                                .and_then(|id| index.get(id))
                                .map(|&j| &data.runs[j])
                            else {
                                return;
                            };
                            let at = RowAt { depth, members, hw };
                            self.run_row(&mut row, part, r, at, data, persisted, commands, clicks);
                        }
                    }
                });
            });
        shown.state.clamped_offset().y
    }

    /// One run's row: its compare tick, its name (with its group's fold button when it heads
    /// one), and the chosen columns.
    #[allow(clippy::too_many_arguments)]
    fn run_row(
        &mut self,
        row: &mut egui_extras::TableRow<'_, '_>,
        part: Part,
        r: &RunRow,
        at: RowAt,
        data: &DataCache,
        persisted: &mut Persisted,
        commands: &mut Vec<Command>,
        clicks: &mut TableClicks,
    ) {
        let id = r.summary.id;
        if part == Part::Chosen {
            for c in &persisted.runs.columns {
                row.col(|ui| {
                    let v = cell(r, c, at.hw);
                    if *c != Col::Status {
                        ui.label(v.text);
                    } else if let Some(why) = r.not_learning() {
                        ui.colored_label(ui.visuals().warn_fg_color, format!("{} !", v.text))
                            .on_hover_text(why);
                    } else {
                        let resp = ui.colored_label(status_color(ui, r.summary.status), v.text);
                        if let Some(reason) = &r.summary.reason {
                            markdown::hover(resp, reason);
                        }
                    }
                });
            }
            return;
        }
        row.col(|ui| {
            let mut ticked = persisted.compare.contains(&id);
            let resp = ui
                .checkbox(&mut ticked, format!("#{id}"))
                .on_hover_text("compare this run (shift-click: tick a range)");
            if resp.changed() {
                clicks.tick = Some((id, ticked, ui.input(|i| i.modifiers.shift)));
            }
        });
        row.col(|ui| {
            ui.horizontal(|ui| {
                if at.depth > 0 {
                    ui.add_space(14.0);
                }
                if at.members > 0 {
                    let g = Group::Search(id);
                    let open = self.open.contains(&g);
                    if ui
                        .small_button(if open { "-" } else { "+" })
                        .on_hover_text(format!("{} proxy runs", at.members))
                        .clicked()
                    {
                        clicks.toggle = Some(g);
                    }
                }
                self.name_cell(ui, r, data, persisted, commands);
            });
        });
    }

    /// Tick or untick run `id` for Compare; with shift, every run shown between the last one
    /// ticked and this one.
    fn tick(
        &mut self,
        id: RunId,
        on: bool,
        shift: bool,
        (ids, lines): (&[RunId], &[Line]),
        compare: &mut Vec<RunId>,
    ) {
        let range = match (shift, self.anchor) {
            (true, Some(a)) => {
                // Runs between the anchor and this one, as the lines show them.
                let visible: Vec<RunId> = lines
                    .iter()
                    .filter_map(|l| match l {
                        Line::Run { index, .. } => ids.get(*index).copied(),
                        Line::Header { .. } => None,
                    })
                    .collect();
                match (
                    visible.iter().position(|&r| r == a),
                    visible.iter().position(|&r| r == id),
                ) {
                    (Some(x), Some(y)) => visible[x.min(y)..=x.max(y)].to_vec(),
                    _ => vec![id],
                }
            }
            _ => vec![id],
        };
        for r in range {
            let has = compare.contains(&r);
            if on && !has {
                compare.push(r);
            } else if !on && has {
                compare.retain(|x| *x != r);
            }
        }
        self.anchor = Some(id);
    }

    fn toolbar(
        &mut self,
        ui: &mut egui::Ui,
        data: &DataCache,
        persisted: &mut Persisted,
        queries: &mut Vec<Query>,
    ) {
        let Persisted {
            view,
            compare,
            runs: settings,
            hw_model,
            ..
        } = persisted;
        ui.horizontal(|ui| {
            ui.heading("Runs");
            ui.add(
                egui::TextEdit::singleline(&mut settings.filter)
                    .hint_text("filter: op:add -tag:nas-proxy val/top1>60")
                    .desired_width(250.0),
            )
            .accessible_name("filter runs")
            .on_hover_text(
                "terms that must all hold: words (name, tags, status, model, …, notes), key:value \
                 (tag:, status:, op:, model:, is:archived, is:not-learning, any config key such as ops.kind:add), \
                 comparisons (val/top1>60 in percent as shown, train.lr<0.1, epochs>=10, energy<0.1, \
                 duration>600), and -term to negate any of them",
            );
            // Clicks inside keep it open: a click into its text field closed it before a key
            // was typed, and ticking several columns took as many trips.
            let stay_open = egui::containers::menu::MenuConfig::new()
                .close_behavior(egui::PopupCloseBehavior::CloseOnClickOutside);
            egui::containers::menu::MenuButton::new("Columns")
                .config(stay_open)
                .ui(ui, |ui| {
                    columns_menu(ui, data, settings, *hw_model, &mut self.add_column);
                });
            ui.toggle_value(&mut settings.fold, "fold").on_hover_text(
                "fold NAS proxies under their search and study cells under their study",
            );
            ui.toggle_value(&mut settings.show_archived, "archived")
                .on_hover_text("show archived runs");
        });
        // Always there (disabled with nothing ticked), so ticking a run never moves the table.
        ui.horizontal(|ui| {
            ui.add_enabled_ui(!compare.is_empty(), |ui| {
                let label = if compare.is_empty() {
                    "Compare (tick runs)".to_owned()
                } else {
                    format!("Compare {}", compare.len())
                };
                if ui.button(label).clicked() {
                    *view = View::Compare;
                }
                if ui
                    .small_button("clear")
                    .on_hover_text("untick all")
                    .clicked()
                {
                    compare.clear();
                }
                ui.separator();
                ui.weak("ticked:");
                for (what, to) in [("archive", true), ("unarchive", false)] {
                    if ui.small_button(what).clicked() {
                        for &run in compare.iter() {
                            queries.push(Query::Edit {
                                run,
                                edit: RunEdit::Archive(to),
                            });
                        }
                    }
                }
                if ui.small_button("delete…").clicked() {
                    self.dialog = Some(Dialog::Delete(compare.clone()));
                }
            });
        });
    }

    fn name_cell(
        &mut self,
        ui: &mut egui::Ui,
        r: &RunRow,
        data: &DataCache,
        persisted: &mut Persisted,
        commands: &mut Vec<Command>,
    ) {
        let s = &r.summary;
        let selected = persisted.current == Some(s.id);
        let label = if s.archived {
            egui::RichText::new(&s.name).weak()
        } else {
            egui::RichText::new(&s.name)
        };
        // The column clips a long name: the whole of it, and the notes as Markdown, on hover.
        let name = ui.selectable_label(selected, label).on_hover_ui(|ui| {
            ui.strong(&s.name);
            if !s.notes.trim().is_empty() {
                ui.separator();
                markdown::show(ui, &s.notes);
            }
        });
        if name.clicked() {
            persisted.current = Some(s.id);
            if matches!(persisted.view, View::Launch | View::Compare) {
                persisted.view = View::Monitor;
            }
        }
        name.context_menu(|ui| {
            if data.live.contains_key(&s.id) || s.status == Status::Queued {
                if ui.button("Stop").clicked() {
                    commands.push(Command::Stop(s.id));
                    ui.close();
                }
            } else if s.status != Status::Finished && ui.button("Resume").clicked() {
                commands.push(Command::Resume {
                    run: s.id,
                    request: 0,
                });
                ui.close();
            }
            ui.separator();
            if ui.button("Rename…").clicked() {
                self.dialog = Some(Dialog::Rename(s.id, s.name.clone()));
                ui.close();
            }
            if ui.button("Tags…").clicked() {
                self.dialog = Some(Dialog::Tags(s.id, s.tags.clone()));
                ui.close();
            }
            if ui.button("Notes…").clicked() {
                self.dialog = Some(Dialog::Notes(s.id, s.notes.clone()));
                ui.close();
            }
            let (what, to) = if s.archived {
                ("Unarchive", false)
            } else {
                ("Archive", true)
            };
            if ui.button(what).clicked() {
                self.dialog = None;
                self.pending_archive = Some((s.id, to));
                ui.close();
            }
            if ui.button("Delete…").clicked() {
                self.dialog = Some(Dialog::Delete(vec![s.id]));
                ui.close();
            }
        });
    }

    /// Delete the runs of a pending delete once none is queued any more; a run this app's manager
    /// did not queue stays queued (another process holds it), and the delete is dropped, said.
    fn delete_when_dequeued(&mut self, data: &DataCache, queries: &mut Vec<Query>) {
        let Some((runs, since)) = &self.pending_delete else {
            return;
        };
        let still: Vec<RunId> = runs
            .iter()
            .copied()
            .filter(|r| data.is_active(*r))
            .collect();
        if still.is_empty() {
            queries.push(Query::Delete(runs.clone()));
            self.pending_delete = None;
        } else if since.elapsed() > DEQUEUE_WAIT {
            self.delete_note = Some(format!(
                "not deleted: run(s) {still:?} are still queued, by another process (a CLI train \
                 or study): stop them there, then delete"
            ));
            self.pending_delete = None;
        }
    }

    fn dialog_ui(
        &mut self,
        ctx: &egui::Context,
        data: &DataCache,
        commands: &mut Vec<Command>,
        queries: &mut Vec<Query>,
    ) {
        if let Some((run, to)) = self.pending_archive.take() {
            queries.push(Query::Edit {
                run,
                edit: RunEdit::Archive(to),
            });
        }
        self.delete_when_dequeued(data, queries);
        let Some(dialog) = &mut self.dialog else {
            return;
        };
        let mut close = false;
        egui::Modal::new(egui::Id::unique("runs-dialog")).show(ctx, |ui| {
            match dialog {
                Dialog::Rename(run, name) => {
                    ui.heading(format!("Rename run #{run}"));
                    ui.add(egui::TextEdit::singleline(name).desired_width(320.0))
                        .accessible_name("new name");
                    if edit_buttons(ui, !name.trim().is_empty()) {
                        queries.push(Query::Edit {
                            run: *run,
                            edit: RunEdit::Rename(name.trim().to_owned()),
                        });
                        close = true;
                    }
                }
                Dialog::Tags(run, tags) => {
                    ui.heading(format!("Tags of run #{run}"));
                    ui.label("comma-separated");
                    ui.add(egui::TextEdit::singleline(tags).desired_width(320.0))
                        .accessible_name("tags");
                    if edit_buttons(ui, true) {
                        queries.push(Query::Edit {
                            run: *run,
                            edit: RunEdit::SetTags(tags.clone()),
                        });
                        close = true;
                    }
                }
                Dialog::Notes(run, notes) => {
                    ui.heading(format!("Notes of run #{run}"));
                    ui.label("Markdown: # headings, - lists, **bold**, `code`; shown in Monitor");
                    ui.add(
                        egui::TextEdit::multiline(notes)
                            .desired_width(420.0)
                            .desired_rows(8),
                    )
                    .accessible_name("notes");
                    if edit_buttons(ui, true) {
                        queries.push(Query::Edit {
                            run: *run,
                            edit: RunEdit::SetNotes(notes.clone()),
                        });
                        close = true;
                    }
                }
                Dialog::Delete(runs) => match delete_dialog(ui, runs, data) {
                    DeleteChoice::Undecided => {}
                    DeleteChoice::Cancel => close = true,
                    DeleteChoice::Delete => {
                        queries.push(Query::Delete(runs.clone()));
                        self.delete_note = None;
                        close = true;
                    }
                    DeleteChoice::DequeueThenDelete(queued) => {
                        self.delete_note = None;
                        commands.extend(queued.iter().map(|r| Command::Stop(*r)));
                        self.pending_delete = Some((runs.clone(), Instant::now()));
                        close = true;
                    }
                },
            }
            if ui.input(|i| i.key_pressed(egui::Key::Escape)) {
                close = true;
            }
        });
        if close {
            self.dialog = None;
        }
    }
}

/// Save / Cancel; whether Save was clicked (and allowed). Cancel closes through Escape's path.
fn edit_buttons(ui: &mut egui::Ui, can_save: bool) -> bool {
    let mut save = false;
    ui.horizontal(|ui| {
        save = ui
            .add_enabled(can_save, egui::Button::new("Save"))
            .clicked();
        if ui.button("Cancel").clicked() {
            ui.ctx().input_mut(|i| {
                i.events.push(egui::Event::Key {
                    key: egui::Key::Escape,
                    physical_key: None,
                    pressed: true,
                    repeat: false,
                    modifiers: egui::Modifiers::NONE,
                });
            });
        }
    });
    save
}

/// The column chooser: built-in columns as checkboxes, then any config key or metric by name.
fn columns_menu(
    ui: &mut egui::Ui,
    data: &DataCache,
    settings: &mut RunsSettings,
    hw: HwModel,
    query: &mut String,
) {
    ui.set_min_width(260.0);
    for c in Col::BUILT_IN {
        let mut on = settings.columns.contains(&c);
        if ui.checkbox(&mut on, c.title(hw)).changed() {
            if on {
                settings.columns.push(c);
            } else {
                settings.columns.retain(|x| *x != c);
            }
        }
    }
    ui.separator();
    let custom: Vec<Col> = settings
        .columns
        .iter()
        .filter(|c| matches!(c, Col::Config(_) | Col::Metric(..)))
        .cloned()
        .collect();
    for c in custom {
        ui.horizontal(|ui| {
            ui.label(c.title(hw));
            if ui
                .small_button("x")
                .on_hover_text("remove this column")
                .clicked()
            {
                settings.columns.retain(|x| *x != c);
            }
        });
    }
    ui.add(
        egui::TextEdit::singleline(query)
            .hint_text("config key or metric…")
            .desired_width(240.0),
    )
    .accessible_name("add column");
    let q = query.to_lowercase();
    if q.is_empty() {
        return;
    }
    let config_keys: BTreeSet<&String> = data
        .runs
        .iter()
        .take(50)
        .flat_map(|r| r.config.keys())
        .collect();
    let mut offers: Vec<Col> = config_keys
        .into_iter()
        .filter(|k| k.to_lowercase().contains(&q))
        .map(|k| Col::Config(k.clone()))
        .collect();
    for k in data
        .metric_keys
        .iter()
        .filter(|k| k.to_lowercase().contains(&q))
    {
        offers.extend(Agg::ALL.map(|a| Col::Metric(k.clone(), a)));
    }
    egui::ScrollArea::vertical()
        .max_height(240.0)
        .show(ui, |ui| {
            offers.retain(|c| !settings.columns.contains(c));
            for c in offers.into_iter().take(60) {
                if ui.selectable_label(false, c.title(hw)).clicked() {
                    settings.columns.push(c);
                    query.clear();
                }
            }
        });
}

/// How long a delete waits for its queued runs to leave this app's queue.
const DEQUEUE_WAIT: Duration = Duration::from_secs(10);

/// What the Delete dialog decided this frame.
enum DeleteChoice {
    Undecided,
    Cancel,
    Delete,
    /// Some runs wait in a queue: take them off it (Stop), then delete them all.
    DequeueThenDelete(Vec<RunId>),
}

/// The Delete dialog for `runs`: a training (or paused) run must be stopped first; a queued one
/// is taken off the queue and then deleted with the rest.
fn delete_dialog(ui: &mut egui::Ui, runs: &[RunId], data: &DataCache) -> DeleteChoice {
    let queued = |r: RunId| {
        !data.live.contains_key(&r)
            && data
                .row(r)
                .is_some_and(|x| x.summary.status == Status::Queued)
    };
    let (waiting, training): (Vec<RunId>, Vec<RunId>) = runs
        .iter()
        .copied()
        .filter(|r| data.is_active(*r))
        .partition(|r| queued(*r));
    let names: Vec<String> = runs
        .iter()
        .map(|r| {
            data.row(*r)
                .map_or_else(|| format!("#{r}"), |x| format!("#{r} `{}`", x.summary.name))
        })
        .collect();
    ui.heading(format!("Delete {} run(s)?", runs.len()));
    let what = format!(
        "{} — with every metric, log, histogram and checkpoint file recorded for them. This cannot be undone.",
        names.join(", ")
    );
    ui.horizontal_wrapped(|ui| markdown::label(ui, &what, None));
    let ids = |runs: &[RunId]| {
        let ids: Vec<String> = runs.iter().map(|r| format!("#{r}")).collect();
        ids.join(", ")
    };
    if !training.is_empty() {
        ui.colored_label(
            ui.visuals().error_fg_color,
            format!(
                "Stop run(s) {} first: a training run cannot be deleted.",
                ids(&training)
            ),
        );
    } else if !waiting.is_empty() {
        ui.label(format!(
            "Run(s) {} wait in the queue: they are taken off it, then deleted.",
            ids(&waiting)
        ));
    }
    let mut choice = DeleteChoice::Undecided;
    ui.horizontal(|ui| {
        if ui
            .add_enabled(training.is_empty(), egui::Button::new("Delete"))
            .clicked()
        {
            choice = if waiting.is_empty() {
                DeleteChoice::Delete
            } else {
                DeleteChoice::DequeueThenDelete(waiting.clone())
            };
        }
        if ui.button("Cancel").clicked() {
            choice = DeleteChoice::Cancel;
        }
    });
    choice
}

/// The two parts of the runs table: id and name, which stay in place, and the chosen columns,
/// which scroll sideways.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Part {
    /// `alone`: no column is chosen, so this part has the vertical scroll bar.
    Frozen {
        alone: bool,
    },
    Chosen,
}

/// What both parts of the runs table draw: the lines, the runs they index, and the vertical
/// scroll offset they share this frame.
struct TableRows<'a> {
    ids: &'a [RunId],
    lines: &'a [Line],
    groups: &'a HashMap<Group, Vec<String>>,
    data: &'a DataCache,
    y: f32,
}

/// What a click in the runs table asked for, applied once the table is drawn.
#[derive(Default)]
struct TableClicks {
    sort: Option<SortBy>,
    /// (run, ticked, shift held)
    tick: Option<(RunId, bool, bool)>,
    toggle: Option<Group>,
}

/// Where a run's row sits: indented under its group, heading a folded search of `members`.
#[derive(Clone, Copy)]
struct RowAt {
    depth: u8,
    members: usize,
    hw: HwModel,
}

/// "N of M runs match", and how many are folded away.
fn match_summary(ui: &mut egui::Ui, ids: &[RunId], lines: &[Line], total: usize) {
    let groups = lines
        .iter()
        .filter(|l| matches!(l, Line::Header { .. }))
        .count();
    let folded = ids.len()
        - lines
            .iter()
            .filter(|l| matches!(l, Line::Run { .. }))
            .count();
    ui.weak(format!(
        "{} of {total} runs match{}",
        ids.len(),
        match (folded, groups) {
            (0, _) => String::new(),
            (f, 0) => format!(" · {f} folded under their search (+ opens)"),
            (f, g) => format!(" · {f} folded in {g} group(s) (+ opens)"),
        }
    ));
}

/// A column's starting width, by what it holds.
fn column_width(c: &Col) -> f32 {
    match c {
        Col::Status => 74.0,
        Col::Tags | Col::Data | Col::Energy => 96.0,
        Col::Config(_) | Col::Metric(..) => 88.0,
        Col::Model | Col::Duration => 64.0,
        _ => 52.0,
    }
}

/// A folded group's header row: its fold button and what it holds.
fn group_row(
    row: &mut egui_extras::TableRow<'_, '_>,
    part: Part,
    (group, what): (Group, String),
    open: bool,
    cells: &[String],
    clicks: &mut TableClicks,
) {
    if part == Part::Chosen {
        for text in cells {
            row.col(|ui| {
                ui.label(egui::RichText::new(text).italics())
                    .on_hover_text(text);
            });
        }
        return;
    }
    row.col(|ui| {
        if ui.small_button(if open { "-" } else { "+" }).clicked() {
            clicks.toggle = Some(group);
        }
    });
    row.col(|ui| {
        if ui
            .selectable_label(false, egui::RichText::new(&what).italics())
            .on_hover_text(&what)
            .clicked()
        {
            clicks.toggle = Some(group);
        }
    });
}

/// What a fold row says: the search, or the study by its name, and how many runs it holds.
fn group_title(group: Group, members: usize, study_names: &BTreeMap<i64, String>) -> String {
    match group {
        Group::Search(s) => format!("NAS search #{s}: {members} proxies"),
        Group::Study(s) => match study_names.get(&s) {
            Some(name) => format!("study {s} {name}: {members} runs"),
            None => format!("study {s}: {members} runs"),
        },
    }
}

/// Sort by `by`; a second click on the same column turns the order round.
fn sort_by(s: &mut RunsSettings, by: SortBy) {
    if s.sort == by {
        s.descending = !s.descending;
    } else {
        // Numbers read best highest first; names and text A to Z.
        s.descending = matches!(&by, SortBy::Id)
            || matches!(&by, SortBy::Col(c) if !matches!(c, Col::Status | Col::Tags | Col::Data | Col::Model | Col::Op | Col::Hybrid));
        s.sort = by;
    }
}

/// A sortable column header; whether it was clicked.
fn header(ui: &mut egui::Ui, settings: &RunsSettings, by: &SortBy, title: &str) -> bool {
    let arrow = if settings.sort == *by {
        if settings.descending {
            " (desc)"
        } else {
            " (asc)"
        }
    } else {
        ""
    };
    ui.add(egui::Button::new(egui::RichText::new(format!("{title}{arrow}")).strong()).frame(false))
        .on_hover_text(format!("sort by {}", title.to_lowercase()))
        .clicked()
}

fn status_color(ui: &egui::Ui, status: Status) -> egui::Color32 {
    match status {
        Status::Running => egui::Color32::from_rgb(0x3c, 0xa0, 0x4c),
        Status::Paused | Status::Queued => egui::Color32::from_rgb(0xb0, 0xa0, 0x20),
        Status::Failed | Status::Damaged => ui.visuals().error_fg_color,
        Status::Interrupted | Status::Stopped => ui.visuals().warn_fg_color,
        Status::Finished => ui.visuals().text_color(),
        Status::Pruned => ui.visuals().weak_text_color(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gui::data::backend::tests::row;

    fn ids(rows: &[&RunRow]) -> Vec<RunId> {
        rows.iter().map(|r| r.summary.id).collect()
    }

    #[test]
    fn filter_and_sort_by_any_column() {
        let mut rows = vec![row(1, "a", "ablation"), row(2, "b", ""), row(3, "c", "")];
        rows[0].summary.best_val_top1 = Some(0.5);
        rows[2].summary.best_val_top1 = Some(0.7);
        rows[0].config_mut().insert("train.lr".into(), "0.8".into());
        rows[1]
            .config_mut()
            .insert("train.lr".into(), "0.025".into());
        rows[2].config_mut().insert("train.lr".into(), "0.1".into());
        let mut s = RunsSettings {
            sort: SortBy::Col(Col::ValBest),
            descending: true,
            ..RunsSettings::default()
        };
        let hw = HwModel::Shiftaddnas;
        assert_eq!(
            ids(&sorted(&rows, &s, hw).expect("ok")),
            [3, 1, 2],
            "missing last"
        );
        s.sort = SortBy::Col(Col::Config("train.lr".into()));
        s.descending = false;
        assert_eq!(
            ids(&sorted(&rows, &s, hw).expect("ok")),
            [2, 3, 1],
            "numerically"
        );
        s.filter = "ABLATION #1".into();
        assert_eq!(ids(&sorted(&rows, &s, hw).expect("ok")), [1]);
        s.filter = "x>>1".into();
        assert!(sorted(&rows, &s, hw).is_err());
        // Archived runs hide unless asked for.
        rows[1].summary.archived = true;
        s.filter.clear();
        assert_eq!(ids(&sorted(&rows, &s, hw).expect("ok")), [3, 1]);
        s.filter = "is:archived".into();
        assert_eq!(ids(&sorted(&rows, &s, hw).expect("ok")), [2]);
    }

    #[test]
    fn proxies_fold_under_their_search_and_cells_under_their_study() {
        let rows = [
            row(1, "search", "nas"),
            row(2, "proxy a", "nas-proxy,nas1"),
            row(3, "proxy b", "nas-proxy,nas1"),
            row(4, "cell", "study,study7"),
            row(5, "cell", "study,study7"),
            row(6, "lone", ""),
            row(7, "orphan proxy", "nas-proxy,nas99"),
        ];
        let refs: Vec<&RunRow> = rows.iter().collect();
        let closed = lines(&refs, true, &HashSet::new());
        assert_eq!(
            closed,
            [
                Line::Run {
                    index: 0,
                    depth: 0,
                    members: 2
                },
                Line::Header {
                    group: Group::Study(7),
                    members: 2
                },
                Line::Run {
                    index: 5,
                    depth: 0,
                    members: 0
                },
                Line::Header {
                    group: Group::Search(99),
                    members: 1
                },
            ]
        );
        let open: HashSet<Group> = [Group::Search(1), Group::Study(7)].into();
        let opened = lines(&refs, true, &open);
        assert_eq!(opened.len(), 8);
        assert_eq!(
            opened[1],
            Line::Run {
                index: 1,
                depth: 1,
                members: 0
            }
        );
        assert_eq!(
            opened[4],
            Line::Run {
                index: 3,
                depth: 1,
                members: 0
            }
        );
        assert_eq!(lines(&refs, false, &HashSet::new()).len(), 7);
    }

    /// A folded study's row fills the chosen columns: status counts, the value its runs share
    /// or their few distinct values, a number's range — never a mean across variants.
    #[test]
    fn a_folded_groups_row_summarises_its_runs_in_each_column() {
        let mut rows: Vec<RunRow> = (1..=5).map(|i| row(i, "cell", "study,study7")).collect();
        rows[4].summary.status = shiftadd_core::store::Status::Running;
        for (i, r) in rows.iter_mut().enumerate() {
            r.summary.seed = (4 - i as i64) % 3;
            r.summary.operator = ["add", "shift", "mult", "add", "shift"][i].into();
            r.summary.test_top1 = (i < 4).then_some(0.85 + 0.01 * i as f64);
        }
        rows[3].summary.model = "mbv2-tiny".into();
        let refs: Vec<&RunRow> = rows.iter().collect();
        let hw = HwModel::Shiftaddnas;
        let at = |c: Col| group_cell(&refs, &c, hw);
        assert_eq!(at(Col::Status), "4 finished · 1 running");
        assert_eq!(at(Col::Data), "synthetic", "the value they share");
        assert_eq!(at(Col::Model), "micro, mbv2-tiny");
        assert_eq!(at(Col::Op), "add, shift, mult");
        assert_eq!(at(Col::Seed), "0, 1, 2", "seeds in order");
        // One run has no test figure yet: the range says it covers four of the five.
        assert_eq!(at(Col::Test), "85.00 – 88.00 (4 of 5)");
        assert_eq!(group_cell(&refs[..4], &Col::Test, hw), "85.00 – 88.00");
        assert_eq!(group_cell(&refs[..1], &Col::Test, hw), "85.00");
        // The cells come with the layout, for the headers shown only.
        let lines = lines(&refs, true, &HashSet::new());
        let cells = group_cells(&refs, &lines, &[Col::Status, Col::Model], hw);
        assert_eq!(
            cells.get(&Group::Study(7)).map(Vec::as_slice),
            Some(
                &[
                    "4 finished · 1 running".to_owned(),
                    "micro, mbv2-tiny".to_owned()
                ][..]
            )
        );
    }

    /// A fold row names its study (it said "study 7" alone, and a researcher had to look the
    /// number up); a study whose name did not load keeps the number.
    #[test]
    fn fold_rows_name_their_study() {
        let names: BTreeMap<i64, String> = [(7, "aug-control".to_owned())].into();
        assert_eq!(
            group_title(Group::Study(7), 9, &names),
            "study 7 aug-control: 9 runs"
        );
        assert_eq!(group_title(Group::Study(8), 3, &names), "study 8: 3 runs");
        assert_eq!(
            group_title(Group::Search(2), 5, &names),
            "NAS search #2: 5 proxies"
        );
    }
}
