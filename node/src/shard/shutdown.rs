//! A shard's stop signal: set once by the shard's ticker when the node stops, awaited by its
//! accept loops and connections.

use std::cell::Cell;

use event_listener::Event;

/// A shard's stop signal, for its accept loop and connections.
#[derive(Default)]
pub struct Shutdown {
    stopping: Cell<bool>,
    event: Event,
}

impl Shutdown {
    pub fn trigger(&self) {
        self.stopping.set(true);
        self.event.notify(usize::MAX);
    }

    pub fn is_triggered(&self) -> bool {
        self.stopping.get()
    }

    /// Resolves once [`Shutdown::trigger`] has been called.
    pub async fn wait(&self) {
        loop {
            if self.stopping.get() {
                return;
            }
            let listener = self.event.listen();
            if self.stopping.get() {
                return;
            }
            listener.await;
        }
    }
}
