//! RBAC in the fake API server, as a real one enforces it, loaded from the chart:
//! the operator and the router act as the chart's service accounts, a request
//! their Roles do not grant gets the real server's 403, and the chart grants what
//! the operator's code calls.

use std::{collections::HashMap, sync::Arc};

use axum::http::Method;
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Secret};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use operator::{
    Error,
    controller::{self, build::Settings},
    crd::JarvisWorkspace,
    metrics::Metrics,
    testing::{
        FakeApiServer,
        rbac::{Attributes, chart_rbac, rule_index, without_rule},
    },
};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NS: &str = "jarvis";
const RELEASE: &str = "jarvis";
const ROUTER: &str = "jarvis-router";
const OPERATOR: &str = "jarvis-operator";

fn rbac() -> Vec<Value> {
    chart_rbac(NS, RELEASE).expect("the chart's RBAC renders")
}

/// A fake enforcing the chart's RBAC.
async fn fake() -> FakeApiServer {
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    fake.enforce_rbac(rbac());
    fake
}

/// The raw answer (status, JSON body) to `GET path` with `token`.
async fn raw_get(fake: &FakeApiServer, path: &str, token: &str) -> (u16, Value) {
    let addr = fake.url().trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("request sent");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .expect("answer read");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, serde_json::from_str(body).expect("a JSON body"))
}

fn code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[tokio::test]
async fn a_request_the_chart_does_not_grant_gets_the_real_servers_403() {
    let fake = fake().await;
    let router = fake.service_account_token(NS, ROUTER);
    let (status, body) = raw_get(&fake, "/api/v1/namespaces/jarvis/secrets", &router).await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":"secrets is forbidden: User \"system:serviceaccount:jarvis:jarvis-router\" \
                cannot list resource \"secrets\" in API group \"\" in the namespace \"jarvis\"",
            "reason":"Forbidden","details":{"kind":"secrets"},"code":403})
    );

    // A named object of a group, a subresource, another namespace.
    let (status, body) = raw_get(
        &fake,
        "/apis/jarvis.dev/v1alpha1/namespaces/other/jarvisworkspaces/alice/status",
        &router,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":"jarvisworkspaces.jarvis.dev \"alice\" is forbidden: User \
                \"system:serviceaccount:jarvis:jarvis-router\" cannot get resource \
                \"jarvisworkspaces/status\" in API group \"jarvis.dev\" in the namespace \"other\"",
            "reason":"Forbidden",
            "details":{"name":"alice","group":"jarvis.dev","kind":"jarvisworkspaces"},"code":403})
    );

    // Cluster scope: the router's Role is namespaced.
    let (status, body) =
        raw_get(&fake, "/apis/jarvis.dev/v1alpha1/jarvisworkspaces", &router).await;
    assert_eq!(status, 403);
    assert_eq!(
        body["message"],
        "jarvisworkspaces.jarvis.dev is forbidden: User \"system:serviceaccount:jarvis:jarvis-router\" \
         cannot list resource \"jarvisworkspaces\" in API group \"jarvis.dev\" at the cluster scope"
    );

    // A token nobody was given: 401.
    let (status, body) = raw_get(&fake, "/api/v1/namespaces/jarvis/pods", "forged").await;
    assert_eq!(status, 401);
    assert_eq!(body["reason"], "Unauthorized");
}

#[test]
fn requests_map_to_verbs_like_the_apiservers() {
    let q = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let verb = |method: Method, query: HashMap<String, String>, name: Option<&str>| {
        Attributes::of(&method, &query, "", "pods", NS, name, None).verb
    };
    assert_eq!(verb(Method::GET, q(&[]), None), "list");
    assert_eq!(verb(Method::GET, q(&[("watch", "true")]), None), "watch");
    assert_eq!(verb(Method::GET, q(&[("watch", "1")]), None), "watch");
    assert_eq!(verb(Method::GET, q(&[]), Some("p")), "get");
    assert_eq!(verb(Method::POST, q(&[]), None), "create");
    assert_eq!(verb(Method::PUT, q(&[]), Some("p")), "update");
    assert_eq!(verb(Method::PATCH, q(&[]), Some("p")), "patch");
    assert_eq!(verb(Method::DELETE, q(&[]), Some("p")), "delete");
    assert_eq!(verb(Method::DELETE, q(&[]), None), "deletecollection");
    // A watch of one name is authorised for that name.
    let one = Attributes::of(
        &Method::GET,
        &q(&[("watch", "true"), ("fieldSelector", "metadata.name=jw-a")]),
        "",
        "pods",
        NS,
        None,
        None,
    );
    assert_eq!((one.verb, one.name.as_str()), ("watch", "jw-a"));
    let scale = Attributes::of(
        &Method::PATCH,
        &q(&[]),
        "jarvis.dev",
        "jarvisworkspaces",
        NS,
        Some("a"),
        Some("scale"),
    );
    assert_eq!(scale.subresource.as_deref(), Some("scale"));
}

#[tokio::test]
async fn roles_grant_by_verb_subresource_name_and_namespace() {
    let fake = fake().await;
    let operator = fake.client_as(NS, NS, OPERATOR);
    let router = fake.client_as(NS, NS, ROUTER);

    // resourceNames: the operator's own Lease only (create cannot be limited by name).
    let leases = Api::<Lease>::namespaced(operator.clone(), NS);
    let lease = |name: &str| -> Lease {
        serde_json::from_value(json!({ "metadata": { "name": name } })).expect("lease")
    };
    leases
        .create(&PostParams::default(), &lease("jarvis-operator"))
        .await
        .expect("the operator creates its Lease");
    leases.get("jarvis-operator").await.expect("and reads it");
    leases
        .create(&PostParams::default(), &lease("someone-else"))
        .await
        .expect("create is not limited by name");
    let refused = leases.get("someone-else").await.expect_err("another Lease");
    assert_eq!(code(&refused), Some(403), "{refused}");

    // The operator never reads Secrets.
    let secrets = Api::<Secret>::namespaced(operator.clone(), NS);
    let refused = secrets
        .list(&ListParams::default())
        .await
        .expect_err("secrets");
    assert_eq!(code(&refused), Some(403), "{refused}");

    // The router's Role grants in its namespace only; its Secrets: no list.
    let ws: JarvisWorkspace = serde_json::from_value(json!({
        "apiVersion": "jarvis.dev/v1alpha1", "kind": "JarvisWorkspace",
        "metadata": { "name": "alice" },
        "spec": { "user": "0b6e4c1a-2f7d-4e59-9a43-5c1d2e3f4a5b", "replicas": 0 },
    }))
    .expect("workspace");
    Api::<JarvisWorkspace>::namespaced(router.clone(), NS)
        .create(&PostParams::default(), &ws)
        .await
        .expect("the router creates a workspace in its namespace");
    let refused = Api::<JarvisWorkspace>::namespaced(router.clone(), "other")
        .create(&PostParams::default(), &ws)
        .await
        .expect_err("in another namespace");
    assert_eq!(code(&refused), Some(403), "{refused}");
    let refused = Api::<Secret>::namespaced(router.clone(), NS)
        .list(&ListParams::default())
        .await
        .expect_err("listing secrets");
    assert_eq!(code(&refused), Some(403), "{refused}");

    // The scale subresource is granted apart from the object.
    Api::<JarvisWorkspace>::namespaced(router, NS)
        .patch_scale(
            "alice",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 1 } })),
        )
        .await
        .expect("the router scales");

    // Without a token: the admin (the tests' own set-up).
    Api::<Secret>::namespaced(fake.client(NS), NS)
        .list(&ListParams::default())
        .await
        .expect("the admin lists secrets");
}

/// The operator as the chart's service account, with `objects` as the cluster's RBAC.
async fn run_operator(objects: Vec<Value>) -> Result<(), Error> {
    let fake = FakeApiServer::start().await.expect("fake apiserver");
    fake.enforce_rbac(objects);
    let metrics = Arc::new(Metrics::register(&mut Registry::default()));
    let client = fake.client_as(NS, NS, OPERATOR);
    let run = controller::run(client, Settings::default(), metrics);
    // The controller runs until stopped; only a failed start returns.
    match tokio::time::timeout(std::time::Duration::from_secs(2), run).await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}

#[tokio::test]
async fn without_its_workspaces_rule_the_operator_gets_403() {
    let objects = rbac();
    // The operator's rights are a ClusterRole named with the release namespace.
    let role = format!("{NS}-{OPERATOR}");
    let index = rule_index(&objects, &role, "jarvis.dev", "jarvisworkspaces", "list")
        .expect("the operator may list workspaces");
    let error = run_operator(without_rule(objects, &role, index))
        .await
        .expect_err("the operator cannot list workspaces");
    let Error::ListForbidden { source, .. } = &error else {
        panic!("unexpected error: {error}");
    };
    assert_eq!(code(source), Some(403), "{source}");
    assert!(
        source
            .to_string()
            .contains("cannot list resource \"jarvisworkspaces\""),
        "{source}"
    );
}
