//! The runs list: damaged rows, persisted selection, columns and filter, editing runs.

use super::*;
use shiftadd_core::store::manage::RunEdit;

/// Issue 43, item 2: one row of a hostile or damaged database (an unknown status, text in a
/// metric's value) once made the whole runs table fail; now it is listed as damaged, the others
/// as usual.
#[test]
fn a_damaged_row_is_shown_as_damaged_and_the_others_are_listed() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    rusqlite::Connection::open(&db)
        .expect("raw")
        .execute_batch(
            "UPDATE runs SET status = 'zombie' WHERE name = 'beta';
             UPDATE metrics SET value = 'x' WHERE run_id = 1 AND key = 'val/top1' AND step = 30;",
        )
        .expect("damage");
    let mut f = fake_app(&db, Persisted::default());
    let h = &mut f.harness;
    wait_for(h, "the runs list", |h| has_label(h, "#2"));
    assert!(has_label(h, "#1"), "the other run is listed");
    let rows = &h.state().data().runs;
    let statuses: Vec<Status> = rows.iter().map(|r| r.summary.status).collect();
    assert_eq!(statuses, [Status::Damaged, Status::Damaged], "{statuses:?}");
    assert!(has_label(h, "damaged"), "the status column says so");
    let alpha = rows
        .iter()
        .find(|r| r.summary.name == "alpha")
        .expect("alpha");
    assert!(
        alpha
            .summary
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("metric's value")),
        "{:?}",
        alpha.summary.reason
    );
}

#[test]
fn a_selection_persisted_for_one_database_is_not_applied_to_another() {
    let dir = tempfile::tempdir().expect("tmp");
    let seeded = seeded_db(dir.path());
    // The selection of a session on the seeded database…
    let mut f = fake_app(&seeded, Persisted::default());
    wait_for(&mut f.harness, "the runs list", |h| has_label(h, "#2"));
    f.harness.get_by_label("#2").click();
    f.harness.step();
    run_button(&mut f.harness, "alpha").click();
    f.harness.step();
    let saved = f.harness.state().persisted().clone();
    assert_eq!((saved.current, saved.compare.clone()), (Some(1), vec![2]));
    drop(f);
    // …is kept when the same database opens again…
    let mut again = fake_app(&seeded, saved.clone());
    wait_for(&mut again.harness, "the runs list", |h| has_label(h, "#2"));
    assert_eq!(again.harness.state().persisted().compare, vec![2]);
    assert_eq!(again.harness.state().persisted().current, Some(1));
    drop(again);
    // …and dropped on another one: nothing ticked, nothing current, no error about run ids.
    let other = dir.path().join("other.db");
    let w = Writer::open(&other).expect("db");
    let run = w
        .create_run(crate::support::synthetic_run("fresh", "mult"))
        .expect("run");
    w.status(run, Status::Finished, None);
    w.flush().expect("flush");
    let mut f = fake_app(&other, saved);
    wait_for(&mut f.harness, "the other runs list", |h| {
        has_label(h, "fresh")
    });
    for _ in 0..20 {
        f.harness.step();
    }
    let p = f.harness.state().persisted();
    assert!(p.compare.is_empty(), "{:?}", p.compare);
    assert_eq!(p.current, None);
    assert!(f.harness.state().data().last_error.is_none());
    assert!(!has_label(&f.harness, "Compare 1"));
}

/// Issue 45: typing in the column chooser closed it on the first key, losing the text (the test
/// above sets the field's text without pressing keys). Keys pressed as a keyboard does: the
/// chooser stays open, the text arrives, and the offer is there to click.
#[test]
fn typing_in_the_column_chooser_keeps_it_open() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    let mut f = fake_app(&db, Persisted::default());
    let h = &mut f.harness;
    wait_for(h, "the runs list", |h| has_label(h, "#2"));
    click(h, "Columns");
    wait_for(h, "the column chooser", |h| has_label(h, "add column"));
    h.get_by_label("add column").click();
    h.step();
    for c in "train.lr".chars() {
        let key = egui::Key::from_name(&c.to_string());
        if let Some(key) = key {
            h.event(egui::Event::Key {
                key,
                physical_key: Some(key),
                pressed: true,
                repeat: false,
                modifiers: egui::Modifiers::NONE,
            });
        }
        h.event(egui::Event::Text(c.to_string()));
        if let Some(key) = key {
            h.event(egui::Event::Key {
                key,
                physical_key: Some(key),
                pressed: false,
                repeat: false,
                modifiers: egui::Modifiers::NONE,
            });
        }
        h.step();
        assert!(
            has_label(h, "add column"),
            "the chooser closed after typing {c:?}"
        );
    }
    assert_eq!(
        h.get_by_label("add column").value().as_deref(),
        Some("train.lr")
    );
    wait_for(h, "the offer", |h| {
        h.query_by_role_and_label(egui::accesskit::Role::Button, "train.lr")
            .is_some()
    });
}

/// Issue 45: a long name was cut by its column with no way to read it but widening, and notes
/// showed on hover as raw Markdown. Hovered, a run shows its whole name and its notes rendered.
#[test]
fn hovering_a_run_shows_its_whole_name_and_its_notes_rendered() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    let long = "a-run-name-far-longer-than-the-name-column-is-wide-seed-0";
    shiftadd_core::store::manage::edit(&db, 1, &RunEdit::Rename(long.into())).expect("rename");
    shiftadd_core::store::manage::edit(&db, 1, &RunEdit::SetNotes("Baseline for **all**".into()))
        .expect("notes");
    let mut f = fake_app(&db, Persisted::default());
    let h = &mut f.harness;
    wait_for(h, "the runs list", |h| has_label(h, long));
    h.get_by_label(long).hover();
    wait_for(h, "the tooltip", |h| {
        h.query_all_by_label(long).count() == 2 && has_label_containing(h, "Baseline for all")
    });
    assert!(
        !has_label_containing(h, "**"),
        "notes are rendered, not shown raw"
    );
}

#[test]
fn the_column_chooser_adds_a_config_key_column_and_the_filter_hides_proxies() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    tracker_runs(&db);
    let mut f = fake_app(&db, Persisted::default());
    let h = &mut f.harness;
    wait_for(h, "the runs list", |h| has_label(h, "#3"));
    assert!(
        !has_label(h, "#4"),
        "proxies fold under their search by default"
    );
    click(h, "Columns");
    wait_for(h, "the column chooser", |h| has_label(h, "add column"));
    h.get_by_label("add column")
        .set_text_value_accesskit("train.lr");
    h.step();
    wait_for(h, "the offer", |h| {
        h.query_by_role_and_label(egui::accesskit::Role::Button, "train.lr")
            .is_some()
    });
    h.get_by_role_and_label(egui::accesskit::Role::Button, "train.lr")
        .click();
    h.step();
    wait_for(h, "the train.lr column", |h| {
        h.state()
            .persisted()
            .runs
            .columns
            .iter()
            .any(|c| matches!(c, shiftadd_app::gui::settings::Col::Config(k) if k == "train.lr"))
    });
    h.key_press(egui::Key::Escape);
    h.step();
    assert!(has_label(h, "train.lr"), "the header");
    assert!(
        has_label(h, "0.05") && has_label(h, "0.1"),
        "each run's value"
    );
    // Unfolded, proxies list; `-tag:nas-proxy` hides them again.
    click(h, "fold");
    wait_for(h, "the proxies", |h| {
        has_label(h, "#4") && has_label(h, "#5")
    });
    h.get_by_label("filter runs")
        .set_text_value_accesskit("-tag:nas-proxy");
    wait_for(h, "the filter", |h| !has_label(h, "#4"));
    assert!(!has_label(h, "#5"));
    assert!(has_label(h, "#1") && has_label(h, "#2") && has_label(h, "#3"));
    h.get_by_label("filter runs")
        .set_text_value_accesskit("val/top1>68");
    // Its figures load with the runs: until then nothing matches.
    wait_for(h, "the metric filter", |h| {
        !has_label(h, "#2") && has_label(h, "#1")
    });
    assert!(has_label(h, "#1"), "alpha's last val/top1 is 0.7");
}

#[test]
fn rename_tag_note_archive_and_delete_change_the_database() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    let folder = tracker_runs(&db);
    let mut f = fake_app(&db, Persisted::default());
    let h = &mut f.harness;
    let reader = Reader::open(&db).expect("reader");
    let run = |id| reader.run(id).expect("run");
    wait_for(h, "the runs list", |h| has_label(h, "alpha"));
    let menu = |h: &mut Harness<'static, StudioApp>, name: &str, item: &str| {
        run_button(h, name).click_secondary();
        h.step();
        click(h, item);
    };
    // Each dialog: (run shown as, menu item, field, text typed, what the database then holds).
    type Check<'a> = Box<dyn Fn() -> bool + 'a>;
    let edits: [(&str, &str, &str, &str, Check<'_>); 3] = [
        (
            "alpha",
            "Rename…",
            "new name",
            "alpha-renamed",
            Box::new(|| run(1).name == "alpha-renamed"),
        ),
        (
            "alpha-renamed",
            "Tags…",
            "tags",
            "paper, keep",
            Box::new(|| run(1).tags == "paper,keep"),
        ),
        (
            "alpha-renamed",
            "Notes…",
            "notes",
            "# Best so far\n- lr **0.1**",
            Box::new(|| run(1).notes.contains("Best so far")),
        ),
    ];
    for (name, item, field, text, saved) in edits {
        menu(h, name, item);
        wait_for(h, field, |h| has_label(h, field));
        h.get_by_label(field).set_text_value_accesskit(text);
        h.step();
        click(h, "Save");
        wait_for(h, item, |_| saved());
    }
    // Monitor shows the notes rendered.
    run_button(h, "alpha-renamed").click();
    wait_for(h, "the notes in Monitor", |h| has_label(h, "Best so far"));
    menu(h, "alpha-renamed", "Archive");
    wait_for(h, "the archive", |_| run(1).archived);
    wait_for(h, "the archived run to hide", |h| {
        !has_label(h, "alpha-renamed")
    });
    assert!(has_label(h, "beta"), "other runs stay listed");
    // Delete, confirmed: run 2's rows and its checkpoint folder go, nothing else.
    assert!(folder.exists());
    menu(h, "beta", "Delete…");
    wait_for(h, "the confirmation", |h| {
        has_label_containing(h, "cannot be undone")
    });
    click(h, "Delete");
    wait_for(h, "the delete", |_| reader.run(2).is_err());
    assert!(!folder.exists(), "its checkpoint folder is removed");
    assert!(reader.metrics(2).expect("metrics").is_empty());
    assert_eq!(run(1).name, "alpha-renamed", "run 1 is untouched");
    assert!(!reader.metrics(1).expect("metrics").is_empty());
    assert_eq!(reader.runs().expect("runs").len(), 4);
    wait_for(h, "the runs list without beta", |h| !has_label(h, "beta"));
}

/// Issue 45: a queued run could not be deleted ("a training run cannot be deleted"). Delete takes
/// it off the queue (Stop to the manager that queued it), then deletes it; one that stays queued
/// (another process holds it) is not deleted, and the app says why.
#[test]
fn a_queued_run_is_taken_off_the_queue_and_deleted() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = seeded_db(dir.path());
    let w = Writer::open(&db).expect("db");
    let queue = |name: &str| {
        let run = w
            .create_run(crate::support::synthetic_run(name, "mult"))
            .expect("run");
        w.status(run, Status::Queued, None);
        w.flush().expect("flush");
        run
    };
    // Its context menu's Delete…, confirmed.
    let delete = |h: &mut Harness<'static, StudioApp>, name: &str| {
        wait_for(h, name, |h| has_label(h, name));
        run_button(h, name).click_secondary();
        h.step();
        click(h, "Delete…");
        wait_for(h, "the confirmation", |h| {
            has_label_containing(h, "taken off it, then deleted")
        });
        // The dialog names the run styled, not with Markdown's backticks.
        assert!(has_label_containing(
            h,
            &format!(" {name} — with every metric")
        ));
        assert!(!has_label_containing(h, "`"), "raw Markdown in the dialog");
        click(h, "Delete");
        h.step();
    };
    let queued = queue("waiting");
    let mut f = fake_app(&db, Persisted::default());
    let reader = Reader::open(&db).expect("reader");
    delete(&mut f.harness, "waiting");
    // The app asks its manager to take the run off the queue; the manager (the test) does.
    let sent: Vec<Command> = f.commands.try_iter().collect();
    assert!(
        sent.iter()
            .any(|c| matches!(c, Command::Stop(r) if *r == queued)),
        "{sent:?}"
    );
    assert!(reader.run(queued).is_ok(), "not deleted while queued");
    w.status(queued, Status::Stopped, Some("taken off the queue".into()));
    w.flush().expect("flush");
    f.events
        .send(Event::Stopped { run: queued })
        .expect("event");
    wait_for(&mut f.harness, "the delete", |_| {
        reader.run(queued).is_err()
    });
    assert_eq!(reader.runs().expect("runs").len(), 2, "the others stay");
    // Queued by another process: this app's Stop does nothing, the run stays, the app says so.
    let other = queue("elsewhere");
    f.events
        .send(Event::Created {
            request: 0,
            run: other,
        })
        .expect("event");
    delete(&mut f.harness, "elsewhere");
    wait_for(&mut f.harness, "the note", |h| {
        has_label_containing(h, "still queued, by another process")
    });
    assert!(
        reader.run(other).is_ok(),
        "a run queued elsewhere is not deleted"
    );
}

/// Issue 45: the runs table scrolled sideways took the run's id and name off screen. Now they
/// stay in place while the chosen columns scroll, and the two parts scroll down together: each
/// visible run's tick stays on the line of its own seed.
#[test]
fn the_runs_table_keeps_id_and_name_in_place_and_its_rows_in_step() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("many.db");
    let w = Writer::open(&db).expect("db");
    for i in 0..80u64 {
        let run = w
            .create_run(NewRun {
                seed: 1000 + i,
                ..crate::support::synthetic_run(&format!("run-{i:02}"), "shift")
            })
            .expect("run");
        w.status(run, Status::Finished, None);
    }
    w.flush().expect("flush");
    let mut persisted = Persisted::default();
    persisted.runs.columns = shiftadd_app::gui::settings::Col::BUILT_IN.to_vec();
    let mut f = fake_app(&db, persisted);
    let h = &mut f.harness;
    // Run k (id) has seed 999 + k. Every run on screen shows both, on one line.
    let rows_in_step = |h: &Harness<'static, StudioApp>| -> Vec<(u64, egui::Rect, egui::Rect)> {
        (1..=80u64)
            .filter_map(|k| {
                let tick = h.query_by_label(&format!("#{k}"))?.rect();
                let seed = h.query_by_label(&(999 + k).to_string())?.rect();
                Some((k, tick, seed))
            })
            .collect()
    };
    wait_for(h, "the runs", |h| {
        h.state().data().runs_loaded && rows_in_step(h).len() > 5
    });
    let shown = rows_in_step(h);
    assert!(shown.len() > 5, "{} rows on screen", shown.len());
    // A tick box and a label sit a little apart on their line; that offset must not change.
    let d0 = shown[1].1.center().y - shown[1].2.center().y;
    let first = shown[0].0;
    let x0 = shown[0].1.left();
    // Down: scrolled from the chosen columns' part (the part with the bar).
    let seed_label = (999 + shown[2].0).to_string();
    for _ in 0..4 {
        h.get_by_label(&seed_label).scroll_down();
        h.step();
    }
    for _ in 0..3 {
        h.step();
    }
    let moved = rows_in_step(h);
    assert!(
        moved.first().is_some_and(|m| m.0 != first),
        "the table scrolled down: first row {first} then {:?}",
        moved.first().map(|m| m.0)
    );
    // (The bottom row may be cut by the sideways bar, which only the chosen columns have.)
    for (k, tick, seed) in moved.iter().filter(|m| m.1.bottom() < 900.0) {
        assert!(
            (tick.center().y - seed.center().y - d0).abs() < 1.0,
            "run {k}: its tick at y {} and its seed at y {}",
            tick.center().y,
            seed.center().y
        );
    }
    // Sideways: the seed column scrolls out of the way; id and name stay where they were.
    let k = moved[1].0;
    let seed_x = moved[1].2.left();
    h.get_by_label("Duration").scroll_to_me();
    for _ in 0..5 {
        h.step();
    }
    let tick = h.get_by_label(&format!("#{k}")).rect();
    let name = h.get_by_label(&format!("run-{:02}", k - 1)).rect();
    assert!(
        (tick.left() - x0).abs() < 1.0,
        "the id column moved: {} then {}",
        x0,
        tick.left()
    );
    assert!(
        name.left() > tick.left() && name.left() < tick.left() + 200.0,
        "{name:?}"
    );
    let after = h
        .query_by_label(&(999 + k).to_string())
        .map(|n| n.rect().left());
    assert!(
        after.is_none_or(|x| x < seed_x - 50.0),
        "the chosen columns scrolled: seed at x {seed_x}, then {after:?}"
    );
}
