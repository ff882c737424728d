//! Which watch events start a reconcile, and what the operator remembers of its
//! children between reconciles.
//!
//! A reconcile makes a handful of requests, so every event that starts one without
//! need costs the apiserver. Left to itself, kube's `Controller` reconciles a
//! workspace on every change to it and to each child: its own status writes, each
//! child's creation, the scheduler binding the pod, the kubelet's status updates:
//! about nine reconciles to bring one workspace up. The gates here let through
//! only what can change the outcome:
//!
//! - a workspace: when it is new (first listed or created), its spec changed
//!   (`generation`), its deletion began, its finalizers changed, or the router's
//!   `lastActivity` appeared or moved *earlier* (a later one only postpones the
//!   reaper, whose requeue is already scheduled and recomputes the deadline). Status
//!   writes, the operator's own included, do not reconcile.
//! - a child: when it is deleted, or changes in what [`ChildMark`] sees of it (a pod:
//!   its phase, readiness, deletion, labels, annotations and images; any other
//!   child: every stored change, its `resourceVersion`), never when it first
//!   appears: the operator made it, and the reconcile that did has seen it. After a
//!   watch had to list again (its history expired), children new to the list do
//!   trigger: they changed while nobody watched.
//!
//! [`ChildVersions`] lets a reconcile skip re-applying a child that is exactly what
//! the operator last applied: see [`ChildVersions::unchanged`], and for the pod,
//! whose status others write, [`ChildVersions::unchanged_pod`].

use std::{
    any::Any,
    collections::{HashMap, HashSet},
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex, MutexGuard},
};

use futures::{Stream, StreamExt, future};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use kube::{
    Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::watcher::{self, Event},
};

use crate::crd::JarvisWorkspace;

/// What decides whether a change to an object starts a reconcile.
pub trait Mark<K> {
    /// The part of `object` whose changes matter.
    type Mark: PartialEq;
    /// Take the mark of `object`.
    fn mark(object: &K) -> Self::Mark;
    /// Whether going from `before` (`None`: first seen) to `after` starts a reconcile.
    fn wakes(before: Option<&Self::Mark>, after: &Self::Mark) -> bool;
}

/// What of a workspace starts its reconcile (see the module docs).
#[derive(Debug, PartialEq)]
pub struct WorkspaceMark {
    generation: Option<i64>,
    deleting: bool,
    finalizers: Vec<String>,
    last_activity: Option<k8s_openapi::jiff::Timestamp>,
}

impl Mark<JarvisWorkspace> for WorkspaceMark {
    type Mark = Self;

    fn mark(ws: &JarvisWorkspace) -> Self {
        Self {
            generation: ws.metadata.generation,
            deleting: ws.metadata.deletion_timestamp.is_some(),
            finalizers: ws.finalizers().to_vec(),
            last_activity: ws
                .status
                .as_ref()
                .and_then(|s| s.last_activity.as_ref())
                .map(|t| t.0),
        }
    }

    fn wakes(before: Option<&Self>, after: &Self) -> bool {
        let Some(before) = before else {
            return true;
        };
        let activity_earlier = match (before.last_activity, after.last_activity) {
            (None, Some(_)) => true,
            (Some(before), Some(after)) => after < before,
            (_, None) => false,
        };
        before.generation != after.generation
            || before.deleting != after.deleting
            || before.finalizers != after.finalizers
            || activity_earlier
    }
}

/// What of a child starts its owner's reconcile: a hash of the fields that matter.
pub struct ChildMark;

fn hashed(value: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

impl Mark<Pod> for ChildMark {
    type Mark = u64;

    /// A pod: what the workspace's status is made of (phase, readiness, deletion)
    /// and what the operator applies that can change in place (labels,
    /// annotations, images); not the scheduler's binding nor timestamps.
    fn mark(pod: &Pod) -> u64 {
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.as_str());
        let images: Vec<Option<&str>> = pod
            .spec
            .iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .map(|c| c.image.as_deref())
            .collect();
        hashed((
            status.and_then(|s| s.phase.as_deref()),
            ready,
            pod.metadata.deletion_timestamp.is_some(),
            pod.metadata.labels.as_ref(),
            pod.metadata.annotations.as_ref(),
            images,
        ))
    }

    fn wakes(before: Option<&u64>, after: &u64) -> bool {
        before.is_some_and(|before| before != after)
    }
}

impl<K: Resource> Mark<PartialObjectMeta<K>> for ChildMark {
    type Mark = u64;

    /// Any other child: every stored change (a real apiserver stores nothing for a
    /// write that changes nothing, the operator's repeated applies included).
    fn mark(child: &PartialObjectMeta<K>) -> u64 {
        hashed(child.metadata.resource_version.as_deref())
    }

    fn wakes(before: Option<&u64>, after: &u64) -> bool {
        before.is_some_and(|before| before != after)
    }
}

/// The marks a gate remembers, by `uid`, across the events of one watch.
struct Gate<M> {
    marks: HashMap<String, M>,
    /// Whether the first list is done: later lists are re-lists.
    listed: bool,
    /// The uids of the list under way, to forget the objects that left meanwhile.
    listing: HashSet<String>,
}

impl<M: PartialEq> Gate<M> {
    fn new() -> Self {
        Self {
            marks: HashMap::new(),
            listed: false,
            listing: HashSet::new(),
        }
    }

    /// Note `mark` for `uid` (`in_list`: from a list, not a watch event); whether
    /// that starts a reconcile. During the first list only `first_list` kinds wake
    /// (their owners are listed and reconciled anyway); an object new to a re-list
    /// came while the watch was away and wakes.
    fn note(
        &mut self,
        uid: String,
        mark: M,
        wakes: fn(Option<&M>, &M) -> bool,
        in_list: bool,
        first_list: bool,
    ) -> bool {
        let before = self.marks.get(&uid);
        let wake = match (in_list, self.listed) {
            (true, false) => first_list,
            (true, true) if before.is_none() => true,
            _ => wakes(before, &mark),
        };
        self.marks.insert(uid, mark);
        wake
    }
}

/// Filter the events of `events` through `M`'s rules, passing on the objects whose
/// change starts a reconcile: deleted ones when `deletes` (children), and every
/// object of the first list when `first_list` (the workspaces). `observe` sees
/// every event's object first (e.g. to note child versions).
fn gate<K, M, S>(
    events: S,
    deletes: bool,
    first_list: bool,
    observe: impl Fn(&K, bool) + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Send + 'static,
    M: Mark<K>,
    M::Mark: Send + 'static,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    let mut gate = Gate::<M::Mark>::new();
    events.filter_map(move |event| {
        let passed = match event {
            Err(error) => Some(Err(error)),
            Ok(Event::Init) => {
                gate.listing.clear();
                None
            }
            Ok(Event::InitApply(object)) => {
                observe(&object, false);
                let uid = object.uid().unwrap_or_default();
                gate.listing.insert(uid.clone());
                let wake = gate.note(uid, M::mark(&object), M::wakes, true, first_list);
                wake.then_some(Ok(object))
            }
            Ok(Event::InitDone) => {
                let listing = std::mem::take(&mut gate.listing);
                gate.marks.retain(|uid, _| listing.contains(uid));
                gate.listed = true;
                None
            }
            Ok(Event::Apply(object)) => {
                observe(&object, false);
                let uid = object.uid().unwrap_or_default();
                let wake = gate.note(uid, M::mark(&object), M::wakes, false, first_list);
                wake.then_some(Ok(object))
            }
            Ok(Event::Delete(object)) => {
                observe(&object, true);
                gate.marks.remove(&object.uid().unwrap_or_default());
                deletes.then_some(Ok(object))
            }
        };
        future::ready(passed)
    })
}

/// The workspaces of `events` (already reflected into the controller's store) whose
/// change starts a reconcile.
pub fn workspaces(
    events: impl Stream<Item = Result<Event<JarvisWorkspace>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Result<JarvisWorkspace, watcher::Error>> + Send {
    gate::<_, WorkspaceMark, _>(events, false, true, |_, _| {})
}

/// The children of `events` whose change starts their owner's reconcile; every
/// event's `resourceVersion` is noted in `versions`.
pub fn children<K>(
    events: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
    versions: Arc<ChildVersions>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Send + 'static,
    K::DynamicType: Default,
    ChildMark: Mark<K>,
    <ChildMark as Mark<K>>::Mark: Send + 'static,
{
    gate::<_, ChildMark, _>(events, true, false, move |child: &K, deleted| {
        versions.observe(child, deleted);
    })
}

/// A child object, by kind, namespace and name.
type ChildKey = (String, String, String);

fn child_key<K: Resource>(object: &K) -> ChildKey
where
    K::DynamicType: Default,
{
    let meta = object.meta();
    (
        K::kind(&K::DynamicType::default()).into_owned(),
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Per child: the `resourceVersion` its watch last showed, and what the operator last
/// applied to it (a hash of the applied object) with the `resourceVersion` the
/// apiserver answered. Per pod besides: what its watch last showed ([`SeenPod`]), and
/// the uid and [`pod_shape`] of what the operator's last apply of it answered.
#[derive(Default)]
pub struct ChildVersions {
    state: Mutex<Versions>,
}

#[derive(Default)]
struct Versions {
    seen: HashMap<ChildKey, String>,
    applied: HashMap<ChildKey, (u64, String)>,
    pods_seen: HashMap<ChildKey, SeenPod>,
    /// The hash of the applied body, and the uid and shape the apiserver answered.
    pods_applied: HashMap<ChildKey, (u64, Option<String>, u64)>,
}

/// What the operator keeps of a watched pod: its uid, its [`pod_shape`], and the pod
/// reduced to its name, uid, deletion, phase, reason, message and conditions (what
/// a workspace's status is made of; not the container statuses).
#[derive(Clone)]
struct SeenPod {
    uid: Option<String>,
    shape: u64,
    pod: Pod,
}

impl SeenPod {
    fn of(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        Self {
            uid: meta.uid.clone(),
            shape: pod_shape(pod),
            pod: Pod {
                metadata: kube::api::ObjectMeta {
                    name: meta.name.clone(),
                    namespace: meta.namespace.clone(),
                    uid: meta.uid.clone(),
                    resource_version: meta.resource_version.clone(),
                    deletion_timestamp: meta.deletion_timestamp.clone(),
                    deletion_grace_period_seconds: meta.deletion_grace_period_seconds,
                    ..kube::api::ObjectMeta::default()
                },
                spec: None,
                status: pod.status.as_ref().map(|status| PodStatus {
                    phase: status.phase.clone(),
                    reason: status.reason.clone(),
                    message: status.message.clone(),
                    conditions: status.conditions.clone(),
                    ..PodStatus::default()
                }),
            },
        }
    }
}

/// A hash of what of a stored pod is not status: its spec (but the node the
/// scheduler bound it to), labels, annotations, owners, finalizers and deletion.
/// The scheduler's binding and the kubelet's status updates leave it as it is;
/// anything the operator's apply would set back changes it.
fn pod_shape(pod: &Pod) -> u64 {
    let spec = pod.spec.clone().map(|spec| PodSpec {
        node_name: None,
        ..spec
    });
    let meta = &pod.metadata;
    let shape = serde_json::to_vec(&(
        spec,
        &meta.labels,
        &meta.annotations,
        &meta.owner_references,
        &meta.finalizers,
        &meta.deletion_timestamp,
    ))
    .unwrap_or_default();
    hashed(shape)
}

impl ChildVersions {
    fn lock(&self) -> MutexGuard<'_, Versions> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn observe<K: Resource + 'static>(&self, child: &K, deleted: bool)
    where
        K::DynamicType: Default,
    {
        let key = child_key(child);
        let pod = (child as &dyn Any).downcast_ref::<Pod>().map(SeenPod::of);
        let mut state = self.lock();
        match (&child.meta().resource_version, deleted) {
            (Some(version), false) => {
                state.seen.insert(key.clone(), version.clone());
                if let Some(pod) = pod {
                    state.pods_seen.insert(key, pod);
                }
            }
            _ => {
                state.seen.remove(&key);
                state.applied.remove(&key);
                state.pods_seen.remove(&key);
                state.pods_applied.remove(&key);
            }
        }
    }

    /// Note that applying `applied` (its serialised body) stored version `version`.
    pub fn applied<K: Resource>(&self, object: &K, applied: &[u8], version: Option<&str>)
    where
        K::DynamicType: Default,
    {
        let key = child_key(object);
        let mut state = self.lock();
        match version {
            Some(version) => {
                state
                    .applied
                    .insert(key, (hashed(applied), version.to_owned()));
            }
            None => {
                state.applied.remove(&key);
            }
        }
    }

    /// Note that applying pod `applied` (its serialised body) stored `stored`.
    pub fn applied_pod(&self, applied: &Pod, body: &[u8], stored: &Pod) {
        let key = child_key(applied);
        self.lock().pods_applied.insert(
            key,
            (hashed(body), stored.metadata.uid.clone(), pod_shape(stored)),
        );
    }

    /// The pod as its watch last showed it (name, uid, deletion and status only), when
    /// applying `pod` (serialised as `body`) again would change nothing: the operator
    /// applied the very same body last, and the watch shows the same pod (its uid)
    /// with nothing but its status and node changed since that apply answered, and
    /// not being deleted. Others write a pod's status (the kubelet), so its
    /// `resourceVersion` moves on without the operator's fields changing. A watch
    /// that lags behind shows an older status, whose change to come starts another
    /// reconcile; with no pod seen, or anything else different, the answer is `None`
    /// (apply again).
    pub fn unchanged_pod(&self, pod: &Pod, body: &[u8]) -> Option<Pod> {
        let key = child_key(pod);
        let state = self.lock();
        let (hash, uid, shape) = state.pods_applied.get(&key)?;
        let seen = state.pods_seen.get(&key)?;
        let same = *hash == hashed(body)
            && seen.uid.is_some()
            && seen.uid == *uid
            && seen.shape == *shape
            && seen.pod.metadata.deletion_timestamp.is_none();
        same.then(|| seen.pod.clone())
    }

    /// Whether applying `object` (serialised as `body`) again would change nothing:
    /// the operator applied the very same body last, and its watch has since seen the
    /// child at exactly the version that apply stored, so nobody changed or deleted
    /// it since. When the watch lags behind, the answer is no (apply again).
    pub fn unchanged<K: Resource>(&self, object: &K, body: &[u8]) -> bool
    where
        K::DynamicType: Default,
    {
        let key = child_key(object);
        let state = self.lock();
        match (state.applied.get(&key), state.seen.get(&key)) {
            (Some((hash, applied)), Some(seen)) => *hash == hashed(body) && applied == seen,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::{StreamExt, stream};
    use k8s_openapi::api::core::v1::Service;
    use kube::api::ObjectMeta;
    use serde_json::json;

    use super::*;
    use crate::fixtures::alice;

    fn pod(uid: &str, rv: u64, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": "jw-alice", "namespace": "jarvis", "uid": uid,
                "resourceVersion": rv.to_string() },
            "spec": { "containers": [{ "name": "sandbox", "image": "i:1" }] },
            "status": status,
        }))
        .expect("a pod parses")
    }

    fn ready() -> serde_json::Value {
        json!({ "phase": "Running", "conditions": [{ "type": "Ready", "status": "True" }] })
    }

    async fn passed<K: Resource + Send + 'static>(
        events: Vec<Event<K>>,
        filter: impl FnOnce(
            stream::Iter<std::vec::IntoIter<Result<Event<K>, watcher::Error>>>,
        ) -> futures::stream::BoxStream<'static, Result<K, watcher::Error>>,
    ) -> Vec<String> {
        filter(stream::iter(events.into_iter().map(Ok).collect::<Vec<_>>()))
            .map(|k| {
                let k = k.expect("no error");
                format!(
                    "{}@{}",
                    k.name_any(),
                    k.resource_version().unwrap_or_default()
                )
            })
            .collect()
            .await
    }

    #[tokio::test]
    async fn a_pod_wakes_its_owner_when_it_gets_ready_or_goes_not_when_made_or_bound() {
        let versions = Arc::new(ChildVersions::default());
        let mut bound = pod("u1", 3, json!({ "phase": "Pending" }));
        bound.spec.as_mut().expect("spec").node_name = Some("node".into());
        let events = vec![
            Event::Init,
            Event::InitDone,
            Event::Apply(pod("u1", 2, json!({ "phase": "Pending" }))),
            Event::Apply(bound),
            Event::Apply(pod("u1", 4, ready())),
            Event::Apply(pod("u1", 5, ready())),
            Event::Delete(pod("u1", 6, ready())),
        ];
        let versions2 = versions.clone();
        let passed = passed(events, move |s| children(s, versions2).boxed()).await;
        assert_eq!(passed, ["jw-alice@4", "jw-alice@6"]);
    }

    #[tokio::test]
    async fn the_first_list_of_children_wakes_nobody_a_relist_wakes_for_what_changed() {
        let versions = Arc::new(ChildVersions::default());
        let events = vec![
            Event::Init,
            Event::InitApply(pod("u1", 2, ready())),
            Event::InitDone,
            // The watch expired; meanwhile u1 was replaced by u2.
            Event::Init,
            Event::InitApply(pod("u2", 9, ready())),
            Event::InitDone,
        ];
        let passed = passed(events, move |s| children(s, versions).boxed()).await;
        assert_eq!(passed, ["jw-alice@9"]);
    }

    #[tokio::test]
    async fn a_workspace_wakes_for_spec_deletion_finalizers_and_earlier_activity_only() {
        let at =
            |s: i64| k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + s).expect("time");
        let version = |mut ws: JarvisWorkspace, rv: u64| {
            ws.metadata.resource_version = Some(rv.to_string());
            ws
        };
        let finalized = alice().finalized();
        let mut waking = finalized.clone().ready_since(at(0));
        if let Some(status) = waking.status.as_mut() {
            status.last_activity = None;
        }
        let active = finalized.clone().ready_since(at(0));
        let later = finalized.clone().ready_since(at(60));
        let earlier = finalized.clone().ready_since(at(-60));
        let mut respec = earlier.clone();
        respec.metadata.generation = Some(respec.metadata.generation.unwrap_or(1) + 1);
        let deleting = respec.clone().deleting();
        let events = vec![
            Event::Init,
            Event::InitApply(version(alice(), 1)),
            Event::InitDone,
            Event::Apply(version(finalized, 2)),
            Event::Apply(version(waking, 3)),
            Event::Apply(version(active, 4)),
            Event::Apply(version(later, 5)),
            Event::Apply(version(earlier, 6)),
            Event::Apply(version(respec, 7)),
            Event::Apply(version(deleting, 8)),
        ];
        let passed = passed(events, |s| workspaces(s).boxed()).await;
        assert_eq!(
            passed,
            [
                "alice@1", "alice@2", "alice@4", "alice@6", "alice@7", "alice@8"
            ]
        );
    }

    #[test]
    fn a_pod_is_unchanged_while_only_its_status_and_node_moved() {
        let versions = ChildVersions::default();
        let applied = pod("u1", 2, json!({ "phase": "Pending" }));
        let body = b"body";
        assert!(
            versions.unchanged_pod(&applied, body).is_none(),
            "never applied"
        );
        versions.applied_pod(&applied, body, &applied);
        assert!(
            versions.unchanged_pod(&applied, body).is_none(),
            "not seen yet"
        );
        let mut running = pod("u1", 4, ready());
        running.spec.as_mut().expect("spec").node_name = Some("node".into());
        versions.observe(&running, false);
        let seen = versions.unchanged_pod(&applied, body).expect("unchanged");
        assert_eq!(seen.status, running.status, "the status the watch showed");
        assert!(
            versions.unchanged_pod(&applied, b"other").is_none(),
            "a new body"
        );

        let mut relabelled = running.clone();
        relabelled
            .labels_mut()
            .insert("edited".into(), "by-someone".into());
        versions.observe(&relabelled, false);
        assert!(
            versions.unchanged_pod(&applied, body).is_none(),
            "relabelled"
        );
        versions.observe(&pod("u2", 6, ready()), false);
        assert!(
            versions.unchanged_pod(&applied, body).is_none(),
            "another pod of that name"
        );
        versions.observe(&running, false);
        assert!(versions.unchanged_pod(&applied, body).is_some());
        let mut deleting = running.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        versions.observe(&deleting, false);
        assert!(
            versions.unchanged_pod(&applied, body).is_none(),
            "being deleted"
        );
        versions.observe(&deleting, true);
        versions.observe(&running, false);
        assert!(
            versions.unchanged_pod(&applied, body).is_none(),
            "deleted since the apply"
        );
    }

    #[test]
    fn a_child_is_unchanged_only_at_the_version_the_operator_applied() {
        let versions = ChildVersions::default();
        let service = Service {
            metadata: ObjectMeta {
                name: Some("jw-alice".into()),
                namespace: Some("jarvis".into()),
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            ..Service::default()
        };
        assert!(!versions.unchanged(&service, b"body"), "never applied");
        versions.applied(&service, b"body", Some("7"));
        assert!(!versions.unchanged(&service, b"body"), "not seen yet");
        versions.observe(&service, false);
        assert!(versions.unchanged(&service, b"body"));
        assert!(!versions.unchanged(&service, b"other"), "a new body");
        let mut edited = service.clone();
        edited.metadata.resource_version = Some("8".into());
        versions.observe(&edited, false);
        assert!(!versions.unchanged(&service, b"body"), "changed by someone");
        versions.applied(&service, b"body", Some("8"));
        assert!(versions.unchanged(&service, b"body"));
        versions.observe(&edited, true);
        assert!(!versions.unchanged(&service, b"body"), "deleted");
    }
}
