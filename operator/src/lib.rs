//! The Jarvis operator library: the `JarvisWorkspace` type and the controller that
//! turns each workspace into a sandbox Pod, Service and NetworkPolicy.
//!
//! The router depends on this crate for the `JarvisWorkspace` type; nothing here
//! depends on the router.

/// The `JarvisWorkspace` custom resource and its generated CRD.
pub mod crd;

/// The generated CRD YAML and its staleness check.
pub mod crd_yaml;

/// The reconciler and its pure building blocks.
pub mod controller;

/// Leader election over a Lease: only the holder runs the controller.
pub mod leader;

/// Command-line and environment configuration of the operator binary.
pub mod config;

/// Prometheus metrics of the reconciler.
pub mod metrics;

/// The Kubernetes resource-quantity grammar (`500m`, `2Gi`).
pub mod quantity;

/// The `/healthz` and `/metrics` HTTP endpoints.
pub mod server;

#[cfg(test)]
mod fixtures;

/// Test support for this and other crates: the fake Kubernetes API server.
#[cfg(feature = "test-support")]
pub mod testing;

pub use crd::{JarvisWorkspace, JarvisWorkspaceSpec, JarvisWorkspaceStatus, WorkspacePhase};

/// Everything that can go wrong while reconciling a workspace.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The workspace's spec failed validation; retrying will not help until it changes.
    #[error("invalid workspace spec: {0}")]
    InvalidSpec(#[from] controller::build::ValidationError),

    /// Listing `JarvisWorkspace`s failed at startup: most likely the CRD is missing.
    #[error(
        "cannot list JarvisWorkspaces ({0}); is the CRD installed? \
         kubectl apply -f crds/jarvisworkspace.yaml"
    )]
    CrdNotQueryable(#[source] kube::Error),

    /// Listing `JarvisWorkspace`s at startup answered 403: the operator's RBAC does
    /// not cover the namespaces it was told to watch.
    #[error(
        "may not list JarvisWorkspaces in {scope} ({source}); the operator's RBAC must \
         cover every namespace of WATCH_NAMESPACE (the chart's operator.watchNamespaces)"
    )]
    ListForbidden {
        /// The namespace, or `every namespace`.
        scope: String,
        /// The apiserver's answer.
        source: kube::Error,
    },

    /// The warm pool has no namespace to be kept in (`*` names none), or one the
    /// operator does not watch.
    #[error("warm pool: {0}")]
    PoolNamespaces(String),

    /// The workspace object has no namespace.
    #[error("workspace has no namespace")]
    MissingNamespace,

    /// Server-side apply of a child object failed.
    #[error("applying {kind} {name} failed: {source}")]
    Apply {
        /// Kind of the child object.
        kind: String,
        /// Name of the child object.
        name: String,
        /// The apiserver's error.
        #[source]
        source: kube::Error,
    },

    /// Deleting a child object failed.
    #[error("deleting {kind} {name} failed: {source}")]
    Delete {
        /// Kind of the child object.
        kind: String,
        /// Name of the child object.
        name: String,
        /// The apiserver's error.
        #[source]
        source: kube::Error,
    },

    /// Scaling an idle workspace to 0 failed.
    #[error("scaling workspace {name} to 0 failed: {source}")]
    Scale {
        /// Workspace name.
        name: String,
        /// The apiserver's error.
        #[source]
        source: kube::Error,
    },

    /// Writing the workspace's status failed.
    #[error("updating the status of workspace {name} failed: {source}")]
    Status {
        /// Workspace name.
        name: String,
        /// The apiserver's error.
        #[source]
        source: kube::Error,
    },

    /// The workspace is being deleted and its pod is still terminating.
    #[error("pod of workspace {name} is still terminating")]
    PodTerminating {
        /// Workspace name.
        name: String,
    },

    /// The finalizer helper failed, or the apply/cleanup it ran did. Boxed to break
    /// the type cycle (`finalizer::Error<Error>` inside `Error`).
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Short snake-case name of the error kind, the `error` label of the failure
    /// metric. A finalizer error is named for the error inside it.
    pub fn metric_label(&self) -> &'static str {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::InvalidSpec(_) => "invalid_spec",
            Error::CrdNotQueryable(_) => "crd_not_queryable",
            Error::ListForbidden { .. } => "list_forbidden",
            Error::PoolNamespaces(_) => "pool_namespaces",
            Error::MissingNamespace => "missing_namespace",
            Error::Apply { .. } => "apply",
            Error::Delete { .. } => "delete",
            Error::Scale { .. } => "scale",
            Error::Status { .. } => "status",
            Error::PodTerminating { .. } => "pod_terminating",
            Error::Finalizer(inner) => match inner.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.metric_label(),
                F::AddFinalizer(_) => "add_finalizer",
                F::RemoveFinalizer(_) => "remove_finalizer",
                _ => "finalizer",
            },
        }
    }

    /// Whether this error is (or wraps) an invalid spec, which no retry can fix.
    pub fn is_invalid_spec(&self) -> bool {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::InvalidSpec(_) => true,
            Error::Finalizer(inner) => match inner.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.is_invalid_spec(),
                _ => false,
            },
            _ => false,
        }
    }
}

/// Result with this crate's [`Error`] by default.
pub type Result<T, E = Error> = std::result::Result<T, E>;
