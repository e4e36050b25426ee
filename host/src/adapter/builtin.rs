//! The default adapters, compiled from `guests/` by `build.rs` and embedded in the
//! binary so that `adapter = "builtin:kafka"` needs no file on disk.

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));
