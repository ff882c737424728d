//! Prometheus metrics of the reconciler: reconciles, failures by error kind,
//! reconcile durations and idle reaps. Owns the metric definitions and their
//! registration; `server.rs` serves them at `/metrics`.

use std::time::Instant;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// Labels of the failure counter: which kind of error (see `Error::metric_label`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Snake-case error kind, e.g. `invalid_spec` or `apply`.
    pub error: String,
}

/// The reconciler's metrics, registered once and shared through the controller context.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Reconciles started.
    pub reconciles: Counter,
    /// Reconciles that failed, by error kind.
    pub failures: Family<ErrorLabels, Counter>,
    /// Reconcile duration in seconds.
    pub duration: Histogram,
    /// Workspaces scaled to 0 by the idle reaper.
    pub reaped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Counter::default(),
            failures: Family::default(),
            // 1 ms .. ~8 s
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            reaped: Counter::default(),
        }
    }
}

impl Metrics {
    /// New metrics registered in `registry` under the `jarvis_operator_` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let registry = registry.sub_registry_with_prefix("jarvis_operator");
        registry.register(
            "reconciles",
            "Workspace reconciles started",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Workspace reconciles that failed, by error kind",
            metrics.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time a workspace reconcile took",
            metrics.duration.clone(),
        );
        registry.register(
            "idle_reaps",
            "Workspaces scaled to 0 after their idle timeout",
            metrics.reaped.clone(),
        );
        metrics
    }

    /// Count a reconcile and time it until the returned guard drops.
    pub fn count_and_measure(&self) -> ReconcileTimer {
        self.reconciles.inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.duration.clone(),
        }
    }

    /// Count a failed reconcile under its error kind.
    pub fn reconcile_failure(&self, error: &crate::Error) {
        self.failures
            .get_or_create(&ErrorLabels {
                error: error.metric_label().to_owned(),
            })
            .inc();
    }
}

/// Records a reconcile's duration when dropped.
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;
    use crate::{Error, controller::build::ValidationError};

    #[test]
    fn failures_are_counted_by_error_kind_and_reconciles_are_timed() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        drop(metrics.count_and_measure());
        metrics.reconcile_failure(&Error::InvalidSpec(ValidationError::EmptyImage));
        metrics.reconcile_failure(&Error::PodTerminating {
            name: "alice".to_owned(),
        });
        let mut text = String::new();
        encode(&mut text, &registry).expect("metrics encode");
        assert!(
            text.contains("jarvis_operator_reconciles_total 1"),
            "{text}"
        );
        assert!(
            text.contains(r#"jarvis_operator_reconcile_failures_total{error="invalid_spec"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"jarvis_operator_reconcile_failures_total{error="pod_terminating"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("jarvis_operator_reconcile_duration_seconds_count 1"),
            "{text}"
        );
    }
}
