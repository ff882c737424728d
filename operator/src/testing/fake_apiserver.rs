//! A wire-level fake Kubernetes API server for tests: an axum server on
//! `127.0.0.1:0` that speaks the REST protocol real clients use (kube-rs, `kubectl`)
//! for the resources Jarvis touches, plus a "kubelet" that marks pods Running and
//! Ready and removes pods being deleted.
//!
//! What it does like a real apiserver: get, list and watch (label and field
//! selectors, `resourceVersion`, `allowWatchBookmarks` → BOOKMARK events, JSON lines),
//! create (409 when the name is taken), update (409 on a stale `resourceVersion`),
//! server-side apply, merge, strategic-merge (treated as merge) and JSON patches,
//! delete with finalizers (`deletionTimestamp` while finalizers remain) and owner
//! reference garbage collection (the controller-manager's job in a real cluster),
//! the `status` and `scale` subresources, `resourceVersion` and `generation` bumps,
//! `Status` error bodies, and the discovery endpoints `kubectl` needs.
//!
//! Where it is simpler than a real one: server-side apply merges the applied object
//! into the stored one (maps merged, lists replaced) and never removes fields a
//! manager stopped applying, nor reports field-manager conflicts; no defaulting, and
//! of validation only the CRD schema and quantities ([`rules`]); a pod's spec may not
//! change except its images (422, as for a real pod); `kubectl get` gets plain lists,
//! not tables; openapi is 404. The scheduler binds each new pod to one node at once
//! (unless stopped); an unscheduled pod is removed at once on delete ([`rules`]).

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use futures::{SinkExt, channel::mpsc, future::BoxFuture};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};
use tokio::{net::TcpListener, sync::broadcast, task::JoinHandle};

/// What a real apiserver refuses or does beyond the plain store.
pub mod rules;

/// One kind of object the fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kind {
    /// API group, `""` for the core group.
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// URL plural, e.g. `pods`.
    pub plural: &'static str,
    /// Singular, e.g. `pod`.
    pub singular: &'static str,
    /// `kind`, e.g. `Pod`.
    pub kind: &'static str,
    /// Short names (`kubectl get jw`).
    pub short_names: &'static [&'static str],
    /// Whether the kind has a `/status` subresource.
    pub status: bool,
    /// `spec` and `status` paths of the scale subresource's replicas, if any.
    pub scale: Option<(&'static str, &'static str)>,
}

impl Kind {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const fn core(
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    short: &'static [&'static str],
    status: bool,
) -> Kind {
    Kind {
        group: "",
        version: "v1",
        plural,
        singular,
        kind,
        short_names: short,
        status,
        scale: None,
    }
}

/// Every kind served: JarvisWorkspace, Pods, Services, NetworkPolicies, Secrets,
/// PVCs, Leases and Events (core and events.k8s.io).
pub const KINDS: &[Kind] = &[
    Kind {
        group: "jarvis.dev",
        version: "v1alpha1",
        plural: "jarvisworkspaces",
        singular: "jarvisworkspace",
        kind: "JarvisWorkspace",
        short_names: &["jw"],
        status: true,
        scale: Some(("replicas", "replicas")),
    },
    core("pods", "pod", "Pod", &["po"], true),
    core("services", "service", "Service", &["svc"], true),
    core("secrets", "secret", "Secret", &[], false),
    core(
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        "PersistentVolumeClaim",
        &["pvc"],
        true,
    ),
    core("events", "event", "Event", &["ev"], false),
    Kind {
        group: "networking.k8s.io",
        version: "v1",
        plural: "networkpolicies",
        singular: "networkpolicy",
        kind: "NetworkPolicy",
        short_names: &["netpol"],
        status: false,
        scale: None,
    },
    Kind {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        short_names: &[],
        status: false,
        scale: None,
    },
    Kind {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        short_names: &["ev"],
        status: false,
        scale: None,
    },
];

/// Where a pod's sandbox listens, as a [`PodRunner`] started it.
#[derive(Clone, Debug)]
pub struct PodAddress {
    /// The pod's `status.podIP`.
    pub ip: String,
}

/// What the fake kubelet does to run a pod. The default marks every pod Ready at
/// once; a test can start a real process per pod.
pub trait PodRunner: Send + Sync + 'static {
    /// Start pod `pod` (the stored object); `Err` makes the pod phase `Failed` with
    /// the message as its reason.
    fn start(&self, pod: Value) -> BoxFuture<'static, Result<PodAddress, String>>;
    /// Stop what [`PodRunner::start`] started for pod `namespace/name`.
    fn stop(&self, namespace: String, name: String) -> BoxFuture<'static, ()>;
}

/// Marks pods Ready with a made-up IP; starts nothing.
struct NoopRunner;

impl PodRunner for NoopRunner {
    fn start(&self, _pod: Value) -> BoxFuture<'static, Result<PodAddress, String>> {
        Box::pin(async { Ok(PodAddress { ip: String::new() }) })
    }
    fn stop(&self, _namespace: String, _name: String) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

#[derive(Debug)]
struct Change {
    kind: Kind,
    namespace: String,
    event: &'static str,
    object: Value,
    rv: u64,
    /// The watch event's JSON line per [`Rendering`], made once for every watcher.
    lines: [OnceLock<Bytes>; 2],
}

impl Change {
    fn new(kind: Kind, namespace: &str, event: &'static str, object: Value, rv: u64) -> Self {
        Self {
            kind,
            namespace: namespace.to_owned(),
            event,
            object,
            rv,
            lines: Default::default(),
        }
    }

    /// This change as a line of a watch's answer.
    fn line(&self, rendering: Rendering) -> Bytes {
        self.lines[rendering as usize]
            .get_or_init(|| watch_line(self.event, &rendering.render(&self.object)))
            .clone()
    }
}

/// One event of a watch's answer, a JSON line.
fn watch_line(event: &str, object: &Value) -> Bytes {
    #[derive(serde::Serialize)]
    struct WatchEvent<'a> {
        #[serde(rename = "type")]
        event: &'a str,
        object: &'a Value,
    }
    let mut line = serde_json::to_vec(&WatchEvent { event, object }).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// How objects are answered: whole, or as their metadata only, which a client
/// asks for with `Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`
/// (kube-rs's metadata watches, e.g. a controller's `owns`), as a real apiserver does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rendering {
    Full = 0,
    Metadata = 1,
}

impl Rendering {
    fn of(headers: &HeaderMap) -> Self {
        let metadata = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|accept| accept.contains("as=PartialObjectMetadata"));
        if metadata { Self::Metadata } else { Self::Full }
    }

    fn render<'a>(self, object: &'a Value) -> std::borrow::Cow<'a, Value> {
        match self {
            Self::Full => std::borrow::Cow::Borrowed(object),
            Self::Metadata => std::borrow::Cow::Owned(json!({
                "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": meta(object),
            })),
        }
    }

    /// `kind` and `apiVersion` of a list of `kind`.
    fn list_type(self, kind: &Kind) -> (String, String) {
        match self {
            Self::Full => (format!("{}List", kind.kind), kind.api_version()),
            Self::Metadata => (
                "PartialObjectMetadataList".to_owned(),
                "meta.k8s.io/v1".to_owned(),
            ),
        }
    }
}

struct Store {
    objects: BTreeMap<(String, String, String), Value>,
    kinds: HashMap<String, Kind>,
    rv: u64,
    uid: u64,
    history: Vec<Arc<Change>>,
}

/// How long a watch may resume from: older `resourceVersion`s get 410 Gone.
const HISTORY: usize = 50_000;

/// Shared state of the fake.
pub(super) struct Inner {
    store: Mutex<Store>,
    changes: broadcast::Sender<Arc<Change>>,
    bookmark_every: Duration,
    pub(super) authorizer: Arc<super::rbac::Authorizer>,
    /// Whether new pods get bound to a node (see `FakeApiServer::stop_scheduling`).
    scheduling: AtomicBool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// An API error, rendered as a `Status` body.
#[derive(Debug)]
pub struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
}

impl ApiError {
    fn not_found(kind: &Kind, name: &str) -> Self {
        Self {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{name}\" not found", kind.resource()),
        }
    }
    fn conflict(kind: &Kind, name: &str, why: &str) -> Self {
        Self {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                kind.resource()
            ),
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
        }
    }
    fn invalid(kind: &Kind, name: &str, why: &str) -> Self {
        Self {
            code: 422,
            reason: "Invalid",
            message: format!("{} \"{name}\" is invalid: {why}", kind.kind),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason,
            "code": self.code,
        });
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, axum::Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn meta(object: &Value) -> &Value {
    &object["metadata"]
}

fn name_of(object: &Value) -> String {
    meta(object)["name"].as_str().unwrap_or_default().to_owned()
}

fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    object["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

/// Deep merge of `patch` into `target` (maps merged, anything else replaced);
/// `null` in a merge patch removes the key.
fn merge(target: &mut Value, patch: &Value, nulls_remove: bool) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() && nulls_remove {
                    target.remove(key);
                } else {
                    merge(
                        target.entry(key.clone()).or_insert(Value::Null),
                        value,
                        nulls_remove,
                    );
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// Whether two maps hold the same entries, leaving out the keys in `except`
/// (compared in place: no copies of either side).
fn same_except(a: &Value, b: &Value, except: &[&str]) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let kept =
        |map: &Map<String, Value>| map.keys().filter(|k| !except.contains(&k.as_str())).count();
    kept(a) == kept(b)
        && a.iter()
            .filter(|(k, _)| !except.contains(&k.as_str()))
            .all(|(k, v)| b.get(k) == Some(v))
}

/// Whether two objects agree on the content that counts for `generation`:
/// everything but metadata and status.
fn same_spec(a: &Value, b: &Value) -> bool {
    same_except(a, b, &["metadata", "status"])
}

/// Whether two pods' specs agree on everything but their containers' images (the
/// only change a real apiserver takes in place here).
fn same_pod_spec_but_images(a: &Value, b: &Value) -> bool {
    let (a, b) = (&a["spec"], &b["spec"]);
    let lists = ["containers", "initContainers"];
    same_except(a, b, &lists)
        && lists
            .iter()
            .all(|list| match (a[list].as_array(), b[list].as_array()) {
                (Some(a), Some(b)) => {
                    a.len() == b.len()
                        && a.iter().zip(b).all(|(a, b)| same_except(a, b, &["image"]))
                }
                (a, b) => a == b,
            })
}

impl Store {
    fn key(kind: &Kind, namespace: &str, name: &str) -> (String, String, String) {
        (kind.resource(), namespace.to_owned(), name.to_owned())
    }

    /// The stored objects of `kind` in `namespace` (every namespace when empty), in
    /// key order: a range of the map, not a scan of every object.
    fn of_kind<'a>(
        &'a self,
        kind: &Kind,
        namespace: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        let resource = kind.resource();
        let start = (resource.clone(), namespace.to_owned(), String::new());
        self.objects
            .range(start..)
            .take_while(move |((r, ns, _), _)| {
                *r == resource && (namespace.is_empty() || ns == namespace)
            })
            .map(|((_, ns, _), object)| (ns.as_str(), object))
    }

    fn get(&self, kind: &Kind, namespace: &str, name: &str) -> ApiResult<Value> {
        self.objects
            .get(&Self::key(kind, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))
    }

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(
        &mut self,
        tx: &broadcast::Sender<Arc<Change>>,
        kind: Kind,
        namespace: &str,
        event: &'static str,
        object: Value,
        rv: u64,
    ) {
        let change = Arc::new(Change::new(kind, namespace, event, object, rv));
        self.history.push(change.clone());
        if self.history.len() > HISTORY {
            self.history.drain(..HISTORY / 10);
        }
        let _ = tx.send(change);
    }

    /// Store `object` as the new version of `kind/namespace/name`, bumping
    /// `resourceVersion` (and `generation` when `spec_changed`), and tell watchers.
    fn put(
        &mut self,
        tx: &broadcast::Sender<Arc<Change>>,
        kind: Kind,
        namespace: &str,
        mut object: Value,
        event: &'static str,
    ) -> Value {
        let rv = self.bump();
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.kind);
        meta_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
        let name = name_of(&object);
        // An object being deleted whose last finalizer went goes away now.
        let finalizers_left = meta(&object)["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        let deleting = !meta(&object)["deletionTimestamp"].is_null();
        if deleting && !finalizers_left && event == "MODIFIED" && kind.kind != "Pod" {
            self.remove(tx, kind, namespace, &name);
            return object;
        }
        self.objects
            .insert(Self::key(&kind, namespace, &name), object.clone());
        self.record(tx, kind, namespace, event, object.clone(), rv);
        object
    }

    /// Remove an object for good, then garbage-collect what it owned.
    fn remove(
        &mut self,
        tx: &broadcast::Sender<Arc<Change>>,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) {
        let Some(mut object) = self.objects.remove(&Self::key(&kind, namespace, name)) else {
            return;
        };
        let rv = self.bump();
        meta_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
        let uid = meta(&object)["uid"].as_str().unwrap_or_default().to_owned();
        self.record(tx, kind, namespace, "DELETED", object, rv);
        let owned: Vec<(Kind, String, String)> = self
            .objects
            .iter()
            .filter(|(_, child)| {
                meta(child)["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == json!(uid)))
            })
            .filter_map(|((resource, ns, child_name), _)| {
                self.kinds
                    .get(resource)
                    .map(|k| (*k, ns.clone(), child_name.clone()))
            })
            .collect();
        for (kind, ns, child_name) in owned {
            let _ = self.delete(tx, kind, &ns, &child_name);
        }
    }

    /// Delete: removed at once unless finalizers remain (or it is a pod, which the
    /// kubelet stops first); then only `deletionTimestamp` is set.
    fn delete(
        &mut self,
        tx: &broadcast::Sender<Arc<Change>>,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> ApiResult<(Value, bool)> {
        let mut object = self.get(&kind, namespace, name)?;
        let has_finalizers = meta(&object)["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers || (kind.kind == "Pod" && rules::scheduled(&object)) {
            if meta(&object)["deletionTimestamp"].is_null() {
                let m = meta_mut(&mut object);
                m.insert("deletionTimestamp".into(), json!(now()));
                if kind.kind == "Pod" {
                    m.insert("deletionGracePeriodSeconds".into(), json!(30));
                }
                object = self.put(tx, kind, namespace, object, "MODIFIED");
            }
            Ok((object, true))
        } else {
            self.remove(tx, kind, namespace, name);
            if kind.kind == "Pod" {
                // Removed at once; the answer still carries its deletion stamp.
                let m = meta_mut(&mut object);
                m.insert("deletionTimestamp".into(), json!(now()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
            }
            Ok((object, false))
        }
    }

    fn create(
        &mut self,
        tx: &broadcast::Sender<Arc<Change>>,
        kind: Kind,
        namespace: &str,
        mut object: Value,
    ) -> ApiResult<Value> {
        let mut name = name_of(&object);
        if name.is_empty() {
            let prefix = meta(&object)["generateName"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    &kind,
                    "",
                    "metadata.name: Required value",
                ));
            }
            name = format!("{prefix}{:05x}", self.uid + 1);
        }
        if self
            .objects
            .contains_key(&Self::key(&kind, namespace, &name))
        {
            return Err(ApiError {
                code: 409,
                reason: "AlreadyExists",
                message: format!("{} \"{name}\" already exists", kind.resource()),
            });
        }
        self.uid += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.uid);
        let m = meta_mut(&mut object);
        m.insert("name".into(), json!(name));
        if !namespace.is_empty() {
            m.insert("namespace".into(), json!(namespace));
        }
        m.insert("uid".into(), json!(uid));
        m.insert("creationTimestamp".into(), json!(now()));
        m.insert("generation".into(), json!(1));
        m.remove("deletionTimestamp");
        rules::admit(&kind, &name, None, &object)?;
        if kind.kind == "Service" && object["spec"]["clusterIP"].is_null() {
            let n = self.uid;
            object["spec"]["clusterIP"] = json!(format!("10.96.{}.{}", (n >> 8) & 255, n & 255));
        }
        Ok(self.put(tx, kind, namespace, object, "ADDED"))
    }

    /// Replace `kind/namespace/name` with `new`, as the main resource (`status`
    /// kept) or the status subresource (only `status` taken).
    fn update(
        &mut self,
        tx: &broadcast::Sender<Arc<Change>>,
        kind: Kind,
        namespace: &str,
        name: &str,
        mut new: Value,
        status_only: bool,
    ) -> ApiResult<Value> {
        let old = self.get(&kind, namespace, name)?;
        if let Some(rv) = meta(&new)["resourceVersion"].as_str()
            && !rv.is_empty()
            && meta(&old)["resourceVersion"].as_str() != Some(rv)
        {
            return Err(ApiError::conflict(
                &kind,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        if status_only {
            let status = new["status"].take();
            new = old.clone();
            new["status"] = status;
        } else {
            if kind.status {
                new["status"] = old["status"].clone();
            }
            // Server-owned metadata is never taken from the client.
            let old_meta = meta(&old).clone();
            let m = meta_mut(&mut new);
            for field in [
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "namespace",
                "name",
            ] {
                match old_meta.get(field) {
                    Some(value) => m.insert(field.into(), value.clone()),
                    None => m.remove(field),
                };
            }
            if kind.kind == "Pod" && !same_pod_spec_but_images(&old, &new) {
                return Err(ApiError::invalid(
                    &kind,
                    name,
                    "spec: Forbidden: pod updates may not change fields other than image",
                ));
            }
            rules::admit(&kind, name, Some(&old), &new)?;
            if !same_spec(&old, &new) {
                let generation = meta(&old)["generation"].as_i64().unwrap_or(1) + 1;
                meta_mut(&mut new).insert("generation".into(), json!(generation));
            }
        }
        // A write that changes nothing is not stored: no new resourceVersion and no
        // watch event (a no-op apply included, which sends none).
        if let Some(rv) = meta(&old).get("resourceVersion") {
            meta_mut(&mut new).insert("resourceVersion".into(), rv.clone());
        }
        if new == old {
            return Ok(old);
        }
        Ok(self.put(tx, kind, namespace, new, "MODIFIED"))
    }
}

/// A running fake API server. Dropping it stops the server and the kubelet.
pub struct FakeApiServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl FakeApiServer {
    /// Start a fake whose kubelet marks pods Ready at once.
    pub async fn start() -> std::io::Result<Self> {
        Self::with_runner(Arc::new(NoopRunner)).await
    }

    /// Start a fake whose kubelet runs each pod with `runner`.
    pub async fn with_runner(runner: Arc<dyn PodRunner>) -> std::io::Result<Self> {
        let (changes, _) = broadcast::channel(16_384);
        let inner = Arc::new(Inner {
            store: Mutex::new(Store {
                objects: BTreeMap::new(),
                kinds: KINDS.iter().map(|k| (k.resource(), *k)).collect(),
                rv: 1,
                uid: 0,
                history: Vec::new(),
            }),
            changes,
            bookmark_every: Duration::from_secs(1),
            authorizer: Arc::default(),
            scheduling: AtomicBool::new(true),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::warn!(%error, "fake apiserver stopped");
            }
        });
        let kubelet = tokio::spawn(kubelet(inner.clone(), runner));
        Ok(Self {
            addr,
            inner,
            tasks: vec![server, kubelet],
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client for this server, with `namespace` as its default namespace.
    pub fn client(&self, namespace: &str) -> kube::Client {
        let url = self.url().parse().expect("a local http URL parses");
        let mut config = kube::Config::new(url);
        config.default_namespace = namespace.to_owned();
        kube::Client::try_from(config).expect("a client for a plain-http URL")
    }

    /// A kubeconfig (YAML) for `kubectl --kubeconfig`, namespace `namespace`.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        )
    }

    /// The shared state, for the RBAC module.
    pub(super) fn inner(&self) -> Arc<Inner> {
        self.inner.clone()
    }

    /// From now on, leave new pods unscheduled (Pending, no `spec.nodeName`), as a
    /// cluster without room does: the kubelet never starts them, and deleting one
    /// removes it at once. Call it before the pods are created.
    pub fn stop_scheduling(&self) {
        self.inner.scheduling.store(false, Ordering::SeqCst);
    }

    /// The stored object, or `None`: for assertions that bypass the API.
    pub fn object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let kind = KINDS.iter().find(|k| k.plural == plural)?;
        self.inner.lock().get(kind, namespace, name).ok()
    }
}

fn kind_for(group: &str, version: &str, plural: &str) -> ApiResult<Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
        .copied()
        .ok_or_else(|| ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("the server could not find the requested resource ({plural})"),
        })
}

fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            url_pairs(q)
                .into_iter()
                .collect::<HashMap<String, String>>()
        })
        .unwrap_or_default()
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A parsed label or field selector: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
/// `k notin (a,b)`.
#[derive(Default)]
struct Selector(Vec<(String, String, Vec<String>)>);

impl Selector {
    fn parse(text: &str) -> Self {
        let mut terms = Vec::new();
        let mut rest = text.trim();
        while !rest.is_empty() {
            // Split on the next comma outside parentheses.
            let mut depth = 0;
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    ',' if depth == 0 => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let term = rest[..end].trim();
            rest = rest.get(end + 1..).unwrap_or("").trim();
            let parsed = if let Some((k, v)) = term.split_once("!=") {
                (k.trim().into(), "!=".into(), vec![v.trim().into()])
            } else if let Some((k, v)) = term.split_once("==") {
                (k.trim().into(), "=".into(), vec![v.trim().into()])
            } else if let Some((k, v)) = term.split_once('=') {
                (k.trim().into(), "=".into(), vec![v.trim().into()])
            } else if let Some((k, v)) = term.split_once(" notin ") {
                (k.trim().into(), "notin".into(), set(v))
            } else if let Some((k, v)) = term.split_once(" in ") {
                (k.trim().into(), "in".into(), set(v))
            } else if let Some(k) = term.strip_prefix('!') {
                (k.trim().into(), "!".into(), vec![])
            } else {
                (term.into(), "exists".into(), vec![])
            };
            terms.push(parsed);
        }
        Selector(terms)
    }

    fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|(key, op, values)| {
            let value = get(key);
            match op.as_str() {
                "=" => value.as_deref() == values.first().map(String::as_str),
                "!=" => value.as_deref() != values.first().map(String::as_str),
                "in" => value.is_some_and(|v| values.contains(&v)),
                "notin" => !value.is_some_and(|v| values.contains(&v)),
                "!" => value.is_none(),
                _ => value.is_some(),
            }
        })
    }
}

fn set(text: &str) -> Vec<String> {
    text.trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect()
}

struct Filter {
    labels: Selector,
    fields: Selector,
}

impl Filter {
    fn from(query: &HashMap<String, String>) -> Self {
        Self {
            labels: Selector::parse(query.get("labelSelector").map_or("", String::as_str)),
            fields: Selector::parse(query.get("fieldSelector").map_or("", String::as_str)),
        }
    }

    fn matches(&self, object: &Value) -> bool {
        let labels = &meta(object)["labels"];
        self.labels
            .matches(|k| labels[k].as_str().map(str::to_owned))
            && self.fields.matches(|path| {
                let mut value = object;
                for part in path.split('.') {
                    value = &value[part];
                }
                value.as_str().map(str::to_owned)
            })
    }
}

/// The parsed URL of a resource request.
struct Target {
    kind: Kind,
    namespace: String,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_target(segments: &[&str]) -> ApiResult<Option<Target>> {
    let (group, version, rest) = match segments {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Ok(None),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (ns.to_string(), rest),
        rest => (String::new(), rest),
    };
    let Some((plural, rest)) = rest.split_first() else {
        return Ok(None);
    };
    Ok(Some(Target {
        kind: kind_for(group, version, plural)?,
        namespace,
        name: rest.first().map(|s| s.to_string()),
        sub: rest.get(1).map(|s| s.to_string()),
    }))
}

pub(super) async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    if let Some(discovery) = discovery(&segments) {
        return axum::Json(discovery).into_response();
    }
    match parse_target(&segments) {
        Ok(Some(target)) => match inner.authorizer.authorize(&headers, || {
            super::rbac::Attributes::of(
                &method,
                &query(&uri),
                target.kind.group,
                target.kind.plural,
                &target.namespace,
                target.name.as_deref(),
                target.sub.as_deref(),
            )
        }) {
            Err(refused) => *refused,
            Ok(()) => match serve(&inner, method, &uri, &headers, &body, target).await {
                Ok(response) => response,
                Err(error) => error.into_response(),
            },
        },
        Ok(None) if segments == ["api", "v1", "namespaces", segments.get(3).unwrap_or(&"")] => {
            // `GET /api/v1/namespaces/NS`: every namespace exists.
            axum::Json(json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": { "name": segments[3] }, "status": { "phase": "Active" }
            }))
            .into_response()
        }
        Ok(None) => ApiError {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
        }
        .into_response(),
        Err(error) => error.into_response(),
    }
}

fn discovery(segments: &[&str]) -> Option<Value> {
    let groups = || {
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for k in KINDS.iter().filter(|k| !k.group.is_empty()) {
            if !seen.contains(&(k.group, k.version)) {
                seen.push((k.group, k.version));
            }
        }
        seen
    };
    let resources = |group: &str, version: &str| {
        let mut list = Vec::new();
        for k in KINDS
            .iter()
            .filter(|k| k.group == group && k.version == version)
        {
            list.push(json!({
                "name": k.plural, "singularName": k.singular, "namespaced": true,
                "kind": k.kind, "shortNames": k.short_names,
                "verbs": ["create","delete","deletecollection","get","list","patch","update","watch"],
            }));
            if k.status {
                list.push(
                    json!({ "name": format!("{}/status", k.plural), "singularName": "",
                    "namespaced": true, "kind": k.kind, "verbs": ["get","patch","update"] }),
                );
            }
            if k.scale.is_some() {
                list.push(
                    json!({ "name": format!("{}/scale", k.plural), "singularName": "",
                    "namespaced": true, "group": "autoscaling", "version": "v1", "kind": "Scale",
                    "verbs": ["get","patch","update"] }),
                );
            }
        }
        json!({ "kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") },
            "resources": list })
    };
    match segments {
        ["version"] => Some(json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-jarvis-fake",
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"
        })),
        ["api"] => Some(json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1" }]
        })),
        ["apis"] => Some(json!({
            "kind": "APIGroupList", "apiVersion": "v1",
            "groups": groups().iter().map(|(g, v)| {
                let gv = json!({ "groupVersion": format!("{g}/{v}"), "version": v });
                json!({ "name": g, "versions": [gv.clone()], "preferredVersion": gv })
            }).collect::<Vec<_>>()
        })),
        ["api", "v1"] => Some(resources("", "v1")),
        ["apis", group, version] => groups()
            .contains(&(*group, *version))
            .then(|| resources(group, version)),
        _ => None,
    }
}

fn json_response(code: StatusCode, value: Value) -> Response {
    (code, axum::Json(value)).into_response()
}

fn parse_body(headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.contains("yaml") {
        // JSON is YAML, and what kube clients send as `apply-patch+yaml`: read it as
        // such first (far cheaper than the YAML parser); anything else is YAML proper.
        serde_json::from_slice(body).or_else(|_| {
            serde_yaml::from_slice(body).map_err(|e| ApiError::bad(format!("invalid YAML: {e}")))
        })
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("invalid JSON: {e}")))
    }
}

fn scale_object(kind: &Kind, object: &Value) -> Value {
    let (spec_field, status_field) = kind.scale.unwrap_or(("replicas", "replicas"));
    let m = meta(object);
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
        },
        "spec": { "replicas": object["spec"][spec_field].as_i64().unwrap_or(0) },
        "status": { "replicas": object["status"][status_field].as_i64().unwrap_or(0), "selector": "" },
    })
}

/// Apply a PATCH body of any supported content type to `current`.
fn patched(
    kind: &Kind,
    name: &str,
    headers: &HeaderMap,
    body: &Bytes,
    current: &Value,
) -> ApiResult<Value> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut object = current.clone();
    if content_type.starts_with("application/json-patch+json") {
        let mut ops: Vec<Value> = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad(format!("invalid JSON patch: {e}")))?;
        // Like the real apiserver, `test` for `null` passes on a missing path.
        ops.retain(|op| {
            let null_test = op["op"] == "test" && op["value"].is_null();
            let missing = op["path"]
                .as_str()
                .is_none_or(|path| object.pointer(path).is_none_or(Value::is_null));
            !(null_test && missing)
        });
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops))
            .map_err(|e| ApiError::bad(format!("invalid JSON patch: {e}")))?;
        json_patch::patch(&mut object, &patch)
            .map_err(|e| ApiError::invalid(kind, name, &e.to_string()))?;
    } else if content_type.starts_with("application/apply-patch") {
        let patch = parse_body(headers, body)?;
        merge(&mut object, &patch, false);
    } else if content_type.starts_with("application/merge-patch+json")
        || content_type.starts_with("application/strategic-merge-patch+json")
    {
        let patch = parse_body(headers, body)?;
        merge(&mut object, &patch, true);
    } else {
        return Err(ApiError {
            code: 415,
            reason: "UnsupportedMediaType",
            message: format!("the body of the request was in an unknown format: {content_type}"),
        });
    }
    Ok(object)
}

async fn serve(
    inner: &Arc<Inner>,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    target: Target,
) -> ApiResult<Response> {
    let query = query(uri);
    let Target {
        kind,
        namespace,
        name,
        sub,
    } = target;
    let tx = &inner.changes;
    let is_put = method == Method::PUT;
    let is_apply = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/apply-patch"));
    match (method, name, sub.as_deref()) {
        (Method::GET, None, None)
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") =>
        {
            Ok(watch(
                inner,
                kind,
                namespace,
                &query,
                Rendering::of(headers),
            ))
        }
        (Method::GET, None, None) => {
            let filter = Filter::from(&query);
            let rendering = Rendering::of(headers);
            let store = inner.lock();
            let items: Vec<Value> = store
                .of_kind(&kind, &namespace)
                .filter(|(_, object)| filter.matches(object))
                .map(|(_, object)| rendering.render(object).into_owned())
                .collect();
            let (list_kind, api_version) = rendering.list_type(&kind);
            Ok(json_response(
                StatusCode::OK,
                json!({
                    "kind": list_kind, "apiVersion": api_version,
                    "metadata": { "resourceVersion": store.rv.to_string() },
                    "items": items,
                }),
            ))
        }
        (Method::POST, None, None) => {
            let object = parse_body(headers, body)?;
            let created = inner.lock().create(tx, kind, &namespace, object)?;
            Ok(json_response(StatusCode::CREATED, created))
        }
        (Method::GET, Some(name), None | Some("status")) => {
            let object = inner.lock().get(&kind, &namespace, &name)?;
            Ok(json_response(
                StatusCode::OK,
                Rendering::of(headers).render(&object).into_owned(),
            ))
        }
        (Method::GET, Some(name), Some("scale")) if kind.scale.is_some() => {
            let object = inner.lock().get(&kind, &namespace, &name)?;
            Ok(json_response(StatusCode::OK, scale_object(&kind, &object)))
        }
        (Method::PUT, Some(name), sub @ (None | Some("status"))) => {
            let object = parse_body(headers, body)?;
            let updated =
                inner
                    .lock()
                    .update(tx, kind, &namespace, &name, object, sub == Some("status"))?;
            Ok(json_response(StatusCode::OK, updated))
        }
        (Method::PATCH | Method::PUT, Some(name), Some("scale")) if kind.scale.is_some() => {
            let mut store = inner.lock();
            let current = store.get(&kind, &namespace, &name)?;
            let scale = scale_object(&kind, &current);
            let new_scale = if is_put {
                parse_body(headers, body)?
            } else {
                patched(&kind, &name, headers, body, &scale)?
            };
            let replicas = new_scale["spec"]["replicas"]
                .as_i64()
                .ok_or_else(|| ApiError::invalid(&kind, &name, "spec.replicas: Required value"))?;
            let (spec_field, _) = kind.scale.unwrap_or(("replicas", "replicas"));
            let mut object = current.clone();
            object["spec"][spec_field] = json!(replicas);
            meta_mut(&mut object).remove("resourceVersion");
            if is_put
                && let Some(rv) = meta(&new_scale)["resourceVersion"].as_str()
                && meta(&current)["resourceVersion"].as_str() != Some(rv)
            {
                return Err(ApiError::conflict(
                    &kind,
                    &name,
                    "the object has been modified",
                ));
            }
            let updated = store.update(tx, kind, &namespace, &name, object, false)?;
            Ok(json_response(StatusCode::OK, scale_object(&kind, &updated)))
        }
        (Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
            let mut store = inner.lock();
            let status_only = sub == Some("status");
            let current = match store.get(&kind, &namespace, &name) {
                Ok(current) => current,
                Err(_) if is_apply && !status_only => {
                    // Server-side apply creates what does not exist.
                    let mut object = parse_body(headers, body)?;
                    meta_mut(&mut object).insert("name".into(), json!(name));
                    let created = store.create(tx, kind, &namespace, object)?;
                    return Ok(json_response(StatusCode::CREATED, created));
                }
                Err(error) => return Err(error),
            };
            let mut new = patched(&kind, &name, headers, body, &current)?;
            if is_apply {
                // Apply never trips over a resourceVersion it did not send.
                meta_mut(&mut new).remove("resourceVersion");
            }
            let updated = store.update(tx, kind, &namespace, &name, new, status_only)?;
            Ok(json_response(StatusCode::OK, updated))
        }
        (Method::DELETE, Some(name), None) => {
            let (object, remains) = inner.lock().delete(tx, kind, &namespace, &name)?;
            // Like a real server, a pod's DELETE answers with the pod even when it is
            // gone at once.
            if remains || kind.kind == "Pod" {
                Ok(json_response(StatusCode::OK, object))
            } else {
                Ok(json_response(
                    StatusCode::OK,
                    json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Success",
                        "details": { "name": name, "group": kind.group, "kind": kind.plural,
                            "uid": meta(&object)["uid"] },
                    }),
                ))
            }
        }
        (method, _, _) => Err(ApiError {
            code: 405,
            reason: "MethodNotAllowed",
            message: format!("{method} is not supported on this resource"),
        }),
    }
}

fn watch(
    inner: &Arc<Inner>,
    kind: Kind,
    namespace: String,
    query: &HashMap<String, String>,
    rendering: Rendering,
) -> Response {
    let filter = Filter::from(query);
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(300), Duration::from_secs);
    let since: Option<u64> = query
        .get("resourceVersion")
        .filter(|rv| !rv.is_empty() && *rv != "0")
        .and_then(|rv| rv.parse().ok());
    let listed_namespace = namespace.clone();
    let relevant = move |change: &Change| {
        change.kind == kind
            && (namespace.is_empty() || change.namespace == namespace)
            && filter.matches(&change.object)
    };
    let (backlog, mut changes, gone) = {
        let store = inner.lock();
        let changes = inner.changes.subscribe();
        match since {
            Some(rv) if store.history.first().is_some_and(|first| first.rv > rv + 1) => {
                (Vec::new(), changes, true)
            }
            Some(rv) => (
                store
                    .history
                    .iter()
                    .filter(|c| c.rv > rv && relevant(c))
                    .map(|c| c.line(rendering))
                    .collect(),
                changes,
                false,
            ),
            None => (
                store
                    .of_kind(&kind, &listed_namespace)
                    .filter(|(ns, object)| {
                        relevant(&Change::new(kind, ns, "ADDED", (*object).clone(), 0))
                    })
                    .map(|(_, object)| watch_line("ADDED", &rendering.render(object)))
                    .collect(),
                changes,
                false,
            ),
        }
    };
    let (mut lines, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let every = inner.bookmark_every;
    let inner = inner.clone();
    tokio::spawn(async move {
        if gone {
            let expired = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "too old resource version", "reason": "Expired", "code": 410 });
            let _ = lines.send(Ok(watch_line("ERROR", &expired))).await;
            return;
        }
        for line in backlog {
            if lines.send(Ok(line)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(every);
        loop {
            let line = tokio::select! {
                _ = &mut deadline => return,
                _ = ticker.tick(), if bookmarks => {
                    let rv = inner.lock().rv;
                    watch_line("BOOKMARK", &json!({
                        "kind": kind.kind, "apiVersion": kind.api_version(),
                        "metadata": { "resourceVersion": rv.to_string() } }))
                }
                change = changes.recv() => match change {
                    Ok(change) if relevant(&change) => change.line(rendering),
                    Ok(_) => continue,
                    // Fell behind or shutting down: end the watch; the client resumes.
                    Err(_) => return,
                },
            };
            if lines.send(Ok(line)).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(rx))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The scheduler: bind pod `namespace/name` to [`rules::NODE`] unless scheduling is
/// stopped. Returns whether the pod is bound.
fn bind(inner: &Inner, pods: Kind, namespace: &str, name: &str) -> bool {
    let mut store = inner.lock();
    let Ok(mut pod) = store.get(&pods, namespace, name) else {
        return false;
    };
    if rules::scheduled(&pod) {
        return true;
    }
    if !inner.scheduling.load(Ordering::SeqCst) {
        return false;
    }
    pod["spec"]["nodeName"] = json!(rules::NODE);
    store.put(&inner.changes, pods, namespace, pod, "MODIFIED");
    true
}

/// The kubelet: runs new pods (Running, Ready, a pod IP) and removes deleted ones.
async fn kubelet(inner: Arc<Inner>, runner: Arc<dyn PodRunner>) {
    let pods = KINDS[1];
    let mut changes = inner.changes.subscribe();
    let mut started: HashMap<(String, String), JoinHandle<()>> = HashMap::new();
    // The pods to look at: every pod at first and after falling behind, then each
    // changed pod as it changes.
    let mut pending: Option<Vec<Value>> = None;
    loop {
        let snapshot: Vec<Value> = match pending.take() {
            Some(changed) => changed,
            None => {
                let store = inner.lock();
                store
                    .of_kind(&pods, "")
                    .map(|(_, pod)| pod.clone())
                    .collect()
            }
        };
        for pod in snapshot {
            let namespace = meta(&pod)["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let name = name_of(&pod);
            let key = (namespace.clone(), name.clone());
            if !meta(&pod)["deletionTimestamp"].is_null() {
                if let Some(task) = started.remove(&key) {
                    task.abort();
                }
                runner.stop(namespace.clone(), name.clone()).await;
                inner.lock().remove(&inner.changes, pods, &namespace, &name);
                continue;
            }
            if started.contains_key(&key) || !bind(&inner, pods, &namespace, &name) {
                continue;
            }
            let uid = meta(&pod)["uid"].clone();
            let inner = inner.clone();
            let start = runner.start(pod.clone());
            started.insert(
                key,
                tokio::spawn(async move {
                    let result = start.await;
                    let mut store = inner.lock();
                    let Ok(mut pod) = store.get(&pods, &namespace, &name) else {
                        return;
                    };
                    if meta(&pod)["uid"] != uid || !meta(&pod)["deletionTimestamp"].is_null() {
                        return;
                    }
                    let time = now();
                    pod["status"] = match result {
                        Ok(address) => {
                            let ip = if address.ip.is_empty() {
                                "10.244.0.10".to_owned()
                            } else {
                                address.ip
                            };
                            json!({
                                "phase": "Running", "podIP": ip, "podIPs": [{ "ip": ip }],
                                "hostIP": "10.0.0.1", "startTime": time,
                                "conditions": [
                                    { "type": "Initialized", "status": "True", "lastTransitionTime": time },
                                    { "type": "ContainersReady", "status": "True", "lastTransitionTime": time },
                                    { "type": "Ready", "status": "True", "lastTransitionTime": time },
                                ],
                            })
                        }
                        Err(message) => json!({
                            "phase": "Failed", "reason": "StartError", "message": message,
                        }),
                    };
                    meta_mut(&mut pod).remove("resourceVersion");
                    let _ = store.update(&inner.changes, pods, &namespace, &name, pod, true);
                }),
            );
        }
        loop {
            match changes.recv().await {
                Ok(change) if change.kind == pods && change.event == "DELETED" => {
                    let key = (change.namespace.clone(), name_of(&change.object));
                    if let Some(task) = started.remove(&key) {
                        task.abort();
                    }
                }
                Ok(change) if change.kind == pods => {
                    pending = Some(vec![change.object.clone()]);
                    break;
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
