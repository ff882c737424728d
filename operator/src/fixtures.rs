//! Test-only helpers: workspace objects and a mocked apiserver that checks each
//! request the reconciler makes (method, path, body) and answers like a real one.

use std::{sync::Arc, time::Duration};

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::{
    api::core::v1::{Pod, PodCondition, PodStatus},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{Client, Resource, ResourceExt, client::Body};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle};

use crate::{
    controller::{
        Context, FINALIZER,
        build::{self, Settings},
    },
    crd::{JarvisWorkspace, JarvisWorkspaceStatus, WorkspacePhase},
    metrics::Metrics,
};

/// Alice's workspace, as stored: uid, generation, namespace `jarvis`, replicas 1.
pub fn alice() -> JarvisWorkspace {
    serde_yaml::from_str(
        r#"
apiVersion: jarvis.dev/v1alpha1
kind: JarvisWorkspace
metadata:
  name: alice
  namespace: jarvis
  uid: 6f1c2f0e-0000-4000-8000-00000000a11c
  generation: 2
spec:
  user: 0b6e4c1a-2f7d-4e59-9a43-5c1d2e3f4a5b
"#,
    )
    .expect("fixture parses")
}

impl JarvisWorkspace {
    /// With the operator's finalizer, as after the first reconcile.
    pub fn finalized(mut self) -> Self {
        self.finalizers_mut().push(FINALIZER.to_owned());
        self
    }

    /// With `spec.replicas` set.
    pub fn with_replicas(mut self, replicas: i32) -> Self {
        self.spec.replicas = replicas;
        self
    }

    /// Ready, with the router's last activity at `last_activity`.
    pub fn ready_since(mut self, last_activity: Timestamp) -> Self {
        self.status = Some(JarvisWorkspaceStatus {
            phase: Some(WorkspacePhase::Ready),
            endpoint: Some("jw-alice.jarvis.svc:7070".to_owned()),
            last_activity: Some(Time(last_activity)),
            replicas: 1,
            ..JarvisWorkspaceStatus::default()
        });
        self
    }

    /// Marked for deletion.
    pub fn deleting(mut self) -> Self {
        self.meta_mut().deletion_timestamp = Some(Time(Timestamp::now()));
        self
    }
}

/// A test context whose client talks to the returned mock apiserver.
pub fn context() -> (Arc<Context>, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let metrics = Arc::new(Metrics::default());
    (
        Arc::new(Context::new(client, Settings::default(), metrics)),
        ApiServer(handle),
    )
}

/// Wait for the mock apiserver's script to finish (its answer: the server, or what the script read), failing after a second.
pub async fn timeout_after_1s<T>(handle: JoinHandle<T>) -> T {
    tokio::time::timeout(Duration::from_secs(1), handle)
        .await
        .expect("apiserver script finished in time")
        .expect("apiserver script did not panic")
}

/// One request the reconciler made, read in full.
pub struct Seen {
    /// HTTP method.
    pub method: Method,
    /// Path without the query.
    pub path: String,
    /// Query string.
    pub query: String,
    /// JSON body (`Null` when empty).
    pub body: Value,
}

/// The mocked apiserver: each `expect_*` step takes the next request, asserts on it
/// and answers.
pub struct ApiServer(Handle<Request<Body>, Response<Body>>);

/// The uid of the pod [`ApiServer::expect_pod`] answers with.
pub const POD_UID: &str = "00000000-0000-4000-8000-00000000a11c";

const WS_PATH: &str = "/apis/jarvis.dev/v1alpha1/namespaces/jarvis/jarvisworkspaces/alice";

impl ApiServer {
    async fn next(&mut self, answer: impl FnOnce(&Seen) -> (StatusCode, Value)) -> Seen {
        let (request, respond) = self.0.next_request().await.expect("a request was made");
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .expect("body reads");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("body is JSON")
        };
        let seen = Seen {
            method,
            path,
            query,
            body,
        };
        let (status, reply) = answer(&seen);
        let response = Response::builder()
            .status(status)
            .body(Body::from(
                serde_json::to_vec(&reply).expect("reply serializes"),
            ))
            .expect("response builds");
        respond.send_response(response);
        seen
    }

    /// The finalizer is added with a JSON patch.
    pub async fn expect_finalizer_added(&mut self, ws: &JarvisWorkspace) {
        let reply = serde_json::to_value(ws.clone().finalized()).expect("ws serializes");
        let seen = self.next(|_| (StatusCode::OK, reply)).await;
        assert_eq!(seen.method, Method::PATCH);
        assert_eq!(seen.path, WS_PATH);
        assert_eq!(
            seen.body,
            json!([
                { "op": "test", "path": "/metadata/finalizers", "value": null },
                { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] }
            ])
        );
    }

    /// The finalizer is removed after cleanup.
    pub async fn expect_finalizer_removed(&mut self, ws: &JarvisWorkspace) {
        let reply = serde_json::to_value(ws).expect("ws serializes");
        let seen = self.next(|_| (StatusCode::OK, reply)).await;
        assert_eq!(seen.method, Method::PATCH);
        assert_eq!(seen.path, WS_PATH);
        assert_eq!(
            seen.body,
            json!([
                { "op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER },
                { "op": "remove", "path": "/metadata/finalizers/0" }
            ])
        );
    }

    /// The finalizer removal finds the workspace gone (404).
    pub async fn expect_finalizer_removal_not_found(&mut self) {
        let seen = self
            .next(|_| {
                (
                    StatusCode::NOT_FOUND,
                    not_found("jarvisworkspaces.jarvis.dev", "alice"),
                )
            })
            .await;
        assert_eq!(seen.method, Method::PATCH);
        assert_eq!(seen.path, WS_PATH);
    }

    /// A child object is server-side applied at `path`, exactly as `expected`;
    /// the apiserver answers with `reply` (defaults to the object itself).
    pub async fn expect_apply(&mut self, path: &str, expected: Value, reply: Option<Value>) {
        let reply = reply.unwrap_or_else(|| expected.clone());
        let seen = self.next(|_| (StatusCode::OK, reply)).await;
        assert_eq!(
            (seen.method.clone(), seen.path.as_str()),
            (Method::PATCH, path)
        );
        assert_ssa(&seen);
        assert_eq!(seen.body, expected, "applied object at {path}");
    }

    /// The network policy and the service are applied, as built.
    pub async fn expect_network(&mut self, ws: &JarvisWorkspace) {
        let valid = build::validate(ws).expect("fixture is valid");
        let settings = Settings::default();
        let policy =
            serde_json::to_value(build::build_network_policy(&valid, &settings)).expect("json");
        self.expect_apply(
            "/apis/networking.k8s.io/v1/namespaces/jarvis/networkpolicies/jw-alice",
            policy,
            None,
        )
        .await;
        let service = serde_json::to_value(build::build_service(&valid, &settings)).expect("json");
        self.expect_apply("/api/v1/namespaces/jarvis/services/jw-alice", service, None)
            .await;
    }

    /// The pod is applied as built; the apiserver answers with it ready or not.
    pub async fn expect_pod(&mut self, ws: &JarvisWorkspace, ready: bool) {
        let valid = build::validate(ws).expect("fixture is valid");
        let mut pod = build::build_pod(&valid, &Settings::default());
        let expected = serde_json::to_value(&pod).expect("json");
        pod.metadata.uid = Some(POD_UID.to_owned());
        pod.status = Some(PodStatus {
            phase: Some("Running".to_owned()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".to_owned(),
                status: if ready { "True" } else { "False" }.to_owned(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        let reply = serde_json::to_value(&pod).expect("json");
        self.expect_apply(
            "/api/v1/namespaces/jarvis/pods/jw-alice",
            expected,
            Some(reply),
        )
        .await;
    }

    /// The pod apply is refused as invalid (422), as for a changed immutable field.
    pub async fn expect_pod_refused(&mut self, ws: &JarvisWorkspace) {
        let valid = build::validate(ws).expect("fixture is valid");
        let expected =
            serde_json::to_value(build::build_pod(&valid, &Settings::default())).expect("json");
        let refusal = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Pod \"jw-alice\" is invalid: spec: Forbidden: pod updates may not change fields other than image",
            "reason": "Invalid", "code": 422
        });
        let seen = self
            .next(|_| (StatusCode::UNPROCESSABLE_ENTITY, refusal))
            .await;
        assert_eq!(seen.path, "/api/v1/namespaces/jarvis/pods/jw-alice");
        assert_eq!(seen.body, expected);
        self.expect_pod_lookup(true).await;
    }

    /// The pod apply is refused with `code` and `message`, as a real apiserver
    /// refuses what it cannot store (a 500 for a malformed quantity, a 403 from a
    /// quota or an admission webhook).
    pub async fn expect_pod_apply_failed(&mut self, code: StatusCode, reason: &str, message: &str) {
        let refusal = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16()
        });
        let seen = self.next(|_| (code, refusal)).await;
        assert_eq!(seen.method, Method::PATCH);
        assert_eq!(seen.path, "/api/v1/namespaces/jarvis/pods/jw-alice");
        assert_ssa(&seen);
    }

    /// The pod is looked up; the apiserver answers with it or 404.
    pub async fn expect_pod_lookup(&mut self, exists: bool) {
        let seen = self
            .next(|_| {
                if exists {
                    let mut pod = terminating_pod();
                    pod.metadata.deletion_timestamp = None;
                    pod.metadata.deletion_grace_period_seconds = None;
                    (StatusCode::OK, serde_json::to_value(pod).expect("json"))
                } else {
                    (StatusCode::NOT_FOUND, not_found("pods", "jw-alice"))
                }
            })
            .await;
        assert_eq!(seen.method, Method::GET);
        assert_eq!(seen.path, "/api/v1/namespaces/jarvis/pods/jw-alice");
    }

    /// The pod is deleted and, never scheduled, removed at once: a real apiserver
    /// answers 200 with the pod's body (grace period 0), not 404 and not a Status.
    pub async fn expect_pod_deleted_at_once(&mut self) {
        let seen = self
            .next(|_| {
                let mut pod = terminating_pod();
                pod.metadata.deletion_grace_period_seconds = Some(0);
                (StatusCode::OK, serde_json::to_value(pod).expect("json"))
            })
            .await;
        assert_eq!(seen.method, Method::DELETE);
        assert_eq!(seen.path, "/api/v1/namespaces/jarvis/pods/jw-alice");
    }

    /// The pod is deleted; the apiserver answers 404 (already gone) or with the
    /// terminating pod.
    pub async fn expect_pod_deleted(&mut self, still_there: bool) {
        let seen = self
            .next(|_| {
                if still_there {
                    (
                        StatusCode::OK,
                        serde_json::to_value(terminating_pod()).expect("json"),
                    )
                } else {
                    (StatusCode::NOT_FOUND, not_found("pods", "jw-alice"))
                }
            })
            .await;
        assert_eq!(seen.method, Method::DELETE);
        assert_eq!(seen.path, "/api/v1/namespaces/jarvis/pods/jw-alice");
    }

    /// The scale subresource is patched to 0, as `kubectl scale --replicas=0` does.
    pub async fn expect_scaled_to_zero(&mut self) {
        let reply = json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": { "name": "alice", "namespace": "jarvis" },
            "spec": { "replicas": 0 }, "status": { "replicas": 1 }
        });
        let seen = self.next(|_| (StatusCode::OK, reply)).await;
        assert_eq!(seen.method, Method::PATCH);
        assert_eq!(seen.path, format!("{WS_PATH}/scale"));
        assert_eq!(seen.body, json!({ "spec": { "replicas": 0 } }));
    }

    /// The status is server-side applied; returns the status sent.
    pub async fn expect_status(&mut self, ws: &JarvisWorkspace) -> JarvisWorkspaceStatus {
        let mut stored = ws.clone();
        let seen = self
            .next(|seen| {
                stored.status = serde_json::from_value(seen.body["status"].clone()).ok();
                (StatusCode::OK, serde_json::to_value(&stored).expect("json"))
            })
            .await;
        assert_eq!(seen.method, Method::PATCH);
        assert_eq!(seen.path, format!("{WS_PATH}/status"));
        assert_ssa(&seen);
        assert_eq!(seen.body["apiVersion"], "jarvis.dev/v1alpha1");
        assert_eq!(seen.body["kind"], "JarvisWorkspace");
        assert!(
            seen.body["status"].get("lastActivity").is_none(),
            "the operator must not take over the router's lastActivity"
        );
        serde_json::from_value(seen.body["status"].clone()).expect("status parses")
    }

    /// No further request arrives within 100 ms.
    pub async fn expect_silence(&mut self) {
        let next = tokio::time::timeout(Duration::from_millis(100), self.0.next_request()).await;
        if let Ok(Some((request, _))) = next {
            panic!("unexpected request: {} {}", request.method(), request.uri());
        }
    }
}

fn assert_ssa(seen: &Seen) {
    assert!(
        seen.query.contains("fieldManager=jarvis-operator") && seen.query.contains("force=true"),
        "server-side apply by jarvis-operator, forced: {}",
        seen.query
    );
}

fn terminating_pod() -> Pod {
    let mut pod = Pod::default();
    pod.metadata.name = Some("jw-alice".to_owned());
    pod.metadata.namespace = Some("jarvis".to_owned());
    pod.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    pod.metadata.deletion_grace_period_seconds = Some(30);
    pod
}

fn not_found(resource: &str, name: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{resource} \"{name}\" not found"), "reason": "NotFound",
        "details": { "name": name, "kind": resource }, "code": 404
    })
}
