//! Every build links libtorch_cuda where the libtorch it builds against has it (issue 42): rustc
//! links with `--as-needed`, nothing references a symbol of libtorch_cuda, and a binary without
//! it answers `--device cuda` with "no CUDA device is available" on any GPU machine.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The dynamic section of `bin` as `readelf -d` prints it.
fn dynamic_section(bin: &Path) -> String {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(bin)
        .output()
        .expect("readelf runs (binutils)");
    assert!(out.status.success(), "readelf -d {}", bin.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The folders of a binary's RUNPATH / RPATH.
fn search_path(dynamic: &str) -> Vec<PathBuf> {
    dynamic
        .lines()
        .filter(|l| l.contains("(RUNPATH)") || l.contains("(RPATH)"))
        .filter_map(|l| {
            Some(
                l.split_once('[')?
                    .1
                    .trim_end()
                    .trim_end_matches(']')
                    .to_owned(),
            )
        })
        .flat_map(|p| p.split(':').map(PathBuf::from).collect::<Vec<_>>())
        .collect()
}

#[test]
fn binaries_link_libtorch_cuda_where_libtorch_has_it() {
    let bins = [
        PathBuf::from(env!("CARGO_BIN_EXE_shiftadd-under-test")),
        std::env::current_exe().expect("this test binary"),
    ];
    for bin in bins {
        let dynamic = dynamic_section(&bin);
        let libtorch = search_path(&dynamic)
            .into_iter()
            .find(|dir| dir.join("libtorch_cpu.so").exists())
            .unwrap_or_else(|| panic!("{}: no rpath to libtorch in\n{dynamic}", bin.display()));
        let needs = |lib: &str| dynamic.contains(&format!("Shared library: [{lib}]"));
        assert!(needs("libtorch_cpu.so"), "{}", bin.display());
        if libtorch.join("libtorch_cuda.so").exists() {
            assert!(
                needs("libtorch_cuda.so"),
                "{} links a libtorch with CUDA ({}) but not libtorch_cuda.so:\n{dynamic}",
                bin.display(),
                libtorch.display()
            );
        }
    }
}
