//! Fault injection for the tests: a panic inside an entry point on demand, so that the panic
//! boundary and the poisoning of handles can be tested. Compiled only into `cfg(test)` builds
//! and with the `fault-injection` feature (tests/c/run.sh builds a separate library with it
//! for tests/c/test_poison.c); never into a library that is shipped or installed.

use std::cell::Cell;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

/// Called inside the entry points that hold a handle (a whole step, a range of a split step):
/// panics once when armed on this thread.
pub(crate) fn panic_if_armed() {
    if ARMED.with(|a| a.replace(false)) {
        panic!("injected by a test (fault injection)");
    }
}

/// Arms [`panic_if_armed`] for the next call on this thread that reaches it.
pub(crate) fn arm() {
    ARMED.with(|a| a.set(true));
}

/// Test builds only (feature `fault-injection`): the next step on the calling thread panics
/// inside the library. Not in `flatopt.h`; declare it in the test.
#[cfg(feature = "fault-injection")]
#[no_mangle]
pub extern "C" fn flatopt_test_panic_next_step() {
    arm();
}
