//! The fake API server answers the way a real one does, as seen through kube's
//! client: errors, versions, watches, finalizers, garbage collection, scale and
//! the kubelet.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{
    Api, Resource,
    api::{DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
};
use operator::{crd::JarvisWorkspace, testing::FakeApiServer};
use serde_json::json;

const NS: &str = "jarvis";
const WAIT: Duration = Duration::from_secs(30);

fn workspace(name: &str) -> JarvisWorkspace {
    serde_json::from_value(json!({
        "apiVersion": "jarvis.dev/v1alpha1", "kind": "JarvisWorkspace",
        "metadata": { "name": name, "namespace": NS },
        "spec": { "user": "u1", "replicas": 1 },
    }))
    .expect("workspace parses")
}

fn api_code(error: kube::Error) -> (u16, String) {
    match error {
        kube::Error::Api(status) => (status.code, status.reason),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn errors_versions_and_generations_look_real() {
    let fake = FakeApiServer::start().await.expect("fake");
    let api = Api::<JarvisWorkspace>::namespaced(fake.client(NS), NS);

    let missing = api.get("nobody").await.expect_err("missing");
    assert_eq!(api_code(missing), (404, "NotFound".to_owned()));

    let created = api
        .create(&PostParams::default(), &workspace("alice"))
        .await
        .expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    let again = api
        .create(&PostParams::default(), &workspace("alice"))
        .await
        .expect_err("duplicate");
    assert_eq!(api_code(again), (409, "AlreadyExists".to_owned()));

    // A spec change bumps generation; a status change does not.
    let scaled = api
        .patch(
            "alice",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 0 } })),
        )
        .await
        .expect("merge patch");
    assert_eq!(scaled.metadata.generation, Some(2));
    let with_status = api
        .patch_status(
            "alice",
            &PatchParams::apply("test").force(),
            &Patch::Apply(json!({
                "apiVersion": "jarvis.dev/v1alpha1", "kind": "JarvisWorkspace",
                "status": { "phase": "Sleeping", "replicas": 0 },
            })),
        )
        .await
        .expect("status apply");
    assert_eq!(with_status.metadata.generation, Some(2));
    let rv = |ws: &JarvisWorkspace| {
        ws.metadata
            .resource_version
            .clone()
            .unwrap_or_default()
            .parse::<u64>()
            .expect("numeric resourceVersion")
    };
    assert!(rv(&with_status) > rv(&scaled));

    // An update from a stale read is refused.
    let stale = api
        .replace("alice", &PostParams::default(), &scaled)
        .await
        .expect_err("stale update");
    assert_eq!(api_code(stale), (409, "Conflict".to_owned()));

    // The scale subresource reads and writes spec.replicas.
    let scale = api.get_scale("alice").await.expect("scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(0));
    api.patch_scale(
        "alice",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "replicas": 1 } })),
    )
    .await
    .expect("scale patch");
    assert_eq!(api.get("alice").await.expect("get").spec.replicas, 1);
}

#[tokio::test]
async fn watch_resumes_from_a_version_and_sends_bookmarks() {
    let fake = FakeApiServer::start().await.expect("fake");
    let api = Api::<JarvisWorkspace>::namespaced(fake.client(NS), NS);
    let first = api
        .create(&PostParams::default(), &workspace("alice"))
        .await
        .expect("create");
    let from = first.metadata.resource_version.clone().expect("rv");
    api.create(&PostParams::default(), &workspace("bob"))
        .await
        .expect("create");

    let mut events = api
        .watch(&WatchParams::default(), &from)
        .await
        .expect("watch")
        .boxed();
    let (mut saw_bob, mut saw_bookmark) = (false, false);
    tokio::time::timeout(WAIT, async {
        while !(saw_bob && saw_bookmark) {
            match events.try_next().await.expect("watch stream") {
                Some(WatchEvent::Added(ws)) => {
                    assert_eq!(
                        ws.metadata.name.as_deref(),
                        Some("bob"),
                        "only what came after {from}"
                    );
                    saw_bob = true;
                }
                Some(WatchEvent::Bookmark(_)) => saw_bookmark = true,
                Some(other) => panic!("unexpected event {other:?}"),
                None => panic!("watch ended"),
            }
        }
    })
    .await
    .expect("bob and a bookmark arrive");
}

#[tokio::test]
async fn finalizers_hold_deletion_and_owners_take_children_along() {
    let fake = FakeApiServer::start().await.expect("fake");
    let client = fake.client(NS);
    let api = Api::<JarvisWorkspace>::namespaced(client.clone(), NS);
    let secrets = Api::<Secret>::namespaced(client.clone(), NS);
    let mut ws = workspace("alice");
    ws.metadata.finalizers = Some(vec!["test/hold".to_owned()]);
    let ws = api
        .create(&PostParams::default(), &ws)
        .await
        .expect("create");
    let owner = ws.controller_owner_ref(&()).expect("owner reference");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "jw-alice-token", "ownerReferences": [owner] },
        "stringData": { "token": "t" },
    }))
    .expect("secret parses");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");

    let held = api
        .delete("alice", &DeleteParams::default())
        .await
        .expect("delete");
    let held = held.left().expect("still there while the finalizer holds");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(
        secrets
            .get_opt("jw-alice-token")
            .await
            .expect("get")
            .is_some()
    );

    api.patch(
        "alice",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
    )
    .await
    .expect("finalizer removed");
    assert!(api.get_opt("alice").await.expect("get").is_none());
    assert!(
        secrets
            .get_opt("jw-alice-token")
            .await
            .expect("get")
            .is_none(),
        "the owned secret is garbage-collected"
    );
}

#[tokio::test]
async fn the_kubelet_runs_and_removes_pods() {
    let fake = FakeApiServer::start().await.expect("fake");
    let pods = Api::<Pod>::namespaced(fake.client(NS), NS);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "p" },
        "spec": { "containers": [{ "name": "c", "image": "i" }] },
    }))
    .expect("pod parses");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create");
    let ready = tokio::time::timeout(
        WAIT,
        kube::runtime::wait::await_condition(pods.clone(), "p", |pod: Option<&Pod>| {
            pod.and_then(|p| p.status.as_ref()?.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        }),
    )
    .await
    .expect("ready in time")
    .expect("watch")
    .expect("pod");
    let status = ready.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert!(status.pod_ip.is_some());

    pods.delete("p", &DeleteParams::default())
        .await
        .expect("delete");
    tokio::time::timeout(
        WAIT,
        kube::runtime::wait::await_condition(
            pods,
            "p",
            kube::runtime::wait::conditions::is_deleted(""),
        ),
    )
    .await
    .expect("gone in time")
    .expect("watch");
}

#[tokio::test]
async fn an_apply_body_is_read_as_json_or_as_yaml_proper() {
    let fake = FakeApiServer::start().await.expect("fake");
    let client = fake.client(NS);
    let apply = |body: &str| {
        http::Request::patch(format!(
            "/api/v1/namespaces/{NS}/secrets/token?fieldManager=test&force=true"
        ))
        .header("content-type", "application/apply-patch+yaml")
        .body(body.as_bytes().to_vec())
        .expect("request builds")
    };
    client
        .request_text(apply(
            r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"token"},"stringData":{"a":"1"}}"#,
        ))
        .await
        .expect("JSON applies");
    client
        .request_text(apply(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: token\nstringData:\n  b: '2'\n",
        ))
        .await
        .expect("YAML applies");
    let secret = Api::<Secret>::namespaced(fake.client(NS), NS)
        .get("token")
        .await
        .expect("stored");
    let data = secret.string_data.unwrap_or_default();
    assert_eq!(
        (data.get("a"), data.get("b")),
        (Some(&"1".to_owned()), Some(&"2".to_owned()))
    );
    let refused = client
        .request_text(apply("metadata: [unclosed"))
        .await
        .expect_err("neither JSON nor YAML");
    assert_eq!(api_code(refused), (400, "BadRequest".to_owned()));
}
