//! No build step: this script exists so that `[build-dependencies]` in
//! Cargo.toml can align the host-side features of proc-macro2 with pgrx's
//! (see the comment there), so the extension and the CLI share one build of
//! their dependencies.
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
}
