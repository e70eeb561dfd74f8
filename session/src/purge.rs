//! The background task that deletes expired sessions.

use std::{sync::Weak, time::Duration};

use tokio::sync::oneshot;

use crate::{data::SessionData, layer::LayerShared, store::SessionStore};

/// Every `interval`, purges expired sessions until `stop` fires or the
/// layer is gone. A failed round is logged and the next one tries again: a
/// database that is down now may be back by then.
pub(crate) async fn purge_loop<T: SessionData, S: SessionStore<T>>(
    shared: Weak<LayerShared<T, S>>,
    interval: Duration,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            // Sent by `stop_purge`, or the sender dropped with the layer.
            _ = &mut stop => return,
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match shared.purge_expired().await {
            Ok(purged) => tracing::debug!(
                session = T::SCHEMA.struct_name,
                purged,
                "purged expired sessions"
            ),
            Err(error) => tracing::warn!(
                session = T::SCHEMA.struct_name,
                table = T::SCHEMA.table,
                %error,
                "purging expired sessions failed; retrying next interval"
            ),
        }
    }
}
