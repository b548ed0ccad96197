//! Give every binary of this package an rpath to the libtorch it links.
include!("../build_rpath.rs");

fn main() {
    emit_rpath();
}
