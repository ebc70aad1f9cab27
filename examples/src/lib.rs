//! Holds colony's examples; see the `[[example]]` entries in Cargo.toml.
