//! The repository stays small enough to carry: the GPU machine this project is at times lent
//! receives the working tree (with a device build of about 30 MB) and refuses more than 64 MiB,
//! so the tracked files total under 20 MB and none is over 5 MB. Results are committed as compact
//! databases (`shiftadd compact`), never checkpoints.

use std::process::Command;

const MAX_FILE: u64 = 5_000_000;
const MAX_TOTAL: u64 = 20_000_000;

#[test]
fn the_tracked_tree_is_under_20_mb_and_no_file_over_5_mb() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new("git")
        .args(["-C", root, "ls-files", "-z"])
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git ls-files: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut total = 0;
    let mut too_big = Vec::new();
    let files: Vec<&[u8]> = out
        .stdout
        .split(|&b| b == 0)
        .filter(|f| !f.is_empty())
        .collect();
    assert!(
        files.len() > 50,
        "the tree lists its files ({})",
        files.len()
    );
    for f in files {
        let name = String::from_utf8_lossy(f).into_owned();
        // A tracked file deleted in the working tree (being removed) weighs nothing.
        let Ok(meta) = std::fs::symlink_metadata(format!("{root}/{name}")) else {
            continue;
        };
        total += meta.len();
        if meta.len() > MAX_FILE {
            too_big.push(format!("{name} ({:.1} MB)", meta.len() as f64 / 1e6));
        }
    }
    assert!(too_big.is_empty(), "tracked files over 5 MB: {too_big:?}");
    assert!(
        total < MAX_TOTAL,
        "the tracked files total {:.1} MB (limit 20 MB)",
        total as f64 / 1e6
    );
}
