//! How every command opens its store.

use std::sync::Arc;

use atomic_store::AtomicStore;

/// Open the store at `url`; in a test build with
/// `ATOMIC_STORE_CLI_TEST_BREAK` set, a deliberately broken one.
pub fn open(url: &str) -> atomic_store::Result<Arc<dyn AtomicStore>> {
    let store = atomic_store::open(url)?;
    #[cfg(feature = "fault-injection")]
    let store = crate::fault::wrap(store)?;
    Ok(store)
}
