//! The layering of both crates as a test (ARCHITECTURE.md, "Invariants"), one checker with a
//! floor list per crate: every top-level module imports only modules on its floor or lower, and
//! no folder's files import each other in a circle. For `core/src`: `spec/` never touches tensors
//! (`tch`, `model/`, `ops/`), `store/` imports nothing else from the crate, and only the run
//! manager starts training. For `app/src`: `chart/` (plot and chart maths, no drawing) imports
//! nothing from `gui/` or `cli/`, and `gui/widgets/` imports no view. It reads the sources, so a new `use` that breaks a rule fails
//! `make test`; `the_checker_fails_on_a_planted_climb` shows that it can.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `core/src`'s floors, bottom first: a module may import only modules listed before it.
const CORE_FLOORS: &[&str] = &[
    "alloc", "rng", "store", "host", "spec", "hw", "ops", "data", "protocol", "model", "train",
    "run", "slurm", "export", "nas", "study",
];

/// `app/src`'s floors, bottom first (`lib` and `main` are the crate's roots, above all).
const APP_FLOORS: &[&str] = &["chart", "gui", "cli"];

/// The views of `app/src/gui` (one file each): `gui/widgets/` imports none of them.
const APP_VIEWS: &[&str] = &[
    "runs", "launch", "form", "monitor", "weights", "hardware", "compare", "nas", "study",
];

/// Folders of `app/src` whose files must not import each other in a circle (`gui/` still has one:
/// issue 44 takes it apart into data, widgets and views).
const APP_ACYCLIC: &[&str] = &["chart", "cli"];

/// One source file: its top-level module, its path within it (`mod` for a flat file or
/// `mod.rs`), and its code without comments.
struct File {
    top: String,
    file: String,
    code: String,
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

/// The identifiers that follow `prefix` in `code` (`crate::` → top-level modules it names).
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        rest = &rest[i + prefix.len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

fn load(root: &Path) -> Vec<File> {
    let mut files = Vec::new();
    for path in sources(root) {
        let rel = path.strip_prefix(root).expect("under src");
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
            .collect();
        let (top, file) = match parts.as_slice() {
            [one] => (one.clone(), "mod".to_owned()),
            [dir, rest @ ..] => (dir.clone(), rest.join("/")),
            [] => continue,
        };
        let text = std::fs::read_to_string(&path).expect("read source");
        files.push(File {
            top,
            file,
            code: code(&text),
        });
    }
    files
}

/// Every import of a top-level module from a higher floor, as a sentence; modules outside
/// `floors` but in `roots` (the crate's `lib`, `main`) may import anything.
fn climbs(krate: &str, files: &[File], floors: &[&str], roots: &[&str]) -> Vec<String> {
    let floor = |m: &str| floors.iter().position(|f| *f == m);
    let mut out = Vec::new();
    for f in files.iter().filter(|f| !roots.contains(&f.top.as_str())) {
        let Some(own) = floor(&f.top) else {
            out.push(format!(
                "{krate}/src/{} is on no floor: give it one in tests/e2e/layering.rs",
                f.top
            ));
            continue;
        };
        for used in names_after(&f.code, "crate::") {
            match floor(&used) {
                Some(theirs) if theirs <= own => {}
                Some(_) => out.push(format!(
                    "{krate}/src/{} ({}) imports crate::{used}, which is on a higher floor",
                    f.top, f.file
                )),
                None => out.push(format!("{krate}/src/{}/{}: crate::{used}?", f.top, f.file)),
            }
        }
    }
    out
}

/// An import circle among the files of folder `folder`, if there is one.
fn circle(files: &[File], folder: &str) -> Option<Vec<String>> {
    let inside: Vec<&File> = files
        .iter()
        .filter(|f| f.top == folder && f.file != "mod")
        .collect();
    let names: BTreeSet<&str> = inside.iter().map(|f| f.file.as_str()).collect();
    let edges: BTreeMap<&str, Vec<&str>> = inside
        .iter()
        .map(|f| {
            let mut used = names_after(&f.code, "super::");
            used.extend(names_after(&f.code, &format!("crate::{folder}::")));
            let to = names
                .iter()
                .copied()
                .filter(|n| used.contains(*n) && *n != f.file)
                .collect();
            (f.file.as_str(), to)
        })
        .collect();
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

#[test]
fn core_modules_import_only_lower_floors_and_no_folder_has_a_circle() {
    let files = load(&src("core"));
    let broken = climbs("core", &files, CORE_FLOORS, &["lib"]);
    assert!(broken.is_empty(), "{broken:#?}");
    let tops: BTreeSet<&str> = files.iter().map(|f| f.top.as_str()).collect();
    assert!(
        CORE_FLOORS.iter().all(|f| tops.contains(f)),
        "every floor exists"
    );
    for folder in &tops {
        if let Some(c) = circle(&files, folder) {
            panic!("import circle in core/src/{folder}: {c:?}");
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
            assert!(
                names_after(&f.code, "crate::").is_empty(),
                "store/{} imports from the crate",
                f.file
            );
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
fn app_modules_import_only_lower_floors_and_chart_draws_nothing_of_the_gui() {
    let files = load(&src("app"));
    let broken = climbs("app", &files, APP_FLOORS, &["lib", "main"]);
    assert!(broken.is_empty(), "{broken:#?}");
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
    for folder in APP_ACYCLIC {
        if let Some(c) = circle(&files, folder) {
            panic!("import circle in app/src/{folder}: {c:?}");
        }
    }
    // Widgets sit below every view: what two views share lives there, never in one of them.
    let widgets: Vec<&File> = files
        .iter()
        .filter(|f| f.top == "gui" && f.file.starts_with("widgets/"))
        .collect();
    assert!(widgets.len() >= 4, "gui/widgets/ exists");
    for f in widgets {
        let used: BTreeSet<String> = names_after(&f.code, "super::super::")
            .into_iter()
            .chain(names_after(&f.code, "crate::gui::"))
            .collect();
        for view in APP_VIEWS {
            assert!(
                !used.contains(*view),
                "gui/{} imports the {view} view; a widget imports no view",
                f.file
            );
        }
    }
}

#[test]
fn the_checker_fails_on_a_planted_climb() {
    let planted = |top: &str, file: &str, text: &str| File {
        top: top.into(),
        file: file.into(),
        code: code(text),
    };
    // chart → gui climbs; the same words in a comment do not count.
    let files = [
        planted(
            "chart",
            "series",
            "use crate::gui::plot::legend_row;\n// crate::cli in a comment\n",
        ),
        planted("gui", "mod", "use crate::chart::series::Series;\n"),
    ];
    let found = climbs("app", &files, APP_FLOORS, &["lib"]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("imports crate::gui"), "{found:?}");
    // A module on no floor is named.
    let stray = [planted("widgets", "mod", "")];
    assert_eq!(climbs("app", &stray, APP_FLOORS, &["lib"]).len(), 1);
    // Two files of one folder importing each other are a circle.
    let pair = [
        planted("chart", "a", "use super::b::X;"),
        planted("chart", "b", "use super::a::Y;"),
    ];
    assert!(circle(&pair, "chart").is_some());
    assert!(circle(&files, "chart").is_none());
}
