//! RBAC for the fake API server, as a real apiserver enforces it: bearer tokens
//! name service accounts (`system:serviceaccount:NS:NAME`), and each resource
//! request is allowed only when a Role or ClusterRole bound to its user (through a
//! RoleBinding in the request's namespace or a ClusterRoleBinding) has a rule that
//! covers its verb, API group, resource (with subresource) and, where the rule has
//! `resourceNames`, its object name. A refused request gets the real server's 403
//! `Status`; an unknown token gets 401.
//!
//! The request's attributes follow the apiserver's `RequestInfo`: `GET` of a
//! collection is `list`, or `watch` with `?watch=true`; of an object `get`; `POST`
//! `create`; `PUT` `update`; `PATCH` (server-side apply included) `patch`; `DELETE`
//! of an object `delete`, of a collection `deletecollection`. A list or watch with
//! the field selector `metadata.name=NAME` is authorised as for the object NAME.
//!
//! Until [`FakeApiServer::enforce_rbac`] is called every request is allowed, and
//! afterwards a request without a token still acts as a cluster admin (the tests'
//! own set-up and assertions); the code under test acts through a service-account
//! token ([`FakeApiServer::client_as`], [`FakeApiServer::proxy_as`]).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};

use super::fake_apiserver::{FakeApiServer, handle};

/// The RBAC state of one fake: tokens and the RBAC objects, once enforced.
#[derive(Default)]
pub(super) struct Authorizer {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// RBAC objects (Role, ClusterRole, RoleBinding, ClusterRoleBinding); `None`
    /// while RBAC is not enforced.
    objects: Option<Vec<Value>>,
    /// Bearer token → user name.
    tokens: HashMap<String, String>,
    /// Every request made with a token, in order.
    audit: Vec<Audited>,
}

/// One request made with a token, as an audit log records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audited {
    /// The user, e.g. `system:serviceaccount:jarvis:jarvis-operator`.
    pub user: String,
    /// What it asked for.
    pub request: Attributes,
    /// Whether it was allowed.
    pub allowed: bool,
}

/// What a resource request does, as the apiserver's authorizer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: &'static str,
    /// API group, `""` for the core group.
    pub group: String,
    /// Resource plural, e.g. `pods`.
    pub resource: String,
    /// Subresource, e.g. `status`, `scale`.
    pub subresource: Option<String>,
    /// Namespace, `""` at the cluster scope.
    pub namespace: String,
    /// Object name, `""` for collections.
    pub name: String,
}

impl Attributes {
    /// The attributes of a request on `resource` (`group`, `namespace`, `name`,
    /// `subresource` parsed from its path) with `method` and `query`.
    pub fn of(
        method: &Method,
        query: &HashMap<String, String>,
        group: &str,
        resource: &str,
        namespace: &str,
        name: Option<&str>,
        subresource: Option<&str>,
    ) -> Self {
        let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
        let verb = match (method.as_str(), name.is_some()) {
            ("GET" | "HEAD", true) => "get",
            ("GET" | "HEAD", false) if watch => "watch",
            ("GET" | "HEAD", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            _ => "",
        };
        // A list or watch of one name is authorised as for that name.
        let selected = (matches!(verb, "list" | "watch"))
            .then(|| query.get("fieldSelector"))
            .flatten()
            .and_then(|selector| {
                let mut terms = selector.split(',');
                let one = terms.next()?;
                terms
                    .next()
                    .is_none()
                    .then(|| one.strip_prefix("metadata.name="))
                    .flatten()
            });
        Self {
            verb,
            group: group.to_owned(),
            resource: resource.to_owned(),
            subresource: subresource.map(str::to_owned),
            namespace: namespace.to_owned(),
            name: name.or(selected).unwrap_or_default().to_owned(),
        }
    }

    /// `resource` or `resource/subresource`.
    fn full_resource(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        }
    }
}

/// Whether `list` (a rule's field) holds `wanted` or `*`.
fn holds(list: &Value, wanted: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|v| v == "*" || v == wanted))
}

/// Whether one `PolicyRule` allows the request.
fn rule_allows(rule: &Value, request: &Attributes) -> bool {
    let resource_ok = rule["resources"].as_array().is_some_and(|resources| {
        resources.iter().filter_map(Value::as_str).any(|r| {
            let full = request.full_resource();
            r == "*"
                || r == full
                || match &request.subresource {
                    // `pods/*` covers every subresource of pods, `*/scale` every scale.
                    Some(sub) => r == format!("{}/*", request.resource) || r == format!("*/{sub}"),
                    None => false,
                }
        })
    });
    let names_ok = match rule["resourceNames"].as_array() {
        Some(names) if !names.is_empty() => {
            !request.name.is_empty() && names.iter().any(|n| n == request.name.as_str())
        }
        _ => true,
    };
    holds(&rule["verbs"], request.verb)
        && holds(&rule["apiGroups"], &request.group)
        && resource_ok
        && names_ok
}

/// Whether a binding's subjects include `user` (a service account's user name, or
/// a User; Groups: every service account's and `system:authenticated`).
fn binds(binding: &Value, user: &str) -> bool {
    let groups: Vec<String> = match user
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    {
        Some((ns, _)) => vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
        None => vec!["system:authenticated".into()],
    };
    binding["subjects"].as_array().is_some_and(|subjects| {
        subjects.iter().any(|s| match s["kind"].as_str() {
            Some("ServiceAccount") => {
                let ns = s["namespace"].as_str().unwrap_or_default();
                let name = s["name"].as_str().unwrap_or_default();
                user == format!("system:serviceaccount:{ns}:{name}")
            }
            Some("User") => s["name"] == user,
            Some("Group") => groups.iter().any(|g| s["name"] == g.as_str()),
            _ => false,
        })
    })
}

fn kind_of(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn namespace_of(object: &Value) -> &str {
    object["metadata"]["namespace"].as_str().unwrap_or_default()
}

fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// Whether the RBAC objects `objects` allow `user` the request.
pub fn allows(objects: &[Value], user: &str, request: &Attributes) -> bool {
    let role = |kind: &str, namespace: &str, name: &str| {
        objects.iter().find(|o| {
            kind_of(o) == kind
                && name_of(o) == name
                && (kind == "ClusterRole" || namespace_of(o) == namespace)
        })
    };
    objects
        .iter()
        .filter(|b| match kind_of(b) {
            "ClusterRoleBinding" => true,
            // A RoleBinding grants only inside its own namespace.
            "RoleBinding" => !request.namespace.is_empty() && namespace_of(b) == request.namespace,
            _ => false,
        })
        .filter(|b| binds(b, user))
        .filter_map(|b| {
            let role_ref = &b["roleRef"];
            let kind = role_ref["kind"].as_str().unwrap_or_default();
            if kind_of(b) == "ClusterRoleBinding" && kind != "ClusterRole" {
                return None;
            }
            role(
                kind,
                namespace_of(b),
                role_ref["name"].as_str().unwrap_or_default(),
            )
        })
        .any(|r| {
            r["rules"]
                .as_array()
                .is_some_and(|rules| rules.iter().any(|rule| rule_allows(rule, request)))
        })
}

/// The real apiserver's 403 for `user` and `request`.
pub fn forbidden(user: &str, request: &Attributes) -> Response {
    let qualified = if request.group.is_empty() {
        request.resource.clone()
    } else {
        format!("{}.{}", request.resource, request.group)
    };
    let subject = if request.name.is_empty() {
        qualified
    } else {
        format!("{qualified} \"{}\"", request.name)
    };
    let scope = if request.namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace \"{}\"", request.namespace)
    };
    let message = format!(
        "{subject} is forbidden: User \"{user}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
        request.verb,
        request.full_resource(),
        request.group,
    );
    let mut details = serde_json::Map::new();
    if !request.name.is_empty() {
        details.insert("name".into(), json!(request.name));
    }
    if !request.group.is_empty() {
        details.insert("group".into(), json!(request.group));
    }
    details.insert("kind".into(), json!(request.resource));
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "Forbidden", "details": details, "code": 403,
    });
    (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

fn unauthorized() -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Unauthorized", "reason": "Unauthorized", "code": 401,
    });
    (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
}

impl Authorizer {
    /// The user behind a request's bearer token: `Ok(None)` without a token (the
    /// admin), `Err` (401) for a token nobody was given.
    pub(super) fn authenticate(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<String>, Box<Response>> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Box::new(unauthorized()))?;
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .tokens
            .get(token.trim())
            .cloned()
            .map(Some)
            .ok_or_else(|| Box::new(unauthorized()))
    }

    /// `Ok` when the request may go on, else the 401 or 403 to answer.
    pub(super) fn authorize(
        &self,
        headers: &HeaderMap,
        request: impl FnOnce() -> Attributes,
    ) -> Result<(), Box<Response>> {
        let Some(user) = self.authenticate(headers)? else {
            return Ok(());
        };
        let request = request();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let allowed = state
            .objects
            .as_ref()
            .is_none_or(|objects| allows(objects, &user, &request));
        let refused = (!allowed).then(|| Box::new(forbidden(&user, &request)));
        state.audit.push(Audited {
            user,
            request,
            allowed,
        });
        refused.map_or(Ok(()), Err)
    }
}

/// A `kubectl proxy` for one user: requests to [`Proxy::url`] reach the fake with
/// that user's token. Dropping it stops it.
pub struct Proxy {
    url: String,
    task: JoinHandle<()>,
}

impl Proxy {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApiServer {
    /// Enforce RBAC from now on with these Role, ClusterRole, RoleBinding and
    /// ClusterRoleBinding objects (others are ignored).
    pub fn enforce_rbac(&self, objects: Vec<Value>) {
        let objects = objects
            .into_iter()
            .filter(|o| {
                matches!(
                    kind_of(o),
                    "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding"
                )
            })
            .collect();
        self.authorizer()
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .objects = Some(objects);
    }

    /// A bearer token of the service account `namespace`/`name`.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let token = format!("fake-token.{namespace}.{name}");
        self.authorizer()
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tokens
            .insert(
                token.clone(),
                format!("system:serviceaccount:{namespace}:{name}"),
            );
        token
    }

    /// A kube client acting as the service account `sa_namespace`/`sa_name`,
    /// with `namespace` as its default namespace.
    pub fn client_as(&self, namespace: &str, sa_namespace: &str, sa_name: &str) -> kube::Client {
        let token = self.service_account_token(sa_namespace, sa_name);
        let url = self.url().parse().expect("a local http URL parses");
        let mut config = kube::Config::new(url);
        config.default_namespace = namespace.to_owned();
        config.auth_info.token = Some(token.into());
        kube::Client::try_from(config).expect("a client for a plain-http URL")
    }

    /// A `kubectl proxy` acting as the service account `namespace`/`name`, for
    /// code that is given an API URL without credentials.
    pub async fn proxy_as(&self, namespace: &str, name: &str) -> std::io::Result<Proxy> {
        let token = self.service_account_token(namespace, name);
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let app = Router::new()
            .fallback(handle)
            .with_state(self.inner())
            .layer(axum::middleware::map_request(
                move |mut request: axum::extract::Request| {
                    let bearer = bearer.clone();
                    async move {
                        request.headers_mut().insert(header::AUTHORIZATION, bearer);
                        request
                    }
                },
            ));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::warn!(%error, "fake kubectl proxy stopped");
            }
        });
        Ok(Proxy { url, task })
    }

    /// Every request made with a token so far, in order (an audit log).
    pub fn audit(&self) -> Vec<Audited> {
        self.authorizer()
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .audit
            .clone()
    }

    fn authorizer(&self) -> Arc<Authorizer> {
        self.inner().authorizer.clone()
    }
}

/// Rendered RBAC objects by (namespace, release, values).
type Rendered = HashMap<(String, String, String), Vec<Value>>;

/// The chart's RBAC objects for a release `release` in `namespace`, rendered by
/// `charts/render_rbac.py` (Helm, through `helm-python-sdk`); cached per process.
pub fn chart_rbac(namespace: &str, release: &str) -> std::io::Result<Vec<Value>> {
    chart_rbac_with(namespace, release, &Value::Object(serde_json::Map::new()))
}

/// [`chart_rbac`] of an install with `values` (a JSON object, e.g.
/// `{"operator": {"watchNamespaces": ["*"]}}`) over the minimal ones.
pub fn chart_rbac_with(
    namespace: &str,
    release: &str,
    values: &Value,
) -> std::io::Result<Vec<Value>> {
    static CACHE: Mutex<Option<Rendered>> = Mutex::new(None);
    let values = values.to_string();
    let key = (namespace.to_owned(), release.to_owned(), values.clone());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(objects) = cache.get_or_insert_default().get(&key) {
        return Ok(objects.clone());
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/render_rbac.py");
    let output = std::process::Command::new("python3")
        .args([script, namespace, release, &values])
        .output()?;
    if !output.status.success() {
        return Err(std::io::Error::other(format!(
            "{script} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let objects: Vec<Value> = serde_json::from_slice(&output.stdout)
        .map_err(|e| std::io::Error::other(format!("{script} printed no JSON list: {e}")))?;
    cache.get_or_insert_default().insert(key, objects.clone());
    Ok(objects)
}

/// `objects` without the rule of `role` (its `metadata.name`) at `index`.
pub fn without_rule(mut objects: Vec<Value>, role: &str, index: usize) -> Vec<Value> {
    for object in &mut objects {
        let is_role = matches!(kind_of(object), "Role" | "ClusterRole") && name_of(object) == role;
        if is_role
            && let Some(rules) = object["rules"].as_array_mut()
            && index < rules.len()
        {
            rules.remove(index);
        }
    }
    objects
}

/// `objects` with `verb` taken out of the rule of `role` (its `metadata.name`) at
/// `index` (the rule's other verbs stay).
pub fn without_verb(mut objects: Vec<Value>, role: &str, index: usize, verb: &str) -> Vec<Value> {
    for object in &mut objects {
        let is_role = matches!(kind_of(object), "Role" | "ClusterRole") && name_of(object) == role;
        if is_role
            && let Some(verbs) = object["rules"]
                .get_mut(index)
                .and_then(|rule| rule["verbs"].as_array_mut())
        {
            verbs.retain(|v| v.as_str() != Some(verb));
        }
    }
    objects
}

/// The index of the first rule of `role` (its `metadata.name`) that covers `verb`
/// on `resource` (with any subresource as `resource/sub`) in `group`.
pub fn rule_index(
    objects: &[Value],
    role: &str,
    group: &str,
    resource: &str,
    verb: &str,
) -> Option<usize> {
    let role = objects
        .iter()
        .find(|o| matches!(kind_of(o), "Role" | "ClusterRole") && name_of(o) == role)?;
    role["rules"].as_array()?.iter().position(|rule| {
        holds(&rule["verbs"], verb)
            && holds(&rule["apiGroups"], group)
            && holds(&rule["resources"], resource)
    })
}
