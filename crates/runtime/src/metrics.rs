//! Prometheus metrics shared by the managers (OpenMetrics text on `/metrics`).

use std::sync::RwLock;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of reconcile counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// Controller name.
    pub controller: String,
    /// `success`, `error` or `requeue`.
    pub result: String,
}

/// Labels of reconcile errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Controller name.
    pub controller: String,
    /// A short, bounded category of the error.
    pub reason: String,
}

/// Labels of reconcile causes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    /// Controller name.
    pub controller: String,
    /// What woke the reconcile: a watch (`machines`, `secrets`, …) or the timer the previous
    /// reconcile asked for (`timer_<reason>`); see [`crate::wakes`].
    pub cause: String,
}

/// Labels naming a controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// Controller name.
    pub controller: String,
}

/// Labels of wait gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// Controller name.
    pub controller: String,
    /// A bounded state name (e.g. a condition reason).
    pub state: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The metrics registry and the metrics every controller reports.
pub struct Metrics {
    registry: RwLock<Registry>,
    reconciles: Family<ReconcileLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    causes: Family<CauseLabels, Counter>,
    durations: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    states: Family<StateLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with the shared metrics, under the `mk8s` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mk8s");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let causes = Family::<CauseLabels, Counter>::default();
        let durations =
            Family::<ControllerLabels, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram);
        let states = Family::<StateLabels, Gauge>::default();
        registry.register("reconcile", "Reconciles by controller and result", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconcile errors by controller and reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_causes",
            "Reconciles by controller and what woke them (the first trigger since the previous reconcile)",
            causes.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciles",
            durations.clone(),
        );
        registry.register(
            "objects_by_state",
            "Objects per controller in each state (e.g. the reason of their main condition)",
            states.clone(),
        );
        Metrics {
            registry: RwLock::new(registry),
            reconciles,
            errors,
            causes,
            durations,
            states,
        }
    }

    /// Registers a controller-specific metric.
    pub fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        if let Ok(mut r) = self.registry.write() {
            r.register(name, help, metric);
        }
    }

    /// Starts timing one reconcile; call [`ReconcileTimer::finish`] with the result.
    pub fn start(&self, controller: &str) -> ReconcileTimer<'_> {
        ReconcileTimer {
            metrics: self,
            controller: controller.to_string(),
            start: Instant::now(),
        }
    }

    /// Counts a reconcile error by reason.
    pub fn error(&self, controller: &str, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller: controller.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a reconcile by what woke it.
    pub fn cause(&self, controller: &str, cause: &str) {
        self.causes
            .get_or_create(&CauseLabels {
                controller: controller.to_string(),
                cause: cause.to_string(),
            })
            .inc();
    }

    /// Sets the number of objects of a controller in a state.
    pub fn set_state_count(&self, controller: &str, state: &str, count: i64) {
        self.states
            .get_or_create(&StateLabels {
                controller: controller.to_string(),
                state: state.to_string(),
            })
            .set(count);
    }

    /// Encodes all metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.read() {
            // Writing into a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }
}

/// Times one reconcile.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    controller: String,
    start: Instant,
}

impl ReconcileTimer<'_> {
    /// Records the duration and the result (`success`, `error`, `requeue`).
    pub fn finish(self, result: &str) {
        self.metrics
            .durations
            .get_or_create(&ControllerLabels {
                controller: self.controller.clone(),
            })
            .observe(self.start.elapsed().as_secs_f64());
        self.metrics
            .reconciles
            .get_or_create(&ReconcileLabels {
                controller: self.controller,
                result: result.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_and_histograms() {
        let m = Metrics::new();
        m.start("bootstrap").finish("success");
        m.error("bootstrap", "api");
        m.cause("bootstrap", "machines");
        m.set_state_count("bootstrap", "WaitingForClusterInfrastructure", 3);
        let text = m.encode();
        assert!(
            text.contains("mk8s_reconcile_total{controller=\"bootstrap\",result=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mk8s_reconcile_errors_total{controller=\"bootstrap\",reason=\"api\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mk8s_reconcile_causes_total{controller=\"bootstrap\",cause=\"machines\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mk8s_reconcile_duration_seconds_count{controller=\"bootstrap\"} 1"),
            "{text}"
        );
        assert!(text.contains("state=\"WaitingForClusterInfrastructure\"} 3"), "{text}");
    }
}
