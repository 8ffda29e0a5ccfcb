//! Keeping watch stores small: what controllers never read is dropped from an object's
//! metadata before the object enters a store.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};

/// kubectl's client-side apply annotation: a copy of the whole object as last applied.
pub const ANNOTATION_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops the managed-fields entries `keep` rejects and kubectl's last-applied annotation,
/// which together can outweigh the rest of an object. Only for objects that are never written
/// back whole (stores feed reads and targeted patches), so nothing is lost on the server.
pub fn slim_metadata(meta: &mut ObjectMeta, keep: impl Fn(&ManagedFieldsEntry) -> bool) {
    if let Some(f) = meta.managed_fields.as_mut() {
        f.retain(keep);
        if f.is_empty() {
            meta.managed_fields = None;
        }
    }
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(ANNOTATION_LAST_APPLIED);
    }
}

/// [`slim_metadata`] keeping no managed-fields entry.
pub fn slim_all(meta: &mut ObjectMeta) {
    slim_metadata(meta, |_| false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_what_keep_rejects_and_the_last_applied_copy() {
        let entry = |m: &str| ManagedFieldsEntry {
            manager: Some(m.into()),
            ..Default::default()
        };
        let mut meta = ObjectMeta {
            managed_fields: Some(vec![entry("a"), entry("b")]),
            annotations: Some(
                [
                    (ANNOTATION_LAST_APPLIED.to_string(), "{}".to_string()),
                    ("k".to_string(), "v".to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        };
        let mut all = meta.clone();
        slim_metadata(&mut meta, |e| e.manager.as_deref() == Some("b"));
        assert_eq!(meta.managed_fields, Some(vec![entry("b")]));
        assert_eq!(meta.annotations, Some([("k".to_string(), "v".to_string())].into()));
        slim_all(&mut all);
        assert_eq!(all.managed_fields, None, "an empty list is no list");
    }
}
