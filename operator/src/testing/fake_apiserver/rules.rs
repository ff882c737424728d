//! What a real apiserver refuses, or does, beyond the fake's plain object store:
//! validation of custom resources against their CRD's `openAPIV3Schema`, parsing of
//! resource quantities in Pods and claims, and the immediate removal of a pod that
//! was never scheduled to a node.
//!
//! Where it is simpler than a real one: CEL rules (`x-kubernetes-validations`) and
//! defaulting are not run; validation ratcheting is approximated by validating an
//! update only when its spec changed; a quantity is checked against the regular
//! expression the real server reports (`QUANTITY_FORMAT`), not its full parser.

use std::sync::OnceLock;

use kube::CustomResourceExt;
use serde_json::Value;

use super::{ApiError, ApiResult, Kind, same_spec};
use crate::crd::JarvisWorkspace;

/// The message a real apiserver (v1.33) answers a malformed quantity with, HTTP 500.
pub const QUANTITY_REFUSAL: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// Node name the fake scheduler binds pods to.
pub const NODE: &str = "fake-node";

/// Refuse what a real apiserver would refuse to store as `kind/name`: `old` is the
/// stored object for an update, `None` for a create.
pub(super) fn admit(kind: &Kind, name: &str, old: Option<&Value>, new: &Value) -> ApiResult<()> {
    if old.is_some_and(|old| same_spec(old, new)) {
        // Ratcheting: an update that leaves the spec alone is not re-validated.
        return Ok(());
    }
    match kind.kind {
        "JarvisWorkspace" => check_schema(kind, name, new),
        "Pod" => check_pod_quantities(new),
        "PersistentVolumeClaim" => check_resource_lists(&new["spec"]["resources"]),
        _ => Ok(()),
    }
}

/// The JarvisWorkspace CRD's `openAPIV3Schema`, compiled once.
fn workspace_schema() -> Option<&'static jsonschema::Validator> {
    static VALIDATOR: OnceLock<Option<jsonschema::Validator>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| {
            let crd = JarvisWorkspace::crd();
            let schema = crd
                .spec
                .versions
                .first()?
                .schema
                .as_ref()?
                .open_api_v3_schema
                .as_ref()?;
            let schema = serde_json::to_value(schema).ok()?;
            jsonschema::validator_for(&schema).ok()
        })
        .as_ref()
}

/// 422 with one `field: Invalid value: …` cause per schema violation, as the real
/// server words it.
fn check_schema(kind: &Kind, name: &str, object: &Value) -> ApiResult<()> {
    let Some(validator) = workspace_schema() else {
        return Ok(());
    };
    // OpenAPI's `nullable` is not JSON Schema: leave null fields out.
    let object = without_nulls(object);
    let causes: Vec<String> = validator
        .iter_errors(&object)
        .map(|error| {
            let path = error
                .instance_path()
                .to_string()
                .trim_start_matches('/')
                .replace('/', ".");
            format!("{path}: Invalid value: {}: {error}", error.instance())
        })
        .collect();
    match causes.as_slice() {
        [] => Ok(()),
        [one] => Err(ApiError::invalid_custom(kind, name, one)),
        many => Err(ApiError::invalid_custom(
            kind,
            name,
            &format!("[{}]", many.join(", ")),
        )),
    }
}

fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

fn check_pod_quantities(pod: &Value) -> ApiResult<()> {
    let spec = &pod["spec"];
    for list in ["containers", "initContainers"] {
        for container in spec[list].as_array().into_iter().flatten() {
            check_resource_lists(&container["resources"])?;
        }
    }
    check_quantity(&spec["overhead"])?;
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        check_quantity(&volume["emptyDir"]["sizeLimit"])?;
        check_resource_lists(&volume["ephemeral"]["volumeClaimTemplate"]["spec"]["resources"])?;
    }
    Ok(())
}

fn check_resource_lists(resources: &Value) -> ApiResult<()> {
    for list in ["requests", "limits"] {
        for value in resources[list]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
        {
            check_quantity(value)?;
        }
    }
    Ok(())
}

/// A quantity is a JSON number or a string matching the server's format check.
fn check_quantity(value: &Value) -> ApiResult<()> {
    let ok = match value {
        Value::Null | Value::Number(_) => true,
        Value::String(text) => matches_quantity_format(text.trim()),
        Value::Object(map) => map.values().all(|v| check_quantity(v).is_ok()),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError {
            code: 500,
            reason: "InternalError",
            message: QUANTITY_REFUSAL.to_owned(),
        })
    }
}

impl ApiError {
    /// 422 for a custom resource, named `Kind.group "name"` as the real server does.
    fn invalid_custom(kind: &Kind, name: &str, why: &str) -> Self {
        Self {
            code: 422,
            reason: "Invalid",
            message: format!("{}.{} \"{name}\" is invalid: {why}", kind.kind, kind.group),
        }
    }
}

/// `^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$`, by hand.
fn matches_quantity_format(text: &str) -> bool {
    let rest = text.strip_prefix(['+', '-']).unwrap_or(text);
    let number = rest
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    if number == 0 {
        return false;
    }
    let rest = &rest[number..];
    let letters = rest
        .bytes()
        .take_while(|b| b"eEinumkKMGTP".contains(b))
        .count();
    let rest = &rest[letters..];
    let rest = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    rest.bytes().all(|b| b.is_ascii_digit())
}

/// Whether a pod was bound to a node; a real apiserver removes an unbound pod at
/// once on delete (no kubelet has to stop it).
pub(super) fn scheduled(pod: &Value) -> bool {
    pod["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantity_format_is_the_servers_regular_expression() {
        for good in ["1", "500m", "2Gi", "1e3", "+1.5", "1.2.3", "0.5Ki"] {
            assert!(matches_quantity_format(good), "{good:?}");
        }
        for bad in ["lots", "", "Gi", "1 Gi", "1GB", "1Gi!", "1-2-3"] {
            assert!(!matches_quantity_format(bad), "{bad:?}");
        }
    }
}
