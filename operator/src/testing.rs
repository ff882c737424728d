//! Test support shared with other crates' tests (feature `test-support`): a
//! wire-level fake Kubernetes API server.

/// The fake API server and its kubelet.
pub mod fake_apiserver;

pub use fake_apiserver::{FakeApiServer, PodAddress, PodRunner};
