// Shared by the build scripts of every package that links libtorch. `torch-sys` (links = "tch")
// exports its library folder as DEP_TCH_LIBTORCH_LIB to packages that depend on it directly.
fn libtorch_lib() -> Option<String> {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    std::env::var("DEP_TCH_LIBTORCH_LIB").ok()
}

/// Give every binary of this package (unit tests included) an rpath to the libtorch it links,
/// and link libtorch_cuda where that libtorch has it: rustc links with `--as-needed`, and no
/// symbol of libtorch_cuda is referenced (CUDA registers itself from the library's static
/// initialisers), so without `--no-as-needed` the linker drops it and no build sees a GPU.
fn emit_rpath() {
    if let Some(lib) = libtorch_lib() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
