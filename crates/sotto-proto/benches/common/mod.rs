//! Timing shared by the benchmarks: criterion's `iter_custom` over the
//! benchmark thread's CPU time, which other processes on a shared machine
//! inflate much less than wall-clock time (`SOTTO_BENCH_WALL=1` switches to
//! wall-clock time).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Bencher;

/// The calling thread's CPU time, or wall-clock time when asked or when not
/// on Linux.
pub fn now() -> Duration {
    #[cfg(target_os = "linux")]
    if std::env::var_os("SOTTO_BENCH_WALL").is_none() {
        #[repr(C)]
        struct Timespec {
            tv_sec: i64,
            tv_nsec: i64,
        }
        extern "C" {
            fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
        }
        const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
        let mut ts = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec to a valid pointer.
        let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0);
        return Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
    }
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// `Bencher::iter`, timed with [`now`].
pub fn iter<O, F: FnMut() -> O>(b: &mut Bencher<'_>, mut f: F) {
    b.iter_custom(|iters| {
        let start = now();
        for _ in 0..iters {
            black_box(f());
        }
        now() - start
    });
}
