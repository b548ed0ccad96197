// Shared by the build scripts of every package that links libtorch. `torch-sys` (links = "tch")
// exports its library folder as DEP_TCH_LIBTORCH_LIB to packages that depend on it directly.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
