//! Test support shared with other crates' tests (feature `test-support`): a
//! wire-level fake Kubernetes API server.

/// The fake API server and its kubelet.
pub mod fake_apiserver;
/// RBAC as the fake API server enforces it.
pub mod rbac;

pub use fake_apiserver::{FakeApiServer, PodAddress, PodRunner};
