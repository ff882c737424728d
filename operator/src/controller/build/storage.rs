//! The PersistentVolumeClaim of a persistent workspace and the size of the
//! workspace volume. The Pod's volume list lives in `pod.rs`.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements},
    apimachinery::pkg::api::resource::Quantity,
};

use super::{Settings, ValidWorkspace, child_meta, pvc_name};

/// The PersistentVolumeClaim behind `/workspace`, for workspaces that asked for
/// persistence; `None` otherwise.
pub fn build_pvc(ws: &ValidWorkspace, settings: &Settings) -> Option<PersistentVolumeClaim> {
    if !ws.storage.persistent {
        return None;
    }
    Some(PersistentVolumeClaim {
        metadata: child_meta(ws, pvc_name(&ws.name)),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: ws.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    workspace_size(ws, settings),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    })
}

/// Size of the workspace volume: the spec's hint, else the settings' default.
pub(super) fn workspace_size(ws: &ValidWorkspace, settings: &Settings) -> Quantity {
    ws.storage
        .size
        .clone()
        .unwrap_or_else(|| settings.default_storage_size.clone())
}

#[cfg(test)]
mod tests {
    use super::super::{build_pod, test_support::*};
    use super::*;

    #[test]
    fn persistent_storage_mounts_an_owned_claim() {
        let ws = validate(&workspace(&format!(
            "{ALICE}  storage: {{ persistent: true, size: 5Gi, storageClassName: fast }}\n"
        )))
        .expect("valid");
        let pod = json(&build_pod(&ws, &Settings::default()));
        assert_eq!(
            pod["spec"]["volumes"][0],
            yaml(
                "{name: workspace, persistentVolumeClaim: {claimName: jw-alice-workspace, readOnly: false}}"
            )
        );
        let pvc = json(&build_pvc(&ws, &Settings::default()).expect("persistent"));
        assert_eq!(pvc["metadata"]["name"], "jw-alice-workspace");
        assert_eq!(
            pvc["metadata"]["ownerReferences"][0]["kind"],
            "JarvisWorkspace"
        );
        assert_eq!(
            pvc["spec"],
            yaml(
                r#"
                accessModes: [ReadWriteOnce]
                storageClassName: fast
                resources: { requests: { storage: 5Gi } }
                "#
            )
        );
    }

    #[test]
    fn ephemeral_workspace_has_no_claim() {
        assert_eq!(build_pvc(&alice(), &Settings::default()), None);
    }
}
