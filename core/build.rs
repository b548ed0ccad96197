//! Give every binary of this package (unit tests included) an rpath to the libtorch it links.
include!("../build_rpath.rs");
