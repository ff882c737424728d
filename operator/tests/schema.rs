//! The generated CRD schema refuses bad workspaces the way an apiserver would.
//!
//! There is no apiserver here, so each sample object goes through the two checks an
//! apiserver makes: the openAPIV3Schema (with the `jsonschema` crate) and the CEL
//! rules in `x-kubernetes-validations` (with kube's client-side CEL evaluator).

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use operator::crd::JarvisWorkspace;
use serde_json::{Value, json};

/// The CRD's `openAPIV3Schema` as JSON.
fn schema() -> Value {
    let crd = JarvisWorkspace::crd();
    let version = crd.spec.versions.first().expect("one version");
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("openAPIV3Schema");
    serde_json::to_value(schema).expect("schema serializes")
}

/// A workspace object with `spec` merged over a valid minimal spec.
fn object(spec: Value) -> Value {
    let mut full = json!({ "user": "0b6e4c1a-2f7d-4e59-9a43-5c1d2e3f4a5b" });
    if let (Some(full), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
        full.extend(extra.clone());
    }
    json!({
        "apiVersion": "jarvis.dev/v1alpha1",
        "kind": "JarvisWorkspace",
        "metadata": { "name": "alice", "namespace": "jarvis" },
        "spec": full,
    })
}

/// Errors from the OpenAPI schema, as strings.
fn openapi_errors(object: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(&schema()).expect("schema compiles");
    validator
        .iter_errors(object)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Errors from the CEL rules, as strings (`old` for transition rules).
fn cel_errors(object: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema(), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| format!("{}: {}", e.field_path, e.message))
            .collect(),
    }
}

/// Both checks' errors for a fresh object.
fn all_errors(object: &Value) -> Vec<String> {
    let mut errors = openapi_errors(object);
    errors.extend(cel_errors(object, None));
    errors
}

#[test]
fn good_specs_pass_schema_and_cel() {
    let specs = [
        json!({}),
        json!({ "replicas": 0, "idleTimeout": "90s" }),
        json!({ "replicas": 1, "idleTimeout": "1h30m", "image": "jarvis-sandbox:1.0" }),
        json!({
            "idleTimeout": "2h0m5s",
            "resources": {
                "requests": { "cpu": "100m", "memory": "256Mi" },
                "limits": { "cpu": 2, "memory": "1Gi" }
            },
            "storage": { "persistent": true, "size": "5Gi", "storageClassName": "fast" }
        }),
        json!({ "storage": { "size": "2Gi" } }),
    ];
    for spec in specs {
        let errors = all_errors(&object(spec.clone()));
        assert!(errors.is_empty(), "{spec} refused: {errors:?}");
    }
}

#[test]
fn replicas_outside_zero_to_one_are_refused() {
    for replicas in [2, -1] {
        let errors = openapi_errors(&object(json!({ "replicas": replicas })));
        assert!(
            errors.iter().any(|e| e.starts_with("/spec/replicas")),
            "replicas {replicas} accepted: {errors:?}"
        );
    }
}

#[test]
fn empty_or_unlabelable_user_is_refused() {
    for user in ["", "alice@example.com", "-alice"] {
        let errors = openapi_errors(&object(json!({ "user": user })));
        assert!(
            errors.iter().any(|e| e.starts_with("/spec/user")),
            "user {user:?} accepted: {errors:?}"
        );
    }
}

#[test]
fn missing_user_is_refused() {
    let mut object = object(json!({}));
    if let Some(spec) = object["spec"].as_object_mut() {
        spec.remove("user");
    }
    assert!(!openapi_errors(&object).is_empty());
}

#[test]
fn malformed_idle_timeouts_are_refused() {
    for value in ["fifteen minutes", "15", "", "1d", "15m1h", "1.5h", "-5m"] {
        let errors = openapi_errors(&object(json!({ "idleTimeout": value })));
        assert!(
            errors.iter().any(|e| e.starts_with("/spec/idleTimeout")),
            "idleTimeout {value:?} accepted: {errors:?}"
        );
    }
}

#[test]
fn idle_timeout_under_a_minute_is_refused_by_cel() {
    let errors = cel_errors(&object(json!({ "idleTimeout": "30s" })), None);
    assert_eq!(
        errors,
        ["spec.idleTimeout: idleTimeout must be at least 1m"]
    );
    assert!(cel_errors(&object(json!({ "idleTimeout": "1m" })), None).is_empty());
}

#[test]
fn storage_class_without_persistence_is_refused_by_cel() {
    let errors = cel_errors(
        &object(json!({ "storage": { "storageClassName": "fast" } })),
        None,
    );
    assert_eq!(
        errors,
        ["spec.storage: storageClassName needs persistent: true"]
    );
}

#[test]
fn changing_the_user_is_refused_by_cel() {
    let old = object(json!({}));
    let new = object(json!({ "user": "someone-else" }));
    assert_eq!(
        cel_errors(&new, Some(&old)),
        ["spec.user: user is immutable"]
    );
    assert!(cel_errors(&old, Some(&old)).is_empty());
}

#[test]
fn overlong_name_is_refused_by_cel() {
    let mut long = object(json!({}));
    long["metadata"]["name"] = json!("a".repeat(61));
    assert_eq!(cel_errors(&long, None).len(), 1);
}

/// The real apiserver refuses every Pod carrying a malformed quantity (500), so the
/// CRD refuses it first, with the quantity grammar as a pattern.
#[test]
fn malformed_quantities_are_refused_by_the_schema() {
    for (spec, field) in [
        (
            json!({ "resources": { "limits": { "memory": "lots" } } }),
            "/spec/resources/limits/memory",
        ),
        (
            json!({ "resources": { "requests": { "cpu": "1.2.3" } } }),
            "/spec/resources/requests/cpu",
        ),
        (
            json!({ "resources": { "requests": { "memory": "1GB" } } }),
            "/spec/resources/requests/memory",
        ),
        (
            json!({ "storage": { "size": "5 Gi" } }),
            "/spec/storage/size",
        ),
    ] {
        let errors = openapi_errors(&object(spec.clone()));
        assert_eq!(errors.len(), 1, "{spec}: {errors:?}");
        assert!(errors[0].starts_with(field), "{spec}: {errors:?}");
    }
    let good = object(json!({
        "resources": {
            "requests": { "cpu": "500m", "memory": "512Mi" },
            "limits": { "cpu": 2, "memory": "1e9" }
        },
        "storage": { "size": "0.5Ti" }
    }));
    assert_eq!(all_errors(&good), Vec::<String>::new());
}

#[test]
fn crd_declares_scale_status_printer_columns_and_cel_rules() {
    let crd = serde_json::to_value(JarvisWorkspace::crd()).expect("CRD serializes");
    assert_eq!(crd["spec"]["group"], "jarvis.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["jw"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(
        version["subresources"],
        json!({
            "status": {},
            "scale": { "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas" }
        })
    );
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "User",
            "Phase",
            "Replicas",
            "Last Active",
            "Age",
            "Endpoint",
            "Pod",
            "Image"
        ]
    );

    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let rules = |field: &Value| -> Vec<String> {
        field["x-kubernetes-validations"]
            .as_array()
            .map(|rules| rules.iter().map(|r| r["rule"].to_string()).collect())
            .unwrap_or_default()
    };
    assert_eq!(rules(&spec["properties"]["user"]), [r#""self == oldSelf""#]);
    assert_eq!(
        rules(&spec["properties"]["idleTimeout"]),
        [r#""duration(self) >= duration('1m')""#]
    );
    assert_eq!(rules(&spec["properties"]["storage"]).len(), 1);
    assert_eq!(rules(&version["schema"]["openAPIV3Schema"]).len(), 1);
}
