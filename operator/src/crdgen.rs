//! Prints the `JarvisWorkspace` CRD as YAML: `cargo run -p operator --bin crdgen`.
//!
//! The output, with its generated-file header, is what `crds/` and
//! `charts/jarvis/crds/` hold; a test in `operator::crd_yaml` fails when they drift.

fn main() -> anyhow::Result<()> {
    print!("{}", operator::crd_yaml::render()?);
    Ok(())
}
