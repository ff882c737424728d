//! The generated CRD file: what `crdgen` prints and `crds/` + `charts/jarvis/crds/`
//! hold. Owns the generated-file header and the staleness test; not the CRD itself
//! (that is derived from `crd::JarvisWorkspace`).

use kube::CustomResourceExt;

use crate::crd::JarvisWorkspace;

/// Header marking the file as generated, with the command that regenerates it.
pub const HEADER: &str = "\
# GENERATED FILE - DO NOT EDIT.
# Derived from operator/src/crd.rs; regenerate both copies with:
#   cargo run -q -p operator --bin crdgen > crds/jarvisworkspace.yaml
#   cp crds/jarvisworkspace.yaml charts/jarvis/crds/jarvisworkspace.yaml
";

/// The CRD as YAML, header included.
pub fn render() -> Result<String, serde_yaml::Error> {
    Ok(format!(
        "{HEADER}{}",
        serde_yaml::to_string(&JarvisWorkspace::crd())?
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const COPIES: [&str; 2] = [
        "crds/jarvisworkspace.yaml",
        "charts/jarvis/crds/jarvisworkspace.yaml",
    ];

    #[test]
    fn committed_crd_files_match_the_rust_type() {
        let generated = render().expect("CRD renders");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for copy in COPIES {
            let committed = std::fs::read_to_string(root.join(copy)).unwrap_or_default();
            assert!(
                committed == generated,
                "{copy} is stale or missing; regenerate it from the repository root with:\n\
                 cargo run -q -p operator --bin crdgen > crds/jarvisworkspace.yaml && \
                 cp crds/jarvisworkspace.yaml charts/jarvis/crds/jarvisworkspace.yaml"
            );
        }
    }
}
