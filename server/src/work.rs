//! The document work pool: dedicated threads for the CPU-heavy work on documents (loading a
//! stored document, applying or answering with a large update, rebuilding after a refused one,
//! merging for compaction), so that it never runs on the async runtime's threads.
//!
//! Two properties matter, and tokio's blocking pool has neither:
//! - **Bounded.** One thread per core the process may run on: a hundred documents loading at
//!   once queue here instead of starting a hundred threads.
//! - **Below the connections.** The threads run at a lower scheduling priority (nice
//!   [`NICE`]) than the runtime's. A long yrs job then yields the core at once to the thread
//!   that relays a small edit or answers a ping, even when the server has a single core
//!   (docs/BENCHMARKS.md, S11). The heavy job itself loses little: the runtime's work is
//!   short.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread;

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// How much nicer than the rest of the server the work threads are (Linux: per thread; capped
/// at 19).
pub const NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Debug)]
struct Pool {
    jobs: mpsc::Sender<Job>,
}

static POOL: OnceLock<Pool> = OnceLock::new();

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let threads = thread::available_parallelism().map_or(1, |n| n.get());
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = queue.clone();
            thread::Builder::new()
                .name(format!("quire-work-{n}"))
                .spawn(move || worker(&queue))
                .expect("starting a document work thread");
        }
        tracing::debug!(threads, nice = NICE, "document work pool started");
        Pool { jobs }
    })
}

fn worker(queue: &Mutex<mpsc::Receiver<Job>>) {
    // On Linux the nice value belongs to the thread that sets it (pid 0: this thread).
    let nicer = rustix::process::getpriority_process(None)
        .and_then(|now| rustix::process::setpriority_process(None, (now + NICE).min(19)));
    if let Err(err) = nicer {
        tracing::debug!(error = %err, "document work thread keeps the default priority");
    }
    loop {
        let job = queue.lock().recv();
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Runs `work` on the pool and waits for its result; a panic in `work` resumes here.
pub async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = done.send(catch_unwind(AssertUnwindSafe(work)));
    });
    pool()
        .jobs
        .send(job)
        .expect("the document work threads never stop");
    match result.await.expect("a work job always answers") {
        Ok(value) => value,
        Err(panic) => resume_unwind(panic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_off_the_runtime_at_a_lower_priority_and_passes_panics_on() {
        let (name, nice) = run(|| {
            let name = thread::current().name().map(str::to_owned);
            (name, rustix::process::getpriority_process(None).unwrap())
        })
        .await;
        assert!(name.unwrap().starts_with("quire-work-"));
        let ours = rustix::process::getpriority_process(None).unwrap();
        assert_eq!(
            nice,
            (ours + NICE).min(19),
            "work thread nice {nice}, runtime {ours}"
        );
        let panicked = tokio::spawn(run(|| panic!("boom"))).await;
        assert!(panicked.is_err(), "the panic reaches the caller");
        assert_eq!(run(|| 2 + 2).await, 4, "the pool survives a panicking job");
    }
}
