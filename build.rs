//! One name for "this build lends scheduling attributes": `cfg(donates)`, set on Linux when the
//! `donation` feature is on. The crate's platform split (`src/sys`) and the tests that need
//! real donation use it, so the condition is written once.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(donates)");
    println!("cargo::rerun-if-changed=build.rs");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let donation = std::env::var_os("CARGO_FEATURE_DONATION").is_some();
    if linux && donation {
        println!("cargo::rustc-cfg=donates");
    }
}
