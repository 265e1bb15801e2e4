//! Run a closure with every signal blocked in the calling thread.
//!
//! BPF_PROG_TEST_RUN with a repeat count stops with EINTR as soon as a
//! signal is pending for the calling thread (the kernel's
//! `bpf_test_timer_continue`), after an unknown number of runs — seen
//! under load in the suite, with other tests' child processes coming and
//! going. A test that counts what the runs did cannot just retry. With
//! the signals blocked here, a process-directed signal goes to another
//! thread of the test process, and the run completes.
pub fn blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigset operations on a local set; pthread_sigmask only
    // changes this thread's mask, restored below.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let v = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        v
    }
}
