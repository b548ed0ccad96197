//! `make fuzz`: a million mutated inputs per parser (see `shiftadd_tests::fuzz`); prints one line
//! per parser and exits 1 if any input made a parser panic or hang. One input per kind of panic
//! (up to 16) is saved beside the scratch folder as `fuzz-finding-<parser>-<n>.bin`, its message
//! printed; a progress line goes to stderr every 10,000 cases.
//!
//! fuzz [--cases N] [--seed S] [--only SUBSTRING] [--replay FILE]
//!
//! `--replay FILE` feeds FILE once to the parsers `--only` selects, with no panic caught: where
//! a finding panics is printed (a backtrace with `RUST_BACKTRACE=1`).

use std::path::Path;
use std::process::ExitCode;

use shiftadd_tests::fuzz;

fn main() -> ExitCode {
    let mut cases: u64 = 1_000_000;
    let mut seed: u64 = 1;
    let mut only = String::new();
    let mut replay: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next().unwrap_or_default();
        match a.as_str() {
            "--cases" => cases = value.parse().unwrap_or(cases),
            "--seed" => seed = value.parse().unwrap_or(seed),
            "--only" => only = value,
            "--replay" => replay = Some(value.into()),
            _ => {
                eprintln!("usage: fuzz [--cases N] [--seed S] [--only SUBSTRING] [--replay FILE]");
                return ExitCode::from(2);
            }
        }
    }
    let experiments = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments");
    let scratch = std::env::temp_dir().join(format!("shiftadd-fuzz-{}", std::process::id()));
    let targets = match fuzz::targets(&experiments, &scratch) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "error: cannot make the seed files in {}: {e}",
                scratch.display()
            );
            return ExitCode::FAILURE;
        }
    };
    if let Some(file) = replay {
        let input = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", file.display());
                return ExitCode::FAILURE;
            }
        };
        for mut t in targets.into_iter().filter(|t| t.name.contains(&only)) {
            let accepted = fuzz::replay(&mut t, &input);
            println!(
                "{}: {} (no panic)",
                t.name,
                if accepted { "accepted" } else { "refused" }
            );
        }
        let _ = std::fs::remove_dir_all(&scratch);
        return ExitCode::SUCCESS;
    }
    // Findings are counted, not printed as they happen.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = false;
    println!("seed {seed}, {cases} cases per parser");
    for mut t in targets.into_iter().filter(|t| t.name.contains(&only)) {
        let report = fuzz::fuzz(&mut t, cases, seed, &mut |done, r| {
            eprintln!(
                "  {}: {done}/{cases} cases, {:.0} s, {} panics ({} kinds), {} hangs",
                r.name,
                r.elapsed.as_secs_f64(),
                r.panics,
                r.findings.len(),
                r.hangs
            );
        });
        println!("{report}");
        let stem = report
            .name
            .replace(|c: char| !c.is_ascii_alphanumeric(), "-");
        for (n, (message, input)) in report.findings.iter().enumerate() {
            let file = std::env::temp_dir().join(format!("fuzz-finding-{stem}-{}.bin", n + 1));
            let _ = std::fs::write(&file, input);
            println!(
                "  panic {}: {message} (input saved to {})",
                n + 1,
                file.display()
            );
        }
        failed |= report.panics > 0 || report.hangs > 0;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
