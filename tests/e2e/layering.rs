//! The layering of both crates as a test (ARCHITECTURE.md, "Invariants"), one checker with a
//! floor list per crate (and one for `app/src/gui`): every module imports only modules on its
//! floor or lower, and no folder's children import each other in a circle. For `core/src`:
//! `spec/` never touches tensors (`tch`, `model/`, `ops/`), `store/` imports nothing else from
//! the crate, and only the run manager starts training. For `app/src`: `chart/` (plot and chart
//! maths, no drawing) imports nothing from `gui/` or `cli/`, and no view imports another. It reads
//! the sources (shipped code: inline test modules are left out), resolving `crate::`, `super::`
//! and `use a::{b, c}` paths, so a new `use` that breaks a rule fails `make test`;
//! `the_checker_fails_on_a_planted_climb` shows that it can.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `core/src`'s floors, bottom first: a module may import only modules listed before it.
const CORE_FLOORS: &[&str] = &[
    "alloc", "rng", "store", "host", "spec", "prune", "hw", "ops", "data", "protocol", "model",
    "train", "run", "slurm", "export", "deploy", "nas", "study",
];

/// `app/src`'s floors, bottom first (`lib` and `main` are the crate's roots, above all).
const APP_FLOORS: &[&str] = &["chart", "gui", "cli"];

/// `app/src/gui`'s floors, bottom first (`gui/mod.rs` is its root): the data thread, its cache and
/// the app's own state; widgets any view may use; the persisted settings; the per-frame context
/// and the shortcuts; the views (one file or folder each, none importing another); the app shell.
const GUI_FLOORS: &[&str] = &[
    "data",
    "widgets",
    "settings",
    "ctx",
    "shortcuts",
    "views",
    "app",
];

/// One source file: its top-level module, its path within it (`mod` for a flat file or
/// `mod.rs`), its module path in the crate (`gui/views/runs.rs` → `gui::views::runs`), and its
/// code without comments and without its inline test modules.
struct File {
    top: String,
    file: String,
    module: Vec<String>,
    code: String,
}

impl File {
    fn new(rel: &[String], text: &str) -> File {
        let (top, file) = match rel {
            [one] => (one.clone(), "mod".to_owned()),
            [dir, rest @ ..] => (dir.clone(), rest.join("/")),
            [] => (String::new(), String::new()),
        };
        let mut module: Vec<String> = rel.to_vec();
        if module.last().is_some_and(|m| m == "mod") {
            module.pop();
        }
        File {
            top,
            file,
            module,
            code: strip_tests(&code(text)),
        }
    }

    /// Every module path this file names, made absolute (`crate::a::b`, `super::b` and
    /// `use super::{a, b::c}` each resolved from where it stands: inside an inline `mod m { … }`,
    /// `super` is the file's own module), cut to three parts past the base.
    fn uses(&self) -> BTreeSet<Vec<String>> {
        let mut out = BTreeSet::new();
        let bytes = self.code.as_bytes();
        // Inline modules open at this point: (name, brace depth inside it).
        let mut inline: Vec<(String, usize)> = Vec::new();
        let mut opening: Option<String> = None;
        let mut depth = 0usize;
        let mut i = 0;
        while i < bytes.len() {
            let rest = &self.code[i..];
            let boundary = i == 0 || {
                let c = bytes[i - 1];
                !(c.is_ascii_alphanumeric() || c == b'_' || c == b':')
            };
            match bytes[i] {
                b'{' => {
                    depth += 1;
                    if let Some(name) = opening.take() {
                        inline.push((name, depth));
                    }
                }
                b'}' => {
                    if inline.last().is_some_and(|(_, d)| *d == depth) {
                        inline.pop();
                    }
                    depth = depth.saturating_sub(1);
                }
                b';' => opening = None,
                _ => {}
            }
            if boundary && let Some(after) = rest.strip_prefix("mod ") {
                let name: String = after
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                opening = Some(name);
            }
            let here = || {
                let mut m = self.module.clone();
                m.extend(inline.iter().map(|(n, _)| n.clone()));
                m
            };
            let base = if !boundary {
                None
            } else if let Some(r) = rest.strip_prefix("crate::") {
                Some((Vec::new(), r))
            } else if rest.starts_with("super::") {
                let mut base = here();
                let mut r = rest;
                while let Some(after) = r.strip_prefix("super::") {
                    base.pop();
                    r = after;
                }
                Some((base, r))
            } else {
                None
            };
            match base {
                Some((base, r)) => {
                    expand(&base, r, &mut out);
                    i = self.code.len() - r.len();
                }
                None => i += rest.chars().next().map_or(1, char::len_utf8),
            }
        }
        out
    }
}

/// The paths `text` names from `base`: `a::b::c`, or a group `{a, b::{c, d}}`.
fn expand(base: &[String], text: &str, out: &mut BTreeSet<Vec<String>>) {
    let mut path = base.to_vec();
    let mut rest = text;
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        expand(&path, group[start..i].trim(), out);
                        return;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(&path, group[start..i].trim(), out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            return;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() || name == "self" {
            break;
        }
        path.push(name.clone());
        rest = &rest[name.len()..];
        match rest.strip_prefix("::") {
            Some(r) if path.len() < 3 => rest = r,
            _ => break,
        }
    }
    if path.len() > base.len() {
        out.insert(path);
    }
}

/// `code` without its inline test modules (`#[cfg(test)] mod name { … }`): the layering is the
/// shipped code's.
fn strip_tests(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(i) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..i]);
        let after = rest[i + "#[cfg(test)]".len()..].trim_start();
        let inline = after.starts_with("mod ")
            && after
                .find('{')
                .is_some_and(|b| after.find(';').is_none_or(|s| b < s));
        if !inline {
            rest = after;
            continue;
        }
        let open = after.find('{').expect("checked");
        let mut depth = 0;
        let mut end = after.len();
        for (j, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn src(krate: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("src")
}

/// Source files under `dir`, recursively.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read the sources") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// `text` without its comments (line and doc comments; the sources have no block comments), so
/// that a doc link is not an import.
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn load(root: &Path) -> Vec<File> {
    let mut files = Vec::new();
    for path in sources(root) {
        let rel = path.strip_prefix(root).expect("under src");
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
            .collect();
        let text = std::fs::read_to_string(&path).expect("read source");
        files.push(File::new(&parts, &text));
    }
    files
}

/// Every import, by a module under `folder` (the crate root: `&[]`), of one of `folder`'s
/// children on a higher floor than its own, as a sentence; a child on no floor is named too.
/// Files outside `floors` but in `roots` (the crate's `lib`, `main`) may import anything.
fn climbs(
    krate: &str,
    files: &[File],
    folder: &[&str],
    floors: &[&str],
    roots: &[&str],
) -> Vec<String> {
    let n = folder.len();
    let under = |m: &[String]| m.len() > n && m.iter().zip(folder).all(|(a, b)| a == b);
    let floor = |m: &str| floors.iter().position(|f| *f == m);
    let mut out = Vec::new();
    for f in files.iter().filter(|f| under(&f.module)) {
        let child = f.module[n].as_str();
        if n == 0 && roots.contains(&child) {
            continue;
        }
        let at = format!("{krate}/src/{}", f.module.join("/"));
        let Some(own) = floor(child) else {
            out.push(format!(
                "{at} is in {}/{child}, which is on no floor: give it one in tests/e2e/layering.rs",
                folder.join("/")
            ));
            continue;
        };
        for used in f.uses().into_iter().filter(|u| under(u)) {
            match floor(&used[n]) {
                Some(theirs) if theirs <= own => {}
                Some(_) => out.push(format!(
                    "{at} imports {}, which is on a higher floor",
                    used.join("::")
                )),
                None => out.push(format!("{at}: {}?", used.join("::"))),
            }
        }
    }
    out
}

/// An import circle among the children of `folder` (its files and subfolders), if there is one.
fn circle(files: &[File], folder: &[&str]) -> Option<Vec<String>> {
    let n = folder.len();
    let under = |m: &[String]| m.len() > n && m.iter().zip(folder).all(|(a, b)| a == b);
    let inside: Vec<(&str, BTreeSet<Vec<String>>)> = files
        .iter()
        .filter(|f| under(&f.module))
        .map(|f| (f.module[n].as_str(), f.uses()))
        .collect();
    let children: BTreeSet<&str> = inside.iter().map(|(c, _)| *c).collect();
    let mut edges: BTreeMap<&str, Vec<&str>> = children.iter().map(|c| (*c, Vec::new())).collect();
    for (from, used) in &inside {
        for u in used.iter().filter(|u| under(u)) {
            if let Some(to) = children.get(u[n].as_str()).filter(|to| *to != from) {
                edges.get_mut(from).expect("a child").push(to);
            }
        }
    }
    fn visit<'a>(
        n: &'a str,
        edges: &BTreeMap<&'a str, Vec<&'a str>>,
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(_) => {
                let mut c: Vec<String> = path.iter().map(|p| (*p).to_owned()).collect();
                c.push(n.to_owned());
                return Some(c);
            }
            None => {}
        }
        state.insert(n, 1);
        path.push(n);
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n, 2);
        None
    }
    let mut state = BTreeMap::new();
    edges
        .keys()
        .find_map(|f| visit(f, &edges, &mut state, &mut Vec::new()))
}

/// Every folder of a crate, the root included: each module path's proper prefixes.
fn folders(files: &[File]) -> BTreeSet<Vec<&str>> {
    files
        .iter()
        .flat_map(|f| {
            (0..f.module.len()).map(|k| f.module[..k].iter().map(String::as_str).collect())
        })
        .collect()
}

#[test]
fn core_modules_import_only_lower_floors_and_no_folder_has_a_circle() {
    let files = load(&src("core"));
    let broken = climbs("core", &files, &[], CORE_FLOORS, &["lib"]);
    assert!(broken.is_empty(), "{broken:#?}");
    let tops: BTreeSet<&str> = files.iter().map(|f| f.top.as_str()).collect();
    assert!(
        CORE_FLOORS.iter().all(|f| tops.contains(f)),
        "every floor exists"
    );
    for folder in folders(&files) {
        if let Some(c) = circle(&files, &folder) {
            panic!("import circle in core/src/{}: {c:?}", folder.join("/"));
        }
    }
}

#[test]
fn core_spec_has_no_tensors_store_imports_nothing_and_only_the_run_manager_trains() {
    for f in load(&src("core")) {
        if f.top == "spec" {
            for banned in [
                "tch::",
                "torch_sys",
                "crate::model",
                "crate::ops",
                "crate::train",
            ] {
                assert!(!f.code.contains(banned), "spec/{} uses {banned}", f.file);
            }
        }
        if f.top == "store" {
            let outside: Vec<_> = f.uses().into_iter().filter(|u| u[0] != "store").collect();
            assert!(
                outside.is_empty(),
                "store/{} imports from the crate: {outside:?}",
                f.file
            );
        }
        // The integer program runs without libtorch: only the files that read a float export
        // (`mod.rs`, `float.rs`; the tests write one) may touch tensors.
        if f.top == "deploy" && !["mod", "float", "tests"].contains(&f.file.as_str()) {
            for banned in ["tch::", "torch_sys", "crate::export", "crate::model"] {
                assert!(!f.code.contains(banned), "deploy/{} uses {banned}", f.file);
            }
        }
        if f.code.contains("train::train(") {
            assert_eq!(
                (f.top.as_str(), f.file.as_str()),
                ("run", "mod"),
                "{}/{} starts a training loop; only the run manager may",
                f.top,
                f.file
            );
        }
    }
}

#[test]
fn app_modules_import_only_lower_floors_no_view_imports_another_and_chart_draws_nothing() {
    let files = load(&src("app"));
    let mut broken = climbs("app", &files, &[], APP_FLOORS, &["lib", "main"]);
    broken.extend(climbs("app", &files, &["gui"], GUI_FLOORS, &[]));
    broken.extend(views_importing_views(&files));
    assert!(broken.is_empty(), "{broken:#?}");
    let gui: BTreeSet<&str> = files
        .iter()
        .filter(|f| f.module.len() > 1 && f.module[0] == "gui")
        .map(|f| f.module[1].as_str())
        .collect();
    assert!(
        GUI_FLOORS.iter().all(|f| gui.contains(f)),
        "every gui floor exists: {gui:?}"
    );
    for f in files.iter().filter(|f| f.top == "chart") {
        for banned in [
            "crate::gui",
            "crate::cli",
            "egui::Ui",
            "egui_plot",
            "eframe",
        ] {
            assert!(!f.code.contains(banned), "chart/{} uses {banned}", f.file);
        }
    }
    for folder in folders(&files) {
        if let Some(c) = circle(&files, &folder) {
            panic!("import circle in app/src/{}: {c:?}", folder.join("/"));
        }
    }
}

/// Every import of one view by another (a view is a file or folder of `gui/views/`), as a
/// sentence: what two views share belongs in a widget, the context or the data floor.
fn views_importing_views(files: &[File]) -> Vec<String> {
    let mut out = Vec::new();
    let is_view = |m: &[String]| m.len() > 2 && m[0] == "gui" && m[1] == "views";
    for f in files.iter().filter(|f| is_view(&f.module)) {
        for used in f
            .uses()
            .into_iter()
            .filter(|u| is_view(u) && u[2] != f.module[2])
        {
            out.push(format!(
                "app/src/{} imports the view {}: a view imports no other view",
                f.module.join("/"),
                used[2]
            ));
        }
    }
    out
}

#[test]
fn the_checker_fails_on_a_planted_climb() {
    let planted = |path: &str, text: &str| {
        let parts: Vec<String> = path.split('/').map(str::to_owned).collect();
        File::new(&parts, text)
    };
    // chart → gui climbs; the same words in a comment do not count.
    let files = [
        planted(
            "chart/series",
            "use crate::gui::plot::legend_row;\n// crate::cli in a comment\n",
        ),
        planted("gui/mod", "use crate::chart::series::Series;\n"),
    ];
    let found = climbs("app", &files, &[], APP_FLOORS, &["lib"]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("imports gui::plot"), "{found:?}");
    // A module on no floor is named.
    let stray = [planted("widgets/mod", "")];
    assert_eq!(climbs("app", &stray, &[], APP_FLOORS, &["lib"]).len(), 1);
    // Within gui: a widget naming a view through a group climbs; a view naming a widget does not.
    let gui = [
        planted(
            "gui/widgets/plot",
            "use super::super::{data::cache, views::runs::Col};\n",
        ),
        planted(
            "gui/views/runs",
            "use crate::gui::widgets::{plot, export};\n",
        ),
    ];
    let found = climbs("app", &gui, &["gui"], GUI_FLOORS, &[]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("imports gui::views::runs"), "{found:?}");
    // A view naming another, relatively or absolutely, is named; its own folder's files are not.
    let views = [
        planted(
            "gui/views/compare",
            "use super::study::band;\nuse crate::gui::views::hardware;\n",
        ),
        planted("gui/views/launch/mod", "mod form;\nuse self::form::Form;\n"),
        planted("gui/views/launch/form", "use super::Launch;\n"),
    ];
    assert_eq!(
        views_importing_views(&views).len(),
        2,
        "{:?}",
        views_importing_views(&views)
    );
    // Inside an inline module, `super` is the file's own module, not its parent.
    let inline = planted(
        "store/alloc",
        "mod glibc {\n    fn f() -> super::Tuning { todo!() }\n}\nuse super::rng::Rng;\n",
    );
    let used: Vec<String> = inline.uses().iter().map(|u| u.join("::")).collect();
    assert_eq!(used, ["store::alloc::Tuning", "store::rng::Rng"]);
    // Two files of one folder importing each other are a circle; a test module is not code.
    let pair = [
        planted("chart/a", "use super::b::X;"),
        planted("chart/b", "use super::{c, a::Y};"),
        planted(
            "chart/c",
            "#[cfg(test)]\nmod tests {\n    use super::super::a;\n}\n",
        ),
    ];
    assert!(circle(&pair, &["chart"]).is_some());
    assert!(circle(&pair[1..], &["chart"]).is_none());
    assert!(circle(&files, &["chart"]).is_none());
}
