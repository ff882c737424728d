//! The validate step: checks a `JarvisWorkspace` once and turns it into a
//! [`ValidWorkspace`] the builders can trust.
//!
//! The CRD schema already refuses these specs; this step exists because an object can
//! predate the current schema, and because the builders need facts the schema cannot
//! promise (a uid for owner references, a namespace). It owns no I/O.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::{
    JarvisWorkspace, MAX_NAME_LEN, WorkspaceResources, WorkspaceStorage, parse_duration,
};

/// Shortest idle timeout the operator honours (the CRD's CEL rule says the same).
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a workspace cannot be reconciled. Each variant names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The object has no namespace (the CRD is namespaced, so only a hand-made object).
    #[error("workspace {name} has no namespace")]
    MissingNamespace {
        /// Workspace name.
        name: String,
    },
    /// The object has no uid yet, so children cannot reference it as their owner.
    #[error("workspace {name} has no uid")]
    MissingUid {
        /// Workspace name.
        name: String,
    },
    /// The name is too long (or empty) for the `jw-<name>` children.
    #[error("workspace name {name:?} must be 1 to {MAX_NAME_LEN} characters")]
    BadName {
        /// Workspace name.
        name: String,
    },
    /// `spec.user` is empty or not a valid label value.
    #[error("spec.user {user:?} must be a label value (1-63 of [A-Za-z0-9._-], alphanumeric ends)")]
    BadUser {
        /// The refused user id.
        user: String,
    },
    /// `spec.replicas` is outside 0..=1.
    #[error("spec.replicas must be 0 or 1, not {replicas}")]
    BadReplicas {
        /// The refused count.
        replicas: i32,
    },
    /// `spec.idleTimeout` does not parse.
    #[error("spec.idleTimeout {value:?} is not a duration like 15m, 90s or 1h30m")]
    BadIdleTimeout {
        /// The refused text.
        value: String,
    },
    /// `spec.idleTimeout` parses but is under [`MIN_IDLE_TIMEOUT`].
    #[error("spec.idleTimeout {value:?} is shorter than 1m")]
    IdleTimeoutTooShort {
        /// The refused text.
        value: String,
    },
    /// `spec.image` is present but empty.
    #[error("spec.image must not be empty")]
    EmptyImage,
    /// A resource or storage amount is not a Kubernetes quantity; the apiserver
    /// would refuse every Pod carrying it.
    #[error("{field} {value:?} is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 2Gi): {reason}")]
    BadQuantity {
        /// Path of the field, e.g. `spec.resources.limits.memory`.
        field: String,
        /// The refused text.
        value: String,
        /// What is wrong with it.
        reason: crate::quantity::QuantityError,
    },
    /// `spec.storage.storageClassName` is set without `persistent: true`.
    #[error("spec.storage.storageClassName needs spec.storage.persistent: true")]
    StorageClassWithoutPersistence,
}

/// A workspace that passed [`validate`]: everything the builders need, already checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidWorkspace {
    /// Workspace name (also the `jarvis.dev/workspace` label).
    pub name: String,
    /// Workspace namespace; children live here too.
    pub namespace: String,
    /// Controller owner reference to the workspace.
    pub owner_ref: OwnerReference,
    /// The owning user's id, a valid label value.
    pub user: String,
    /// Desired sandbox pods, 0 or 1.
    pub replicas: i32,
    /// Image from the spec, if any (the builders fall back to the settings).
    pub image: Option<String>,
    /// Resources from the spec, if any (merged over the settings' defaults).
    pub resources: WorkspaceResources,
    /// Parsed idle timeout.
    pub idle_timeout: Duration,
    /// Storage hints from the spec.
    pub storage: WorkspaceStorage,
}

/// Check a workspace and extract what the builders need.
pub fn validate(ws: &JarvisWorkspace) -> Result<ValidWorkspace, ValidationError> {
    let name = ws.name_any();
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(ValidationError::BadName { name });
    }
    let namespace = ws
        .namespace()
        .ok_or_else(|| ValidationError::MissingNamespace { name: name.clone() })?;
    let owner_ref = ws
        .controller_owner_ref(&())
        .ok_or_else(|| ValidationError::MissingUid { name: name.clone() })?;
    let spec = &ws.spec;
    if !is_label_value(&spec.user) {
        return Err(ValidationError::BadUser {
            user: spec.user.clone(),
        });
    }
    if !(0..=1).contains(&spec.replicas) {
        return Err(ValidationError::BadReplicas {
            replicas: spec.replicas,
        });
    }
    let idle_timeout =
        parse_duration(&spec.idle_timeout).ok_or_else(|| ValidationError::BadIdleTimeout {
            value: spec.idle_timeout.clone(),
        })?;
    if idle_timeout < MIN_IDLE_TIMEOUT {
        return Err(ValidationError::IdleTimeoutTooShort {
            value: spec.idle_timeout.clone(),
        });
    }
    if spec.image.as_deref().is_some_and(str::is_empty) {
        return Err(ValidationError::EmptyImage);
    }
    let resources = spec.resources.clone().unwrap_or_default();
    check_quantities(&resources, spec.storage.as_ref())?;
    let storage = spec.storage.clone().unwrap_or_default();
    if storage.storage_class_name.is_some() && !storage.persistent {
        return Err(ValidationError::StorageClassWithoutPersistence);
    }
    Ok(ValidWorkspace {
        name,
        namespace,
        owner_ref,
        user: spec.user.clone(),
        replicas: spec.replicas,
        image: spec.image.clone(),
        resources,
        idle_timeout,
        storage,
    })
}

/// Check every quantity of the spec, naming the first bad field.
fn check_quantities(
    resources: &WorkspaceResources,
    storage: Option<&WorkspaceStorage>,
) -> Result<(), ValidationError> {
    let amounts = [
        ("requests", resources.requests.as_ref()),
        ("limits", resources.limits.as_ref()),
    ];
    let mut fields = Vec::new();
    for (list, amounts) in amounts {
        if let Some(amounts) = amounts {
            fields.push((format!("spec.resources.{list}.cpu"), amounts.cpu.as_ref()));
            fields.push((
                format!("spec.resources.{list}.memory"),
                amounts.memory.as_ref(),
            ));
        }
    }
    fields.push((
        "spec.storage.size".to_owned(),
        storage.and_then(|s| s.size.as_ref()),
    ));
    for (field, value) in fields {
        if let Some(Quantity(text)) = value {
            crate::quantity::check(text).map_err(|reason| ValidationError::BadQuantity {
                field,
                value: text.clone(),
                reason,
            })?;
        }
    }
    Ok(())
}

/// Whether `text` is a Kubernetes label value that is not empty: the rule
/// `crd::USER_PATTERN` states for the apiserver.
fn is_label_value(text: &str) -> bool {
    let bytes = text.as_bytes();
    let inner_ok = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= 63
                && first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes.iter().all(inner_ok)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ALICE, workspace};
    use super::*;
    use crate::crd::ResourceAmounts;

    fn alice_with(
        edit: impl FnOnce(&mut JarvisWorkspace),
    ) -> Result<ValidWorkspace, ValidationError> {
        let mut ws = workspace(ALICE);
        edit(&mut ws);
        validate(&ws)
    }

    #[test]
    fn valid_workspace_carries_owner_ref_and_parsed_timeout() {
        let valid = alice_with(|_| {}).expect("valid");
        assert_eq!(valid.owner_ref.kind, "JarvisWorkspace");
        assert_eq!(valid.owner_ref.api_version, "jarvis.dev/v1alpha1");
        assert_eq!(valid.owner_ref.name, "alice");
        assert_eq!(valid.owner_ref.uid, "6f1c2f0e-0000-4000-8000-00000000a11c");
        assert_eq!(valid.owner_ref.controller, Some(true));
        assert_eq!(valid.idle_timeout, Duration::from_secs(900));
    }

    #[test]
    fn replicas_outside_zero_and_one_are_refused() {
        for replicas in [2, -1] {
            let err = alice_with(|ws| ws.spec.replicas = replicas).expect_err("refused");
            assert_eq!(err, ValidationError::BadReplicas { replicas });
        }
    }

    #[test]
    fn empty_or_unlabelable_user_is_refused() {
        for user in ["", "-alice", "alice@example.com", &"a".repeat(64)] {
            let err = alice_with(|ws| ws.spec.user = user.to_owned()).expect_err("refused");
            assert!(
                matches!(err, ValidationError::BadUser { .. }),
                "{user:?}: {err}"
            );
        }
    }

    #[test]
    fn malformed_or_short_idle_timeouts_are_refused() {
        for value in ["fifteen minutes", "15", "", "1d"] {
            let err =
                alice_with(|ws| ws.spec.idle_timeout = value.to_owned()).expect_err("refused");
            assert!(
                matches!(err, ValidationError::BadIdleTimeout { .. }),
                "{value:?}"
            );
        }
        let err = alice_with(|ws| ws.spec.idle_timeout = "30s".to_owned()).expect_err("refused");
        assert!(matches!(err, ValidationError::IdleTimeoutTooShort { .. }));
    }

    #[test]
    fn workspace_without_uid_or_namespace_is_refused() {
        let err = alice_with(|ws| ws.metadata.uid = None).expect_err("refused");
        assert!(matches!(err, ValidationError::MissingUid { .. }));
        let err = alice_with(|ws| ws.metadata.namespace = None).expect_err("refused");
        assert!(matches!(err, ValidationError::MissingNamespace { .. }));
    }

    #[test]
    fn overlong_name_is_refused() {
        let err = alice_with(|ws| ws.metadata.name = Some("a".repeat(61))).expect_err("refused");
        assert!(matches!(err, ValidationError::BadName { .. }));
    }

    #[test]
    fn storage_class_without_persistence_is_refused() {
        let err = alice_with(|ws| {
            ws.spec.storage = Some(WorkspaceStorage {
                storage_class_name: Some("fast".to_owned()),
                ..WorkspaceStorage::default()
            })
        })
        .expect_err("refused");
        assert_eq!(err, ValidationError::StorageClassWithoutPersistence);
    }

    #[test]
    fn malformed_quantities_are_refused_with_their_field() {
        let err = alice_with(|ws| {
            ws.spec.resources = Some(WorkspaceResources {
                limits: Some(ResourceAmounts {
                    memory: Some(Quantity("lots".to_owned())),
                    ..ResourceAmounts::default()
                }),
                ..WorkspaceResources::default()
            })
        })
        .expect_err("refused");
        assert!(
            matches!(&err, ValidationError::BadQuantity { field, value, .. }
                if field == "spec.resources.limits.memory" && value == "lots"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("spec.resources.limits.memory \"lots\" is not a Kubernetes quantity"),
            "{err}"
        );
        let err = alice_with(|ws| {
            ws.spec.resources = Some(WorkspaceResources {
                requests: Some(ResourceAmounts {
                    cpu: Some(Quantity("1.2.3".to_owned())),
                    ..ResourceAmounts::default()
                }),
                ..WorkspaceResources::default()
            })
        })
        .expect_err("refused");
        assert!(
            matches!(&err, ValidationError::BadQuantity { field, .. } if field == "spec.resources.requests.cpu")
        );
        let err = alice_with(|ws| {
            ws.spec.storage = Some(WorkspaceStorage {
                size: Some(Quantity("5GB".to_owned())),
                ..WorkspaceStorage::default()
            })
        })
        .expect_err("refused");
        assert!(
            matches!(&err, ValidationError::BadQuantity { field, .. } if field == "spec.storage.size")
        );
    }

    #[test]
    fn good_quantities_pass() {
        let valid = alice_with(|ws| {
            ws.spec.resources = Some(WorkspaceResources {
                requests: Some(ResourceAmounts {
                    cpu: Some(Quantity("500m".to_owned())),
                    memory: Some(Quantity("512Mi".to_owned())),
                }),
                limits: Some(ResourceAmounts {
                    cpu: Some(Quantity("2".to_owned())),
                    memory: Some(Quantity("2Gi".to_owned())),
                }),
            });
            ws.spec.storage = Some(WorkspaceStorage {
                size: Some(Quantity("5Gi".to_owned())),
                ..WorkspaceStorage::default()
            });
        })
        .expect("valid");
        assert_eq!(valid.storage.size, Some(Quantity("5Gi".to_owned())));
    }

    #[test]
    fn empty_image_is_refused() {
        let err = alice_with(|ws| ws.spec.image = Some(String::new())).expect_err("refused");
        assert_eq!(err, ValidationError::EmptyImage);
    }
}
