fn main() -> std::process::ExitCode {
    shiftadd_app::main()
}
