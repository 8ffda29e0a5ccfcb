//! Kubernetes Events: one per decision or transition, on the control plane object (and,
//! where it helps, naming the Machine). Publishing failures are logged, never fatal.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
use mk8s_api::MicroK8sControlPlane;
use tracing::{info, warn};

/// Publishes Events for control planes.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    /// Events published through `recorder`.
    pub fn new(recorder: Recorder) -> Self {
        Events { recorder }
    }

    async fn publish(&self, mcp: &MicroK8sControlPlane, type_: EventType, reason: &str, note: String, action: &str) {
        let reference: ObjectReference = mcp.object_ref(&());
        let name = mcp.metadata.name.as_deref().unwrap_or_default();
        match type_ {
            EventType::Normal => info!(control_plane = name, reason, "{note}"),
            EventType::Warning => warn!(control_plane = name, reason, "{note}"),
        }
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note.chars().take(1000).collect()),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &reference).await {
            warn!(error = %e, reason, "publishing an Event failed");
        }
    }

    /// A normal Event.
    pub async fn normal(&self, mcp: &MicroK8sControlPlane, reason: &str, note: impl Into<String>) {
        self.publish(mcp, EventType::Normal, reason, note.into(), reason).await;
    }

    /// A warning Event.
    pub async fn warning(&self, mcp: &MicroK8sControlPlane, reason: &str, note: impl Into<String>) {
        self.publish(mcp, EventType::Warning, reason, note.into(), reason).await;
    }
}
