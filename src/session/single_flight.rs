//! In-process single-flight: concurrent callers with the same key share one execution.
//!
//! Used for refreshes keyed by family and presented secret, so that N requests of one tab
//! group rotate once and all receive the same successor. A caller that arrives after the
//! flight has landed starts a new one; for rotations the store's grace window then hands it
//! the same successor.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
};

use tokio::sync::OnceCell;

type Flight<T> = Arc<OnceCell<T>>;

/// Shares one in-flight computation per key.
#[derive(Debug)]
pub struct SingleFlight<T> {
    flights: Mutex<HashMap<String, Flight<T>>>,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        Self {
            flights: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> SingleFlight<T> {
    /// Runs `work` unless a flight for `key` is under way, in which case waits for its result.
    ///
    /// If the caller running `work` is cancelled, a waiting caller runs its own `work`.
    pub async fn run<F, Fut>(&self, key: &str, work: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(flights.entry(key.to_owned()).or_default())
        };
        let result = flight.get_or_init(work).await.clone();
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            flights.remove(key);
        }
        result
    }

    /// Flights under way (tests, metrics).
    pub fn in_flight(&self) -> usize {
        self.flights.lock().map_or(0, |f| f.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_execution() {
        // current-thread runtime: the first task starts the flight and yields, so every other
        // task joins it before it lands.
        let sf = Arc::new(SingleFlight::<usize>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (sf, runs) = (sf.clone(), runs.clone());
                tokio::spawn(async move {
                    sf.run("k", || async move {
                        for _ in 0..20 {
                            tokio::task::yield_now().await;
                        }
                        runs.fetch_add(1, Ordering::SeqCst) + 100
                    })
                    .await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 100);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(sf.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_later_caller_starts_a_new_flight() {
        let sf = SingleFlight::<u32>::default();
        assert_eq!(sf.run("k", || async { 1 }).await, 1);
        assert_eq!(sf.run("k", || async { 2 }).await, 2);
    }
}
