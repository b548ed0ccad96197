//! Compile the C++ operators (`csrc/`) against the libtorch headers, and give every binary of this
//! package (unit tests included) an rpath to libtorch.
include!("../build_rpath.rs");

fn main() {
    emit_rpath();
    println!("cargo:rerun-if-changed=csrc");
    let Some(lib) = libtorch_lib() else {
        panic!("torch-sys did not export DEP_TCH_LIBTORCH_LIB; is libtorch set up (`make setup`)?");
    };
    let root = std::path::Path::new(&lib)
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    // The libtorch version, for each run's provenance.
    let version = [
        "include/torch/headeronly/version.h",
        "include/torch/csrc/api/include/torch/version.h",
    ]
    .iter()
    .find_map(|h| std::fs::read_to_string(root.join(h)).ok())
    .map(|text| {
        let part = |name: &str| {
            text.lines()
                .find_map(|l| {
                    l.trim()
                        .strip_prefix(&format!("#define TORCH_VERSION_{name} "))
                })
                .map_or("?", str::trim)
                .to_owned()
        };
        format!("{}.{}.{}", part("MAJOR"), part("MINOR"), part("PATCH"))
    })
    .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SHIFTADD_LIBTORCH_VERSION={version}");
    let base = || {
        let mut b = cc::Build::new();
        b.cpp(true)
            .pic(true)
            .std("c++17")
            .opt_level(3)
            .debug(false)
            .warnings(false)
            .include(root.join("include"))
            .include(root.join("include/torch/csrc/api/include"))
            // ATen's parallel_for is a header template over `#pragma omp parallel`: without
            // OpenMP here it runs every kernel of these files on one thread. The GOMP symbols
            // resolve to the libgomp.so.1 that libtorch loads (the same soname, via the rpath).
            .flag("-fopenmp")
            .define("_GLIBCXX_USE_CXX11_ABI", "1")
            .define("GLOG_USE_GLOG_EXPORT", None);
        b
    };
    // Exact rounding: no fast-math here. -fno-trapping-math changes no value (the default
    // rounding mode stays, nothing is reassociated); it lets GCC turn the 16.16 rounding's select
    // into a vector blend, which it will not do for a float add that might trap.
    base()
        .flag("-fno-trapping-math")
        .file("csrc/shift.cpp")
        .compile("shiftadd_shift");
    base().file("csrc/layout.cpp").compile("shiftadd_layout");
    base().file("csrc/bn.cpp").compile("shiftadd_bn");
    // The fused SGD update must round as the ATen ops it replaces: no contraction into FMAs.
    base()
        .flag("-ffp-contract=off")
        .file("csrc/sgd.cpp")
        .compile("shiftadd_sgd");
    // The Add kernel's min/max/abs loops vectorise only without strict IEEE semantics; NaN
    // inputs then give unspecified outputs (the training loop checks its losses anyway).
    base()
        .flag("-ffast-math")
        .file("csrc/adder.cpp")
        .compile("shiftadd_ops");
    // The CUDA launcher carries adder_tiled.h as the source NVRTC compiles at run time: one file,
    // two compilers (the host build above, NVRTC on a device).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let source = std::fs::read_to_string("csrc/adder_tiled.h").expect("csrc/adder_tiled.h");
    assert!(
        !source.contains(")SHIFTADD\""),
        "adder_tiled.h must not contain the raw string's delimiter"
    );
    std::fs::write(
        out.join("adder_tiled_src.inc"),
        format!("R\"SHIFTADD({source})SHIFTADD\"\n"),
    )
    .expect("write the kernel source");
    base()
        .include(&out)
        .file("csrc/adder_cuda.cpp")
        .compile("shiftadd_adder_cuda");
    println!("cargo:rustc-link-lib=dl");
    // Whether this libtorch has CUDA (and so NVRTC): the NVRTC compile test expects it then.
    println!("cargo:rustc-check-cfg=cfg(libtorch_cuda)");
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-cfg=libtorch_cuda");
    }
}
