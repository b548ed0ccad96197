//! Preemption: a cluster (Slurm's `--signal`, `scancel`, a requeue) or a user stops a training
//! command with SIGTERM, SIGINT or SIGUSR1. The first asks every run to stop after its current
//! batch, save a checkpoint where it is and record why (status `stopped`; the command exits with
//! 3); a second SIGINT ends the process at once (its runs become `interrupted`, resumable from
//! their last checkpoint).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

/// Set at the first of the signals: drivers (a study, a search) start nothing more.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// The first of the signals received (0: none).
static FIRST: AtomicI32 = AtomicI32::new(0);

/// Whether the stop was SIGUSR1: Slurm's warning that the job's time is nearly up.
pub fn time_is_up() -> bool {
    FIRST.load(Ordering::SeqCst) == SIGUSR1
}

/// Watch for the signals on a thread of its own; at the first, `on_stop` gets the reason to
/// record ("stopped by SIGTERM").
pub fn watch(on_stop: impl Fn(String) + Send + 'static) -> anyhow::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGUSR1])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let name = match sig {
                    SIGTERM => "SIGTERM",
                    SIGINT => "SIGINT",
                    _ => "SIGUSR1",
                };
                if FIRST
                    .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
                {
                    if sig == SIGINT {
                        eprintln!(
                            "second SIGINT: exiting now; the runs resume from their last checkpoint"
                        );
                        exit_now(130);
                    }
                    continue;
                }
                eprintln!(
                    "{name}: stopping after the current batch and saving a checkpoint \
                     (a second Ctrl-C exits at once)"
                );
                // The reason goes out before `STOP` is seen: a driver that sees `STOP` stops its
                // runs itself, and the first stop a run gets is the one whose reason it keeps.
                on_stop(format!("stopped by {name}"));
                STOP.store(true, Ordering::SeqCst);
            }
        })?;
    Ok(())
}

/// Watch for the signals and turn the first into a stop of every run of `manager`.
pub fn stop_runs_on_signal(manager: &shiftadd_core::run::ManagerHandle) -> anyhow::Result<()> {
    let commands = manager.commands.clone();
    watch(move |reason| {
        let _ = commands.send(shiftadd_core::run::Command::StopAll { reason });
    })
}

/// End the process at once, as a second Ctrl-C asks: `_exit`, not `exit`, whose atexit handlers
/// (libtorch's among them) would run while training threads still use what they tear down.
#[allow(unsafe_code)]
fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` takes no pointers and never returns; skipping atexit handlers and buffered
    // output is the point (stderr is unbuffered, and the database is consistent at every commit).
    unsafe { libc::_exit(code) }
}
