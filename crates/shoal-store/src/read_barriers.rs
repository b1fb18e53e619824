//! Linearizable reads of one range share read barriers: every read that arrives while a
//! barrier is being confirmed joins the next one, so a range under a read load confirms its
//! leadership (a ReadIndex heartbeat round, or a lease check) once per batch of reads
//! through the driver instead of once per read.
//!
//! A batch's barrier is asked for only after every read in it arrived, so its read index
//! covers every write acknowledged before any of them began: each read stays linearizable.

use shoal_core::{Error, RangeId};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// The reads of one range waiting for a barrier.
#[derive(Default)]
struct Batch {
    /// Reads that arrived since the running barrier was asked for.
    waiting: Vec<oneshot::Sender<Result<(), Error>>>,
    /// A task is confirming barriers for this range.
    running: bool,
}

/// Read barriers, batched per range.
#[derive(Clone, Default)]
pub(crate) struct ReadBarriers {
    batches: Arc<Mutex<HashMap<RangeId, Batch>>>,
}

impl ReadBarriers {
    /// Waits until a read of `range` may be served here, within `timeout`. `barrier` asks
    /// for one barrier (the driver's read index); it runs once per batch, on a task that
    /// lives while reads of the range keep arriving.
    pub(crate) async fn wait<F, Fut>(
        &self,
        range: RangeId,
        timeout: Duration,
        barrier: F,
    ) -> Result<(), Error>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), Error>> + Send,
    {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
            let batch = batches.entry(range).or_default();
            batch.waiting.push(tx);
            !std::mem::replace(&mut batch.running, true)
        };
        if start {
            let batches = self.batches.clone();
            tokio::spawn(async move {
                loop {
                    let waiting = {
                        let mut all = batches.lock().unwrap_or_else(|p| p.into_inner());
                        let Some(batch) = all.get_mut(&range) else {
                            return;
                        };
                        if batch.waiting.is_empty() {
                            all.remove(&range);
                            return;
                        }
                        std::mem::take(&mut batch.waiting)
                    };
                    let result = barrier().await;
                    for read in waiting {
                        let _ = read.send(result.clone());
                    }
                }
            });
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::new(
                shoal_core::ErrorCode::Unavailable,
                "the read barrier was abandoned",
            )),
            Err(_) => Err(Error::new(
                shoal_core::ErrorCode::Timeout,
                "no read barrier in time",
            )),
        }
    }
}
