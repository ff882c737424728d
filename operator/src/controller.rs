//! The workspace controller. For now only its pure building blocks; the reconcile
//! driver (finalizer, server-side apply, status, idle reaper) comes next.

/// Pure builders: validated workspace + settings -> Pod, Service, NetworkPolicy.
pub mod build;
