//! Cancellation inside long Rust loops. Postgres only notices a cancel
//! request (`pg_cancel_backend`, `statement_timeout`, a client disconnect)
//! where the running code calls CHECK_FOR_INTERRUPTS; a Rust loop over user
//! input that never does runs to its end whatever the caller asked. Every
//! loop whose length the caller chooses calls [`check`] once per element.

/// CHECK_FOR_INTERRUPTS: raises the pending cancel (57014) or termination,
/// or returns at once (one load of a flag). Plain `cargo test` binaries run
/// the pure graph code outside a backend, where there is nothing to check.
#[inline]
pub fn check() {
    #[cfg(not(test))]
    pgrx::check_for_interrupts!();
}
