//! The warm pool's keeper: per namespace, [`Settings::warm_pool`] pool pods
//! ([`build::warm`]) kept started and unclaimed. Each pass applies the pool's
//! NetworkPolicy (before any pool pod runs), lists the pool's pods, deletes the
//! failed ones and the claimed ones no workspace adopted within
//! [`UNADOPTED_AFTER`] (the router that claimed one died before it scaled its
//! workspace up), and creates what is missing: the pod, then its claim Secret,
//! owned by the pod (the kubelet starts the container once the Secret exists).
//! A pass runs at start, on every change of a pool pod (a claim relabels one,
//! so the refill starts at once), and every [`CHECK_EVERY`].
//!
//! [`Settings::warm_pool`]: build::Settings::warm_pool

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::{
    api::core::v1::{Pod, Secret},
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::watcher,
};
use tracing::{info, warn};

use super::{
    Context, apply,
    build::{
        self,
        warm::{AVAILABLE, CLAIMED, POOL_POD_PREFIX, WARM_LABEL},
    },
};
use crate::{Error, Result};

/// Longest time between two passes.
pub const CHECK_EVERY: Duration = Duration::from_secs(30);
/// How long a claimed pool pod may wait for its workspace to adopt it.
pub const UNADOPTED_AFTER: Duration = Duration::from_secs(300);
/// Pause after a failed pass.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Keeps the pool of `namespace` filled, forever.
pub async fn keep_filled(ctx: std::sync::Arc<Context>, namespace: String) {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &namespace);
    let mut changes = watcher(pods, watcher::Config::default().labels(WARM_LABEL)).boxed();
    loop {
        let pause = match fill(&ctx, &namespace).await {
            Ok(()) => CHECK_EVERY,
            Err(error) => {
                warn!(%error, namespace, "filling the warm pool failed");
                RETRY_AFTER
            }
        };
        tokio::select! {
            _ = changes.next() => {}
            () = tokio::time::sleep(pause) => {}
        }
        // One pass for a burst of changes.
        while let Some(Some(_)) = changes.next().now_or_never() {}
    }
}

/// What a pass does with a pool pod.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Counts towards the pool (starting or ready, unclaimed).
    Available,
    /// A workspace's now, or on its way (claimed, within [`UNADOPTED_AFTER`]).
    Claimed,
    /// Delete it: failed, or claimed and never adopted.
    Remove,
    /// Being deleted already.
    Going,
}

/// The verdict on pool pod `pod` at `now`.
pub fn verdict(pod: &Pod, now: Timestamp) -> Verdict {
    if pod.metadata.deletion_timestamp.is_some() {
        return Verdict::Going;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Failed" | "Succeeded")) {
        return Verdict::Remove;
    }
    match pod.labels().get(WARM_LABEL).map(String::as_str) {
        Some(AVAILABLE) => Verdict::Available,
        Some(CLAIMED) => {
            let adopted = pod
                .metadata
                .owner_references
                .as_ref()
                .is_some_and(|refs| !refs.is_empty());
            let age = pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|created| now.duration_since(created.0));
            let stale = age.is_some_and(|age| age.as_secs() >= UNADOPTED_AFTER.as_secs() as i64);
            if adopted || !stale {
                Verdict::Claimed
            } else {
                Verdict::Remove
            }
        }
        _ => Verdict::Remove,
    }
}

/// One pass over the pool of `namespace`.
async fn fill(ctx: &Context, namespace: &str) -> Result<()> {
    apply::apply_pool_network(ctx, namespace).await?;
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
    let listed = pods
        .list(&ListParams::default().labels(WARM_LABEL))
        .await
        .map_err(|source| Error::Apply {
            kind: "Pod".to_owned(),
            name: format!("{POOL_POD_PREFIX}*"),
            source,
        })?;
    let now = Timestamp::now();
    let mut available = 0;
    for pod in &listed.items {
        match verdict(pod, now) {
            Verdict::Available => available += 1,
            Verdict::Remove => {
                info!(pod = %pod.name_any(), "removing a failed or unadopted warm pod");
                delete(&pods, &pod.name_any()).await?;
            }
            Verdict::Claimed | Verdict::Going => {}
        }
    }
    for _ in available..ctx.settings.warm_pool {
        start_one(ctx, namespace).await?;
    }
    Ok(())
}

/// Creates one pool pod and its claim Secret.
async fn start_one(ctx: &Context, namespace: &str) -> Result<()> {
    let name = format!(
        "{POOL_POD_PREFIX}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let pod = build::warm::build_warm_pod(&name, namespace, &ctx.settings);
    let params = PostParams {
        field_manager: Some(apply::FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
    let created = pods
        .create(&params, &pod)
        .await
        .map_err(|source| Error::Apply {
            kind: "Pod".to_owned(),
            name: name.clone(),
            source,
        })?;
    let secret = build::warm::build_claim_secret(&created, &claim_secret());
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    if let Err(source) = secrets.create(&params, &secret).await {
        // A pod that can never start is no use to anyone.
        delete(&pods, &name).await?;
        return Err(Error::Apply {
            kind: "Secret".to_owned(),
            name: build::warm::claim_secret_name(&name),
            source,
        });
    }
    info!(pod = %name, namespace, "warm pod created");
    Ok(())
}

async fn delete(pods: &Api<Pod>, name: &str) -> Result<()> {
    match pods.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Delete {
            kind: "Pod".to_owned(),
            name: name.to_owned(),
            source,
        }),
    }
}

/// A fresh claim secret: 244 random bits.
fn claim_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    use super::*;
    use crate::controller::build::Settings;

    fn pod(label: &str, age: Duration) -> Pod {
        let mut pod = build::warm::build_warm_pod("jw-warm-1", "jarvis", &Settings::default());
        pod.labels_mut()
            .insert(WARM_LABEL.to_owned(), label.to_owned());
        let created =
            Timestamp::now() - k8s_openapi::jiff::SignedDuration::try_from(age).expect("an age");
        pod.metadata.creation_timestamp = Some(Time(created));
        pod
    }

    #[test]
    fn a_pass_counts_unclaimed_pods_and_removes_failed_and_unadopted_ones() {
        let now = Timestamp::now();
        assert_eq!(
            verdict(&pod(AVAILABLE, Duration::ZERO), now),
            Verdict::Available
        );
        let mut failed = pod(AVAILABLE, Duration::ZERO);
        failed.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Failed".to_owned()),
            ..Default::default()
        });
        assert_eq!(verdict(&failed, now), Verdict::Remove);
        assert_eq!(
            verdict(&pod(CLAIMED, Duration::from_secs(5)), now),
            Verdict::Claimed
        );
        let unadopted = pod(CLAIMED, UNADOPTED_AFTER + Duration::from_secs(1));
        assert_eq!(verdict(&unadopted, now), Verdict::Remove);
        let mut adopted = unadopted.clone();
        adopted.metadata.owner_references = Some(vec![OwnerReference::default()]);
        assert_eq!(
            verdict(&adopted, now),
            Verdict::Claimed,
            "a workspace's pod"
        );
        assert_eq!(
            verdict(&pod("broken", Duration::ZERO), now),
            Verdict::Remove
        );
    }
}
