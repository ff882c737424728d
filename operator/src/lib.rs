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

pub use crd::{JarvisWorkspace, JarvisWorkspaceSpec, JarvisWorkspaceStatus, WorkspacePhase};

/// Everything that can go wrong while reconciling a workspace.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The workspace's spec failed validation; retrying will not help until it changes.
    #[error("invalid workspace spec: {0}")]
    InvalidSpec(#[from] controller::build::ValidationError),
}

/// Result with this crate's [`Error`] by default.
pub type Result<T, E = Error> = std::result::Result<T, E>;
