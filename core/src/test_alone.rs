//! Tests that must have the process to themselves (torch's global generator, the peak resident
//! memory): each reruns itself alone in a child process of the test binary.

/// In the child, `true`: run the check. In the parent, run test `name` alone in a child, assert
/// it passed, and return `false`.
pub fn alone(name: &str) -> bool {
    const CHILD: &str = "SHIFTADD_TEST_ALONE";
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .expect("run the check alone");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the check did not run: {text}");
    false
}
