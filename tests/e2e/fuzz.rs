//! The parsers survive mutated and arbitrary input (issue 21 item 7), and a hostile database
//! imported, listed and deleted from changes nothing outside its checkpoint folder (issue 43): a
//! few thousand cases each here; `make fuzz` runs a million.

use std::path::Path;

use shiftadd_tests::fuzz;

#[test]
fn every_parser_survives_mutated_input() {
    let scratch = tempfile::tempdir().expect("tmp");
    let experiments = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments");
    let targets = fuzz::targets(&experiments, scratch.path()).expect("seed files");
    assert_eq!(targets.len(), 8);
    let mut findings = Vec::new();
    for mut t in targets {
        // The database targets open SQLite several times a case: fewer of them.
        let cases = if t.name.contains("database") {
            300
        } else {
            3000
        };
        let report = fuzz::fuzz(&mut t, cases, 21, &mut |_, _| {});
        eprintln!("{report}");
        assert_eq!(report.cases, cases);
        // Mutations keep some inputs valid: a fuzzer that never reaches the accepting path
        // tests nothing beyond the first check.
        assert!(report.accepted > 0, "{report}");
        if report.panics > 0 || report.hangs > 0 {
            findings.push(format!(
                "{report}: {:?}",
                report.findings.iter().map(|(m, _)| m).collect::<Vec<_>>()
            ));
        }
    }
    assert!(findings.is_empty(), "{findings:#?}");
}
