//! The layering of `core/src` as a test (ARCHITECTURE.md, "Invariants"): every top-level module
//! imports only modules on a lower floor, no folder's files import each other in a circle, `spec/`
//! never touches tensors (`tch`, `model/`, `ops/`), `store/` imports nothing else from the crate,
//! and only the run manager starts training. It reads the sources, so a new `use` that breaks a
//! rule fails `make test`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The floors, bottom first: a module may import only modules listed before it.
const FLOORS: [&str; 16] = [
    "alloc", "rng", "store", "host", "spec", "hw", "ops", "data", "protocol", "model", "train",
    "run", "slurm", "export", "nas", "study",
];

/// Source files under `dir`, recursively.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read core/src") {
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

/// The code of a file without its comments (line comments and doc comments; the sources have no
/// block comments), so that a doc link is not an import.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read source");
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

struct Tree {
    root: PathBuf,
    /// (top-level module, file within it (`mod` for a flat file or `mod.rs`), code).
    files: Vec<(String, String, String)>,
}

impl Tree {
    fn load() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        for path in sources(&root) {
            let rel = path.strip_prefix(&root).expect("under src");
            let parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
                .collect();
            let (top, file) = match parts.as_slice() {
                [one] => (one.clone(), "mod".to_owned()),
                [dir, rest @ ..] => (dir.clone(), rest.join("/")),
                [] => continue,
            };
            files.push((top, file, code(&path)));
        }
        Self { root, files }
    }
}

#[test]
fn top_level_modules_import_only_lower_floors() {
    let tree = Tree::load();
    let floor = |m: &str| FLOORS.iter().position(|f| *f == m);
    let mut seen = BTreeSet::new();
    for (top, file, code) in &tree.files {
        if top == "lib" || top == "layering" {
            continue;
        }
        seen.insert(top.clone());
        let own = floor(top).unwrap_or_else(|| {
            panic!("core/src/{top} is not in FLOORS: give it a floor in core/src/layering.rs")
        });
        for used in names_after(code, "crate::") {
            let theirs = floor(&used).unwrap_or_else(|| panic!("{top}/{file}: crate::{used}?"));
            assert!(
                theirs <= own,
                "core/src/{top} ({file}) imports crate::{used}, which is on a higher floor"
            );
        }
    }
    assert_eq!(seen.len(), FLOORS.len(), "every floor exists: {seen:?}");
    assert!(tree.root.join("spec/mod.rs").exists());
}

#[test]
fn spec_has_no_tensors_and_store_imports_nothing_else() {
    let tree = Tree::load();
    for (top, file, code) in &tree.files {
        if top == "spec" {
            for banned in [
                "tch::",
                "torch_sys",
                "crate::model",
                "crate::ops",
                "crate::train",
            ] {
                assert!(!code.contains(banned), "spec/{file} uses {banned}");
            }
        }
        if top == "store" {
            assert!(
                names_after(code, "crate::").is_empty(),
                "store/{file} imports from the crate"
            );
        }
    }
}

#[test]
fn no_folder_has_an_import_circle() {
    let tree = Tree::load();
    let mut by_folder: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for (top, file, code) in &tree.files {
        if file != "mod" {
            by_folder
                .entry(top.as_str())
                .or_default()
                .push((file.as_str(), code.as_str()));
        }
    }
    for (folder, files) in by_folder {
        let names: BTreeSet<&str> = files.iter().map(|(f, _)| *f).collect();
        let edges: BTreeMap<&str, BTreeSet<String>> = files
            .iter()
            .map(|(f, code)| {
                let mut used = names_after(code, "super::");
                used.extend(names_after(code, &format!("crate::{folder}::")));
                used.retain(|u| names.contains(u.as_str()) && u != f);
                (*f, used)
            })
            .collect();
        // Depth-first search for a back edge.
        fn visit<'a>(
            n: &'a str,
            edges: &'a BTreeMap<&'a str, BTreeSet<String>>,
            state: &mut BTreeMap<&'a str, u8>,
            path: &mut Vec<&'a str>,
        ) {
            match state.get(n) {
                Some(2) => return,
                Some(1) => panic!("import circle in a folder: {path:?} → {n}"),
                _ => {}
            }
            state.insert(n, 1);
            path.push(n);
            for m in &edges[n] {
                let key = edges.keys().find(|k| **k == m.as_str()).copied();
                if let Some(k) = key {
                    visit(k, edges, state, path);
                }
            }
            path.pop();
            state.insert(n, 2);
        }
        let mut state = BTreeMap::new();
        for f in edges.keys() {
            visit(f, &edges, &mut state, &mut Vec::new());
        }
        assert!(!folder.is_empty());
    }
}

#[test]
fn only_the_run_manager_starts_training() {
    let tree = Tree::load();
    for (top, file, code) in &tree.files {
        if top != "layering" && code.contains("train::train(") {
            assert_eq!(
                (top.as_str(), file.as_str()),
                ("run", "mod"),
                "{top}/{file} starts a training loop; only the run manager may"
            );
        }
    }
}

#[test]
fn the_checker_sees_a_violation() {
    // The rules above must be able to fail: a spec file that imported the model would be caught.
    let code = "use crate::model::Net;\n// crate::ops in a comment is fine\n";
    let stripped: String = code
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect();
    let used = names_after(&stripped, "crate::");
    assert_eq!(used, BTreeSet::from(["model".to_owned()]));
    let floor = |m: &str| FLOORS.iter().position(|f| *f == m);
    assert!(floor("model") > floor("spec"), "so spec → model is a climb");
}
